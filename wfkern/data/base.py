"""In-memory image datasets and the batch iterator shared by training and untraining."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from wfkern.data.loader import current_loader_options, read_batches

__all__ = ["DatasetInfo", "TensorImageDataset", "iter_batches", "dataset_targets"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: registry name ("digits", "mnist", ...).
        num_classes: Nc.
        in_chans: image channels C.
        image_size: side of the (square) images the dataset yields.
        multi_label: True when targets are (N, Nc) multi-hot instead of (N,) class indices.
        class_names: one readable name per class.
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    multi_label: bool = False
    class_names: tuple[str, ...] = field(default=())


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor; normalised (and resized) per fetched batch.

    Args:
        images: (N, C, H, W) uint8 in [0, 255] or float in [0, 1].
        targets: (N,) int64 class indices, or (N, Nc) {0, 1} multi-hot for multi-label data.
        info: the dataset's DatasetInfo; ``info.image_size`` is the side of the returned images
            (bilinear resize when it differs from H).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided out after that.
    """

    def __init__(self, images: Tensor, targets: Tensor, info: DatasetInfo,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        if images.dim() != 4:
            raise ValueError(f"wfkern.TensorImageDataset: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if targets.shape[0] != images.shape[0]:
            raise ValueError("wfkern.TensorImageDataset: targets must have one row per image, "
                             f"got {targets.shape[0]} rows for {images.shape[0]} images")
        self.images = images
        self.targets = targets
        self.info = info
        c = images.shape[1]
        self._mean = torch.tensor(list(mean), dtype=torch.float32).view(1, c, 1, 1)
        self._std = torch.tensor(list(std), dtype=torch.float32).view(1, c, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.get_batch(torch.tensor([int(i)]))
        return x[0], y[0]

    def get_batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Fetch several samples at once.

        Args:
            idx: (B,) int64 indices.
        Returns:
            x: (B, C, S, S) float32 normalised images (S = info.image_size).
            y: (B,) int64 labels, or (B, Nc) float32 multi-hot targets.
        """
        x = self.images[idx]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        s = self.info.image_size
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = (x - self._mean) / self._std
        y = self.targets[idx]
        return x, (y.float() if self.info.multi_label else y.long())

    def subset(self, idx: Tensor) -> "TensorImageDataset":
        """A new dataset holding only rows ``idx`` (a view-free copy of those rows)."""
        return TensorImageDataset(self.images[idx], self.targets[idx], self.info,
                                  self._mean.flatten().tolist(), self._std.flatten().tolist())


def dataset_targets(dataset: Dataset) -> Tensor:
    """All targets of a dataset: (N,) int64 or (N, Nc) multi-hot, without loading images when possible."""
    t = getattr(dataset, "targets", None)
    if t is not None:
        return torch.as_tensor(t)
    if hasattr(dataset, "samples"):  # torchvision ImageFolder
        return torch.as_tensor([s[1] for s in dataset.samples])
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


def iter_batches(dataset: Dataset, index_batches: Iterable[Tensor],
                 num_workers: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (x, y) for each index batch, fast for in-memory data, through a DataLoader otherwise.

    How lazily decoded datasets are read (worker processes, pinned memory) follows the innermost
    ``wfkern.loader_options`` block; the batches are the same samples, in the same order, with the same
    values whatever the options.

    Args:
        dataset: a TensorImageDataset (fetched in one indexing op) or any map-style dataset.
        index_batches: iterable of (B,) int64 index tensors.
        num_workers: DataLoader workers for datasets that load lazily (ImageFolder); None: the current
            ``loader_options`` (0 outside any block).
    Yields:
        x: (B, C, H, W) float32 images.  y: (B,) int64 or (B, Nc) targets.
    """
    if hasattr(dataset, "get_batch"):
        pin = current_loader_options().pin_memory and torch.cuda.is_available()
        for idx in index_batches:
            x, y = dataset.get_batch(idx)
            yield (x.pin_memory(), y.pin_memory()) if pin else (x, y)
        return
    yield from read_batches(dataset, index_batches, num_workers)
