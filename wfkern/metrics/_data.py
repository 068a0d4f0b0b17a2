"""Dataset helpers shared by the metrics: per-class indices, batches, batched inference (labels are read with
``wfkern.data.dataset_targets``)."""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from wfkern.data import iter_batches

__all__ = ["class_indices", "predict_logits", "index_batches"]


def class_indices(labels: Tensor, c: int, *, exclude: bool = False) -> Tensor:
    """Indices (int64) of samples whose label is ``c`` (or is not ``c`` when ``exclude``)."""
    mask = labels != c if exclude else labels == c
    return torch.nonzero(mask, as_tuple=False).reshape(-1)


def index_batches(dataset: Dataset, indices: Optional[Sequence[int] | Tensor], batch_size: int, *,
                  shuffle: bool = False, generator: Optional[torch.Generator] = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` batches of ``dataset[indices]`` (all of it when None), in order or shuffled.

    In-memory wfkern datasets (``get_batch``) are fetched one indexing op per batch; others go through a
    single-process DataLoader.
    """
    idx = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if shuffle:
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
    if idx.numel() == 0:
        return
    for x, y in iter_batches(dataset, idx.split(batch_size)):
        yield x, torch.as_tensor(y)


@torch.no_grad()
def predict_logits(fn: Callable[[Tensor], Tensor], dataset: Dataset, indices: Optional[Tensor], *,
                   batch_size: int = 256, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Run ``fn`` over ``dataset[indices]`` in batches.

    Args:
        fn: maps an input batch (B, ...) on ``device`` to logits (B, Nc).
        dataset: yields ``(x, y)``.
        indices: (N,) int64 sample indices, or None for the whole dataset.
        batch_size: inference batch size.
        device: where the inputs are moved.
    Returns:
        ``(logits, labels)``: (N, Nc) float32 and (N,) int64, both on the CPU, in ``indices`` order.
    """
    if indices is not None and len(indices) == 0:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    outs, labels = [], []
    for x, y in index_batches(dataset, indices, batch_size):
        outs.append(fn(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y).long().reshape(-1))
    return torch.cat(outs), torch.cat(labels)
