"""MNIST, Fashion-MNIST and CIFAR-10 from a local root (torchvision layout or raw idx files)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wfkern.data.base import DatasetInfo, TensorImageDataset
from wfkern.data.splits import stratified_split

__all__ = ["load_torchvision_split", "read_idx", "DEBIAN_FASHION_ROOT", "TV_SPECS", "VAL_FRACTION"]

DEBIAN_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
VAL_FRACTION = 0.1  # carved, per class, from the official training set with the split seed

_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
_CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# name -> (torchvision class, folder under root, channels, side, mean, std, class names, expected files)
TV_SPECS = {
    "mnist": ("MNIST", "MNIST/raw", 1, 28, (0.1307,), (0.3081,), tuple(str(i) for i in range(10)), _IDX_FILES),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", 1, 28, (0.2860,), (0.3530,), _FASHION_NAMES, _IDX_FILES),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                _CIFAR_NAMES, tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)),
}


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Args:
        path: file path; ``.gz`` files are decompressed on the fly.
    Returns:
        uint8 tensor: (N,) for label files, (N, H, W) for image files.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"wfkern.read_idx: {path} must be an unsigned-byte IDX file, got magic {magic:#x}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return torch.from_numpy(arr.copy())


def _find_idx(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _load_idx_folder(folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    paths = [_find_idx(folder, s) for s in _IDX_FILES]
    if any(p is None for p in paths):
        return None
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return xtr.unsqueeze(1), ytr.long(), xte.unsqueeze(1), yte.long()


def _load_cifar(root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from torchvision.datasets import CIFAR10
    out = []
    for train in (True, False):
        ds = CIFAR10(str(root), train=train, download=download)
        out += [torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets).long()]
    return out[0], out[1], out[2], out[3]


def _load_raw(name: str, root: str | None, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    cls_name, sub, *_, files = TV_SPECS[name]
    if root is None and name == "fashion_mnist":
        root = DEBIAN_FASHION_ROOT
    if root is None:
        raise ValueError(f"wfkern.get_dataset: root must be a folder for '{name}', got None; "
                         "pass --data-root DIR (add --download to fetch it when online)")
    base = Path(os.path.expanduser(root))
    if download:
        import torchvision.datasets as tvd
        for train in (True, False):
            getattr(tvd, cls_name)(str(base), train=train, download=True)
    if name == "cifar10":
        if all((base / sub / f).is_file() for f in files):
            return _load_cifar(base, download=False)
    else:
        for folder in (base / sub, base):  # torchvision layout, or the raw files directly (Debian)
            loaded = _load_idx_folder(folder)
            if loaded is not None:
                return loaded
    expected = ", ".join(files)
    raise FileNotFoundError(f"wfkern.get_dataset: root must hold the {name} files, got none under {base}; "
                            f"expected {base / sub}/{{{expected}}} (idx files may be .gz); "
                            "pass --download to fetch them when online")


def load_torchvision_split(name: str, split: str, seed: int, root: str | None = None,
                           download: bool = False, image_size: int | None = None,
                           mean: tuple[float, ...] | None = None,
                           std: tuple[float, ...] | None = None) -> TensorImageDataset:
    """Load one split of MNIST, Fashion-MNIST or CIFAR-10 into memory.

    The official test set is ``test``; ``val`` is 10% of the official training set, per class,
    chosen with ``seed``; ``train`` is the rest.

    Args:
        name: "mnist", "fashion_mnist" or "cifar10".
        split: "train", "val" or "test".
        seed: split seed.
        root: folder in torchvision's layout (``<root>/MNIST/raw/...``, ``<root>/cifar-10-batches-py``)
            or holding the raw idx files directly; Fashion-MNIST defaults to Debian's folder.
        download: fetch through torchvision when missing (needs network).
        image_size: side of the returned images (default native: 28 or 32).
        mean, std: normalisation (default: the dataset's own).
    Returns:
        A TensorImageDataset with (N,) int64 labels.
    """
    _, _, chans, side, own_mean, own_std, names, _ = TV_SPECS[name]
    mean, std = mean or own_mean, std or own_std
    xtr, ytr, xte, yte = _load_raw(name, root, download)
    info = DatasetInfo(name, 10, chans, int(image_size or side), class_names=names)
    if split == "test":
        return TensorImageDataset(xte, yte, info, mean, std)
    val_idx, train_idx = stratified_split(ytr, (VAL_FRACTION, 1 - VAL_FRACTION), seed)
    idx = train_idx if split == "train" else val_idx
    return TensorImageDataset(xtr[idx], ytr[idx], info, mean, std)
