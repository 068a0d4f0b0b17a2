"""In-memory image datasets and the batch iterator shared by training and untraining."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from wfkern.data.loader import current_loader_options, read_batches

__all__ = ["DatasetInfo", "TensorImageDataset", "iter_batches", "dataset_targets", "subset_of"]


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
        side = self.info.image_size
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = (x - self._mean) / self._std
        y = self.targets[idx]
        return x, (y.float() if self.info.multi_label else y.long())

    def subset(self, idx: Tensor) -> "TensorImageDataset":
        """A new dataset holding only rows ``idx`` (a view-free copy of those rows)."""
        return TensorImageDataset(self.images[idx], self.targets[idx], self.info,
                                  self._mean.flatten().tolist(), self._std.flatten().tolist())


def dataset_targets(dataset: Dataset, *, single_label: bool = False) -> Tensor:
    """Every target of a map-style dataset, in index order, read without loading images wherever possible.

    The one label reader of wfkern (training, untraining, baselines and metrics all use it). In order:

    - a ``targets`` (else ``labels``) attribute with one row per sample, when the dataset applies no
      ``target_transform``: wfkern's datasets, torchvision's (MNIST, CIFAR, ImageFolder; SVHN's ``labels``);
    - a plain ``Subset`` (nested ones too): its dataset's targets at its indices;
    - a plain ``ConcatDataset``: the targets of its parts, one after the other;
    - a plain ``TensorDataset``: its second tensor;
    - a ``samples`` list of (path, label) pairs (a torchvision ``DatasetFolder``);
    - anything else: ``dataset[i][1]`` for every sample (which loads every sample once).

    Args:
        dataset: yields ``(x, y)``; ``y`` a class index or an (Nc,) multi-hot vector.
        single_label: require (N,) class indices (an (N, 1) column is flattened) and return them as int64.
    Returns:
        (N,) class indices or (N, Nc) multi-hot targets, as stored (int64 when ``single_label``).
    Raises:
        ValueError: ``single_label`` and the targets are not one class index per sample.
    """
    targets = _stored_targets(dataset)
    if targets is None:
        targets = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))]) if len(dataset) else \
            torch.zeros(0, dtype=torch.long)
    if not single_label:
        return targets
    if targets.dim() == 2 and targets.shape[1] == 1:
        targets = targets.reshape(-1)
    if targets.dim() != 1:
        raise ValueError("wfkern.dataset_targets: dataset must have single-label (N,) targets, "
                         f"got shape {tuple(targets.shape)}")
    return targets.long()


def _is_plain(dataset: Dataset, cls: type) -> bool:
    """``dataset`` is a ``cls`` whose items are the ones ``cls`` itself yields (``__getitem__`` and
    ``__getitems__`` not overridden)."""
    return (isinstance(dataset, cls) and type(dataset).__getitem__ is cls.__getitem__
            and getattr(type(dataset), "__getitems__", None) is getattr(cls, "__getitems__", None))


def _stored_targets(dataset: Dataset) -> Tensor | None:
    """The targets a dataset holds without loading any sample; None when it holds none."""
    if getattr(dataset, "target_transform", None) is None:
        for attr in ("targets", "labels"):
            value = getattr(dataset, attr, None)
            if value is None or callable(value):
                continue
            targets = torch.as_tensor(value)
            if targets.dim() >= 1 and targets.shape[0] == len(dataset):
                return targets
    if _is_plain(dataset, Subset):
        inner = _stored_targets(dataset.dataset)
        if inner is None:
            return None
        idx = dataset.indices
        idx = idx.long() if isinstance(idx, Tensor) else torch.as_tensor(list(idx), dtype=torch.long)
        return inner[idx]
    if _is_plain(dataset, ConcatDataset):
        parts = [_stored_targets(d) for d in dataset.datasets]
        return torch.cat(parts) if parts and all(p is not None for p in parts) else None
    if _is_plain(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].detach()
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, (list, tuple)) and len(samples) == len(dataset) \
            and getattr(dataset, "target_transform", None) is None:
        return torch.as_tensor([s[1] for s in samples])
    return None


def subset_of(dataset: Dataset, indices: Tensor) -> Dataset:
    """``dataset[indices]``: an in-memory copy for wfkern datasets (``subset``), a ``Subset`` otherwise."""
    if hasattr(dataset, "subset"):
        return dataset.subset(indices)
    return Subset(dataset, indices.tolist())


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
