"""scikit-learn's handwritten digits: the embedded default (1797 real 8x8 images, no download)."""

from __future__ import annotations

import torch

from wfkern.data.base import DatasetInfo, TensorImageDataset
from wfkern.data.splits import stratified_split

__all__ = ["load_digits_split", "DIGITS_FRACTIONS"]

# train / val / test shares of the 1797 images, per class.
DIGITS_FRACTIONS = (0.6, 0.15, 0.25)
_MEAN, _STD = (0.3053,), (0.3760,)  # of pixel/16 over all 1797 images


def load_digits_split(split: str, seed: int, image_size: int | None = None,
                      mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> TensorImageDataset:
    """Load one split of the digits, split per class with ``seed`` (60 / 15 / 25 %).

    Args:
        split: "train", "val" or "test".
        seed: split seed.
        image_size: side of the returned images; default 8 (native). Larger sizes upsample bilinearly.
        mean, std: normalisation (default: the digits' own, 0.3053 / 0.3760).
    Returns:
        A TensorImageDataset of (1, S, S) images and (N,) int64 labels 0..9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise RuntimeError("wfkern.get_dataset: the digits need scikit-learn; pip install scikit-learn") from e
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    targets = torch.from_numpy(bunch.target).long()
    parts = dict(zip(("train", "val", "test"), stratified_split(targets, DIGITS_FRACTIONS, seed)))
    info = DatasetInfo("digits", 10, 1, int(image_size or 8), class_names=tuple(str(i) for i in range(10)))
    idx = parts[split]
    return TensorImageDataset(images[idx], targets[idx], info, mean or _MEAN, std or _STD)
