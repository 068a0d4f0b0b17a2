"""Dataset registry: ``get_dataset(name, root=None, split=..., seed=...)``."""

from __future__ import annotations

from typing import Callable

from torch.utils.data import Dataset

from wfkern.data.digits import load_digits_split
from wfkern.data.imagefolder import load_imagefolder_split
from wfkern.data.splits import SPLITS
from wfkern.data.torchvision_sets import load_torchvision_split

__all__ = ["get_dataset", "list_datasets", "register_dataset", "DEFAULT_DATASET"]

DEFAULT_DATASET = "digits"

# name -> loader(split, seed, root, download, image_size) -> Dataset with .info and .targets
Loader = Callable[[str, int, "str | None", bool, "int | None"], Dataset]
_REGISTRY: dict[str, Loader] = {
    "digits": lambda split, seed, root, download, size: load_digits_split(split, seed, size),
    "mnist": lambda split, seed, root, download, size: load_torchvision_split("mnist", split, seed, root, download, size),
    "fashion_mnist": lambda split, seed, root, download, size: load_torchvision_split(
        "fashion_mnist", split, seed, root, download, size),
    "cifar10": lambda split, seed, root, download, size: load_torchvision_split("cifar10", split, seed, root, download, size),
    "imagefolder": lambda split, seed, root, download, size: load_imagefolder_split(_need_root(root), split, seed, size),
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10",
            "image_folder": "imagefolder"}


def _need_root(root: str | None) -> str:
    if root is None:
        raise ValueError("wfkern.get_dataset: root must be a folder for 'imagefolder', got None; pass --data-root DIR")
    return root


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def register_dataset(name: str, loader: Loader) -> None:
    """Add a dataset: ``loader(split, seed, root, download, image_size)`` returns a Dataset with ``.info``."""
    _REGISTRY[name] = loader


def get_dataset(name: str = DEFAULT_DATASET, root: str | None = None, split: str = "train", seed: int = 0,
                download: bool = False, image_size: int | None = None) -> Dataset:
    """Load one split of a registered dataset.

    Args:
        name: one of ``list_datasets()`` ("digits" is embedded; the others read ``root``).
        root: data folder (ignored by "digits"; Fashion-MNIST defaults to Debian's
            /usr/share/datasets/fashion-mnist).
        split: "train", "val" or "test"; the same ``seed`` always gives the same disjoint splits.
        seed: split seed.
        download: allow torchvision to download missing files (off by default: never touches the network).
        image_size: side of the returned images (default: the dataset's native size).
    Returns:
        A map-style dataset yielding ((C, S, S) float32, label) with ``.info`` (DatasetInfo) and
        ``.targets`` ((N,) int64 or (N, Nc) multi-hot).
    Raises:
        ValueError: unknown name or split.  FileNotFoundError: the files are missing (names them).
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _REGISTRY:
        raise ValueError(f"wfkern.get_dataset: name must be one of {list_datasets()}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"wfkern.get_dataset: split must be one of {list(SPLITS)}, got {split!r}")
    if image_size is not None and int(image_size) < 1:
        raise ValueError(f"wfkern.get_dataset: image_size must be a positive int, got {image_size!r}")
    return _REGISTRY[key](split, int(seed), root, bool(download), image_size)
