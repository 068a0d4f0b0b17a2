"""Model registry: ``create_model(name, num_classes, in_chans, image_size)``; random init, no downloads.

Every entry declares the keyword arguments it accepts (a ``Param`` each: type and bounds). Only those
reach a builder, so options read from a file (a checkpoint's metadata) can never name a path or an
unbounded size: ``check_model_args`` is the one gate, used by ``create_model`` and the checkpoint loader.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

from wfkern.models.cifar_resnet import CifarResNet18
from wfkern.models.cifar_vgg import CifarVGG16
from wfkern.models.external import create_timm, create_torchvision
from wfkern.models.small_cnn import SmallCNN, SmallVGG
from wfkern.models.weights import first_line

__all__ = ["create_model", "list_models", "register_model", "model_family", "model_params", "check_model_args",
           "json_model_kwargs", "Param", "ModelArgError", "DEFAULT_MODEL", "MAX_CLASSES", "MAX_CHANNELS", "MAX_IMAGE_SIZE"]

DEFAULT_MODEL = "small_cnn"

# Bounds of the sizes every model takes (a checkpoint outside them is refused before anything is built).
MAX_CLASSES = 100_000
MAX_CHANNELS = 64
MAX_IMAGE_SIZE = 4096

# An external (timm / torchvision) architecture name: no path, no scheme ("hf-hub:", "local-dir:"), no separator.
_EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class ModelArgError(ValueError):
    """A model name, size or keyword argument outside what the registry entry declares.

    Attributes:
        key: "name", "num_classes", "in_chans", "image_size", or the keyword argument's name.
        expectation: what the value must be ("be an integer >= 1 and <= 64", ...).
        got: the offending value.
        is_option: True when ``key`` is a keyword argument (``model_kwargs``), not a positional one.
        unknown: True when the keyword argument is not declared at all.
    """

    def __init__(self, key: str, expectation: str, got: Any, *, is_option: bool = False, unknown: bool = False):
        self.key, self.expectation, self.got = key, expectation, got
        self.is_option, self.unknown = is_option, unknown
        super().__init__(f"wfkern.create_model: {key} must {expectation}, got {got!r}")


@dataclass(frozen=True)
class Param:
    """One declared keyword argument of a model: its type and bounds.

    Args:
        kind: "int", "float", "bool" or "ints" (a list of integers).
        lo, hi: inclusive bounds of the value (of each element for "ints").
        length: (min, max) number of elements, for "ints".
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    length: tuple[int, int] = (0, 0)

    def expectation(self) -> str:
        if self.kind == "int":
            return f"be an integer >= {self.lo} and <= {self.hi}"
        if self.kind == "float":
            return f"be a finite number >= {self.lo} and <= {self.hi}"
        if self.kind == "bool":
            return "be true or false"
        lo, hi = self.length
        count = f"{lo}" if lo == hi else f"{lo} to {hi}"
        return f"be a list of {count} integers, each >= {self.lo} and <= {self.hi}"

    def normalise(self, value: Any) -> Any:
        """The value as the builder takes it; ValueError(expectation) when it does not fit."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
        elif self.kind == "int":
            if _is_int(value) and self.lo <= value <= self.hi:
                return int(value)
        elif self.kind == "float":
            if (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                    and self.lo <= value <= self.hi):
                return float(value)
        elif self.kind == "ints":
            if (isinstance(value, (list, tuple)) and self.length[0] <= len(value) <= self.length[1]
                    and all(_is_int(v) and self.lo <= v <= self.hi for v in value)):
                return tuple(int(v) for v in value)
        else:  # pragma: no cover - a registration mistake
            raise TypeError(f"wfkern.register_model: Param.kind must be int, float, bool or ints, got {self.kind!r}")
        raise ValueError(self.expectation())


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


Builder = Callable[..., nn.Module]  # (num_classes, in_chans, image_size, **kwargs) -> nn.Module


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    params: Mapping[str, Param] = field(default_factory=dict)


_WIDTH = (1, 4096)
_VIT = {"patch_size": Param("int", 1, 256), "depth": Param("int", 1, 64), "num_heads": Param("int", 1, 64),
        "embed_dim": Param("int", 1, 4096), "mlp_ratio": Param("float", 0.01, 16.0),
        "qkv_bias": Param("bool"), "drop_rate": Param("float", 0.0, 1.0), "drop_path_rate": Param("float", 0.0, 1.0)}
# Builders take (num_classes, in_chans, image_size, **options); the small CNNs and the CIFAR ResNet ignore the size.
_REGISTRY: dict[str, _Entry] = {
    "small_cnn": _Entry(lambda num_classes, in_chans, _size, **options: SmallCNN(num_classes, in_chans, **options),
                        {"widths": Param("ints", *_WIDTH, length=(1, 32)), "pool_after": Param("ints", 0, 31, (0, 32))}),
    "small_vgg": _Entry(lambda num_classes, in_chans, _size, **options: SmallVGG(num_classes, in_chans, **options),
                        {"widths": Param("ints", *_WIDTH, length=(2, 2)), "hidden": Param("int", 1, 65536)}),
    "resnet18": _Entry(lambda num_classes, in_chans, _size, **options: CifarResNet18(num_classes, in_chans, **options),
                       {"width": Param("int", 1, 512)}),
    "vgg16": _Entry(CifarVGG16),
    "vit_t": _Entry(functools.partial(create_timm, "vit_tiny_patch16_224"), _VIT),
    "vit_s": _Entry(functools.partial(create_timm, "vit_small_patch16_224"), _VIT),
}
# Any timm / torchvision architecture: the options common to them (a model that lacks one is a clear error).
_PREFIXES: dict[str, _Entry] = {
    "timm": _Entry(create_timm, _VIT),
    "torchvision": _Entry(create_torchvision, {"dropout": Param("float", 0.0, 1.0)}),
}
_PREFIXES["tv"] = _PREFIXES["torchvision"]


def list_models() -> list[str]:
    """Registered names, sorted; any ``timm:<name>`` or ``torchvision:<name>`` also works."""
    return sorted(_REGISTRY)


def register_model(name: str, builder: Builder, params: Mapping[str, Param] | None = None) -> None:
    """Add a builder ``(num_classes, in_chans, image_size, **kwargs) -> nn.Module``.

    Args:
        name: the registry name (no ":").
        builder: builds a randomly initialised model.
        params: the keyword arguments it accepts, ``{"width": Param("int", 1, 512)}``; None: none.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"wfkern.register_model: name must be a non-empty string without ':', got {name!r}")
    for key, p in (params or {}).items():
        if not isinstance(p, Param):
            raise TypeError(f"wfkern.register_model: params[{key!r}] must be a wfkern.models.registry.Param, got {p!r}")
    _REGISTRY[name] = _Entry(builder, dict(params or {}))


def model_family(name: str) -> str:
    """"vit" for vision transformers, "cnn" otherwise (selects the untraining defaults)."""
    base = name.split(":", 1)[-1].lower()
    return "vit" if base.startswith(("vit", "deit")) else "cnn"


def _entry(name: Any) -> tuple[_Entry, str | None]:
    """(registry entry, external name or None); ModelArgError("name") for anything else."""
    expectation = f"be one of {list_models()} or timm:<name> / torchvision:<name>"
    if not isinstance(name, str):
        raise ModelArgError("name", expectation, name)
    prefix, _, rest = name.partition(":")
    if rest and prefix in _PREFIXES:
        if not _EXTERNAL_NAME.fullmatch(rest):
            raise ModelArgError("name", f"be {prefix}:<architecture name> (letters, digits, '_', '.', '-'; no path)",
                                name)
        return _PREFIXES[prefix], rest
    if name not in _REGISTRY:
        raise ModelArgError("name", expectation, name)
    return _REGISTRY[name], None


def model_params(name: str) -> dict[str, Param]:
    """The keyword arguments model ``name`` accepts."""
    return dict(_entry(name)[0].params)


def check_model_args(name: str, num_classes: Any = 10, in_chans: Any = 1, image_size: Any = 8,
                     kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a model description without building anything; returns the normalised keyword arguments.

    Raises:
        ModelArgError (a ValueError): unknown name, a size out of bounds, an undeclared keyword
            argument or one of the wrong type / out of its bounds (``.key`` names it).
    """
    entry, _ = _entry(name)
    for key, value, hi in (("num_classes", num_classes, MAX_CLASSES), ("in_chans", in_chans, MAX_CHANNELS),
                           ("image_size", image_size, MAX_IMAGE_SIZE)):
        if not (_is_int(value) and 1 <= value <= hi):
            raise ModelArgError(key, f"be >= 1 and <= {hi} (an integer)", value)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ModelArgError("model_kwargs", "be a mapping of option names to values", kwargs)
    out = {}
    for key, value in kwargs.items():
        if key not in entry.params:
            names = ", ".join(sorted(entry.params)) or "none"
            raise ModelArgError(str(key), f"be an option of {name!r} ({names})", key, is_option=True, unknown=True)
        try:
            out[key] = entry.params[key].normalise(value)
        except ValueError as e:
            raise ModelArgError(key, str(e), value, is_option=True) from None
    return out


def json_model_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised architecture options (``check_model_args``'s) as JSON values, tuples as lists: the form a
    checkpoint records and ``create_model`` takes back."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in kwargs.items()}


def create_model(name: str = DEFAULT_MODEL, num_classes: int = 10, in_chans: int = 1, image_size: int = 8,
                 **kwargs) -> nn.Module:
    """Build a randomly initialised classifier (seed with ``torch.manual_seed`` first).

    Args:
        name: a registered name ("small_cnn", "small_vgg", "resnet18", "vgg16", "vit_t", "vit_s"),
            or "timm:<name>" / "torchvision:<name>".
        num_classes: Nc in [1, MAX_CLASSES].  in_chans: input channels C in [1, MAX_CHANNELS].
        image_size: input side S in [1, MAX_IMAGE_SIZE].
        kwargs: architecture options the entry declares (``model_params(name)``; e.g. ``widths`` for small_cnn).
    Returns:
        nn.Module mapping (B, C, S, S) to (B, Nc) logits.
    Raises:
        ValueError: unknown name, bad sizes, an undeclared or out-of-bounds option (ModelArgError), or
            options the architecture rejects.
    """
    options = check_model_args(name, num_classes, in_chans, image_size, kwargs)
    entry, external = _entry(name)
    args = (external,) if external is not None else ()
    try:
        return entry.builder(*args, int(num_classes), int(in_chans), int(image_size), **options)
    except ModelArgError:
        raise
    except ValueError as e:
        if str(e).startswith("wfkern"):
            raise
        raise ValueError(f"wfkern.create_model: options must fit model {name!r}, got {options} ({first_line(e)})") from e
    except (TypeError, AssertionError) as e:
        raise ValueError(f"wfkern.create_model: options must fit model {name!r}, got {options} ({first_line(e)})") from e
