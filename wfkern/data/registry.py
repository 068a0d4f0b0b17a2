"""Dataset registry: ``get_dataset(name, root=None, split=..., seed=...)``."""

from __future__ import annotations

from typing import Callable

from torch.utils.data import Dataset

from wfkern.data.digits import load_digits_split
from wfkern.data.imagefolder import load_imagefolder_split
from wfkern.data.preprocess import Preprocess, as_preprocess
from wfkern.data.splits import SPLITS
from wfkern.data.torchvision_sets import load_torchvision_split

__all__ = ["get_dataset", "list_datasets", "register_dataset", "dataset_shape", "canonical_dataset_name",
           "DEFAULT_DATASET"]

DEFAULT_DATASET = "digits"

# name -> loader(split, seed, root, download, image_size) -> Dataset with .info and .targets
Loader = Callable[[str, int, "str | None", bool, "int | None"], Dataset]
_REGISTRY: dict[str, Loader] = {}


def _tv(name: str):
    return lambda split, seed, root, download, size, pre: load_torchvision_split(
        name, split, seed, root, download, size, pre.mean, pre.std)


# The built-in datasets also take the model's preprocessing (a Preprocess; its unset fields: the dataset's own).
_BUILTIN = {
    "digits": lambda split, seed, root, download, size, pre: load_digits_split(split, seed, size, pre.mean, pre.std),
    "mnist": _tv("mnist"),
    "fashion_mnist": _tv("fashion_mnist"),
    "cifar10": _tv("cifar10"),
    "imagefolder": lambda split, seed, root, download, size, pre: load_imagefolder_split(
        _need_root(root), split, seed, size, pre),
}
# name -> (classes or None when the data decides, channels, native image side); known without reading any file.
_SHAPES = {"digits": (10, 1, 8), "mnist": (10, 1, 28), "fashion_mnist": (10, 1, 28), "cifar10": (10, 3, 32),
           "imagefolder": (None, 3, 224)}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10",
            "image_folder": "imagefolder"}


def _need_root(root: str | None) -> str:
    if root is None:
        raise ValueError("wfkern.get_dataset: root must be a folder for 'imagefolder', got None; pass --data-root DIR")
    return root


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def register_dataset(name: str, loader: Loader) -> None:
    """Add a dataset: ``loader(split, seed, root, download, image_size)`` returns a Dataset with ``.info``."""
    _REGISTRY[name] = loader


def canonical_dataset_name(name: str) -> str:
    """The registry key of ``name`` (aliases resolved; "imagefolder:<tree>", as ``info.name`` says, is "imagefolder").

    Raises:
        ValueError: a name no dataset answers to.
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _REGISTRY and key.startswith("imagefolder:"):
        key = "imagefolder"
    if key not in _REGISTRY and key not in _BUILTIN:
        raise ValueError(f"wfkern.get_dataset: name must be one of {list_datasets()}, got {name!r}")
    return key


def dataset_shape(name: str) -> tuple[int | None, int, int] | None:
    """(classes or None, channels, native image side) of a built-in dataset, known without its files; else None."""
    key = canonical_dataset_name(name)
    return None if key in _REGISTRY else _SHAPES[key]


def get_dataset(name: str = DEFAULT_DATASET, root: str | None = None, split: str = "train", seed: int = 0,
                download: bool = False, image_size: int | None = None,
                preprocess: Preprocess | dict | None = None) -> Dataset:
    """Load one split of a registered dataset.

    Args:
        name: one of ``list_datasets()`` ("digits" is embedded; the others read ``root``).
        root: data folder (ignored by "digits"; Fashion-MNIST defaults to Debian's
            /usr/share/datasets/fashion-mnist).
        split: "train", "val" or "test"; the same ``seed`` always gives the same disjoint splits.
        seed: split seed.
        download: allow torchvision to download missing files (off by default: never touches the network).
        image_size: side of the returned images (default: the dataset's native size).
        preprocess: the model's input preprocessing (a ``Preprocess`` or its dict: mean, std, crop_pct,
            interpolation); unset fields keep the dataset's own. crop_pct and interpolation apply to images
            decoded from files (ImageFolder); the in-memory datasets resize whole images bilinearly.
    Returns:
        A map-style dataset yielding ((C, S, S) float32, label) with ``.info`` (DatasetInfo) and
        ``.targets`` ((N,) int64 or (N, Nc) multi-hot).
    Raises:
        ValueError: unknown name or split, or a preprocessing that does not fit the dataset.
        FileNotFoundError: the files are missing (names them).
    """
    key = canonical_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"wfkern.get_dataset: split must be one of {list(SPLITS)}, got {split!r}")
    if image_size is not None and int(image_size) < 1:
        raise ValueError(f"wfkern.get_dataset: image_size must be a positive int, got {image_size!r}")
    if key in _REGISTRY:
        if not as_preprocess(preprocess).is_empty():
            raise ValueError(f"wfkern.get_dataset: preprocess must be empty for the registered dataset {key!r} "
                             f"(its loader takes no normalisation), got {as_preprocess(preprocess).to_dict()}")
        return _REGISTRY[key](split, int(seed), root, bool(download), image_size)
    pre = as_preprocess(preprocess, _SHAPES[key][1])
    return _BUILTIN[key](split, int(seed), root, bool(download), image_size, pre)
