"""What a model expects of its input images beyond size and channels: normalisation, crop, interpolation.

A model imported from timm / torchvision (``wfkern import``) may expect another normalisation than the
dataset's own (timm's augreg ViTs: mean = std = 0.5); its checkpoint records it and every command that
rebuilds the data from the checkpoint applies it. Empty fields mean "the dataset's own".
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Preprocess", "as_preprocess", "preprocess_problem", "INTERPOLATIONS", "PREPROCESS_KEYS"]

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PREPROCESS_KEYS = ("mean", "std", "crop_pct", "interpolation")
_LIMIT = 1000.0


@dataclass(frozen=True)
class Preprocess:
    """Input preprocessing; None everywhere = the dataset's own.

    Attributes:
        mean: per-channel mean subtracted from images scaled to [0, 1] (C values).
        std: per-channel standard deviation divided out after that (C positive values).
        crop_pct: images decoded from files (ImageFolder) are resized to ``floor(S / crop_pct)`` and
            centre-cropped to S (timm's convention; torchvision's ImageNet weights: 224 / 256 = 0.875).
        interpolation: resize filter of images decoded from files: "bilinear", "bicubic" or "nearest".
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None

    def to_dict(self) -> dict:
        """The fields that are set, JSON-ready (lists for tuples)."""
        out: dict[str, Any] = {}
        for key in PREPROCESS_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def is_empty(self) -> bool:
        return not self.to_dict()


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def preprocess_problem(values: Any, in_chans: int | None = None) -> tuple[str, str, Any] | None:
    """None when ``values`` (a mapping) is a valid preprocessing, else (key, expectation, offending value).

    Args:
        values: ``{"mean": [...], "std": [...], "crop_pct": 0.875, "interpolation": "bicubic"}``, any subset.
        in_chans: the image channels C, when known (mean / std must then hold C values).
    """
    if not isinstance(values, Mapping):
        return "preprocess", "be a mapping of preprocessing keys to values", values
    for key, value in values.items():
        if key not in PREPROCESS_KEYS:
            return str(key), f"be one of {', '.join(PREPROCESS_KEYS)}", key
        if value is None:
            continue
        if key in ("mean", "std"):
            count = f"{in_chans} " if in_chans else ""
            positive = key == "std"
            rule = (f"be a list of {count}finite numbers" +
                    (f" > 0 and <= {_LIMIT:g}" if positive else f" in [-{_LIMIT:g}, {_LIMIT:g}]") +
                    (" (one per channel)" if in_chans else ""))
            if not isinstance(value, (list, tuple)) or not value or len(value) > 64 \
                    or (in_chans and len(value) != in_chans) \
                    or not all(_real(v) and (0 < v <= _LIMIT if positive else -_LIMIT <= v <= _LIMIT) for v in value):
                return key, rule, value
        elif key == "crop_pct":
            if not (_real(value) and 0 < value <= 1):
                return key, "be a number in (0, 1]", value
        elif value not in INTERPOLATIONS:
            return key, f"be one of {', '.join(INTERPOLATIONS)}", value
    if values.get("mean") is not None and values.get("std") is not None \
            and len(values["mean"]) != len(values["std"]):
        return "std", f"have as many values as mean ({len(values['mean'])})", values["std"]
    return None


def as_preprocess(value: Preprocess | Mapping | None, in_chans: int | None = None,
                  where: str = "wfkern.get_dataset") -> Preprocess:
    """A checked Preprocess from a Preprocess, a mapping (a checkpoint's JSON) or None (all defaults).

    Raises:
        ValueError: ``<where>: preprocess.<key> must <expectation>, got <value>``.
    """
    if value is None:
        return Preprocess()
    values = value.to_dict() if isinstance(value, Preprocess) else value
    problem = preprocess_problem(values, in_chans)
    if problem is not None:
        key, expectation, got = problem
        name = "preprocess" if key == "preprocess" else f"preprocess.{key}"
        raise ValueError(f"{where}: {name} must {expectation}, got {got!r}")
    return Preprocess(
        mean=tuple(float(v) for v in values["mean"]) if values.get("mean") is not None else None,
        std=tuple(float(v) for v in values["std"]) if values.get("std") is not None else None,
        crop_pct=float(values["crop_pct"]) if values.get("crop_pct") is not None else None,
        interpolation=values.get("interpolation"))
