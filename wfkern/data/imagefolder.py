"""Any ImageFolder tree (ImageNet layout: <root>/<split>/<class>/<image>)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from wfkern.data.base import DatasetInfo
from wfkern.data.preprocess import Preprocess, as_preprocess
from wfkern.data.splits import stratified_split

__all__ = ["load_imagefolder_split", "image_transform", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _InfoSubset(Subset):
    """A Subset that keeps ``info`` and ``targets`` for the rows it holds."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor, info: DatasetInfo, targets: torch.Tensor):
        super().__init__(dataset, indices.tolist())
        self.info = info
        self.targets = targets


def _resolve(base: Path, split: str) -> tuple[Path, tuple[tuple[float, ...], int] | None]:
    """The folder a split reads, and (fractions, part) when the split is carved from it."""
    if not (base / "train").is_dir():  # one class tree: carve everything
        return base, ((0.7, 0.1, 0.2), ("train", "val", "test").index(split))
    held_val = (base / "val").is_dir() and (base / "test").is_dir()  # else val is carved from train
    if split == "train":
        return base / "train", (None if held_val else ((0.9, 0.1), 0))
    if split == "val":
        return (base / "val", None) if held_val else (base / "train", ((0.9, 0.1), 1))
    test = base / "test" if (base / "test").is_dir() else base / "val"
    if not test.is_dir():
        raise FileNotFoundError(f"wfkern.get_dataset: root must hold test/ or val/ beside train/, got neither under {base}")
    return test, None


def image_transform(side: int, preprocess: Preprocess | None = None):
    """Resize (to ``floor(side / crop_pct)``), centre-crop to ``side``, to tensor, normalise.

    Args:
        side: the output side S.
        preprocess: mean / std / crop_pct / interpolation; unset fields: ImageNet mean / std, crop 1, bilinear.
    Returns:
        A torchvision transform mapping a PIL image to a (3, S, S) float32 tensor.
    """
    import math

    from torchvision import transforms

    pre = preprocess or Preprocess()
    resize = side if pre.crop_pct is None else int(math.floor(side / pre.crop_pct))
    mode = getattr(transforms.InterpolationMode, (pre.interpolation or "bilinear").upper())
    return transforms.Compose([transforms.Resize(resize, interpolation=mode), transforms.CenterCrop(side),
                               transforms.ToTensor(),
                               transforms.Normalize(pre.mean or IMAGENET_MEAN, pre.std or IMAGENET_STD)])


def load_imagefolder_split(root: str, split: str, seed: int, image_size: int | None = None,
                           preprocess: Preprocess | None = None) -> Dataset:
    """Load one split of an ImageFolder tree, lazily (images are decoded when fetched).

    With ``<root>/train``: ``test`` reads ``<root>/test`` (else ``<root>/val``, the ImageNet habit);
    ``val`` reads ``<root>/val`` when a ``test`` folder also exists, else it is 10% of ``train``
    carved per class with ``seed``. Without ``<root>/train``, ``root`` itself is one class tree split
    per class 70 / 10 / 20 % with ``seed``.

    Args:
        root: the tree's root folder.
        split: "train", "val" or "test".
        seed: split seed (used only when carving).
        image_size: side of the returned images (resize + centre crop); default 224.
        preprocess: the model's normalisation, crop and resize filter (``image_transform``); default
            ImageNet mean / std, no crop margin, bilinear.
    Returns:
        A map-style dataset of ((3, S, S) float32, int64 label) with ``info`` and ``targets``.
    """
    from torchvision.datasets import ImageFolder

    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"wfkern.get_dataset: root must be an ImageFolder directory, got {str(base)!r}")
    side = int(image_size or 224)
    tf = image_transform(side, as_preprocess(preprocess, 3))
    tree, carve = _resolve(base, split)
    try:
        ds = ImageFolder(str(tree), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"wfkern.get_dataset: root must hold <class>/<image> folders, got {tree}: {e}") from e
    info = DatasetInfo(f"imagefolder:{base.name}", len(ds.classes), 3, side, class_names=tuple(ds.classes))
    targets = torch.tensor(ds.targets).long()
    idx = torch.arange(len(ds))
    if carve is not None:
        idx = stratified_split(targets, carve[0], seed)[carve[1]]
    return _InfoSubset(ds, idx, info, targets[idx])
