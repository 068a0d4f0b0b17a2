"""Model registry: ``create_model(name, num_classes, in_chans, image_size)``; random init, no downloads."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from wfkern.models.cifar_resnet import CifarResNet18
from wfkern.models.cifar_vgg import CifarVGG16
from wfkern.models.external import create_timm, create_torchvision
from wfkern.models.small_cnn import SmallCNN, SmallVGG

__all__ = ["create_model", "list_models", "register_model", "model_family", "DEFAULT_MODEL"]

DEFAULT_MODEL = "small_cnn"

Builder = Callable[..., nn.Module]  # (num_classes, in_chans, image_size, **kwargs) -> nn.Module
_REGISTRY: dict[str, Builder] = {
    "small_cnn": lambda nc, c, s, **kw: SmallCNN(nc, c, **kw),
    "small_vgg": lambda nc, c, s, **kw: SmallVGG(nc, c, **kw),
    "resnet18": lambda nc, c, s, **kw: CifarResNet18(nc, c, **kw),
    "vgg16": lambda nc, c, s, **kw: CifarVGG16(nc, c, s, **kw),
    "vit_t": lambda nc, c, s, **kw: create_timm("vit_tiny_patch16_224", nc, c, s, **kw),
    "vit_s": lambda nc, c, s, **kw: create_timm("vit_small_patch16_224", nc, c, s, **kw),
}
_PREFIXES: dict[str, Builder] = {"timm": create_timm, "torchvision": create_torchvision, "tv": create_torchvision}


def list_models() -> list[str]:
    """Registered names, sorted; any ``timm:<name>`` or ``torchvision:<name>`` also works."""
    return sorted(_REGISTRY)


def register_model(name: str, builder: Builder) -> None:
    """Add a builder ``(num_classes, in_chans, image_size, **kwargs) -> nn.Module``."""
    _REGISTRY[name] = builder


def model_family(name: str) -> str:
    """"vit" for vision transformers, "cnn" otherwise (selects the untraining defaults)."""
    base = name.split(":", 1)[-1].lower()
    return "vit" if base.startswith(("vit", "deit")) else "cnn"


def create_model(name: str = DEFAULT_MODEL, num_classes: int = 10, in_chans: int = 1, image_size: int = 8,
                 **kwargs) -> nn.Module:
    """Build a randomly initialised classifier (seed with ``torch.manual_seed`` first).

    Args:
        name: a registered name ("small_cnn", "small_vgg", "resnet18", "vgg16", "vit_t", "vit_s"),
            or "timm:<name>" / "torchvision:<name>".
        num_classes: Nc.  in_chans: input channels C.  image_size: input side S.
        kwargs: architecture options (e.g. ``widths`` for small_cnn).
    Returns:
        nn.Module mapping (B, C, S, S) to (B, Nc) logits.
    Raises:
        ValueError: unknown name or bad sizes.
    """
    if num_classes < 1 or in_chans < 1 or image_size < 1:
        raise ValueError("wfkern.create_model: num_classes, in_chans and image_size must be >= 1, "
                         f"got {num_classes}, {in_chans}, {image_size}")
    prefix, _, rest = name.partition(":")
    if rest and prefix in _PREFIXES:
        return _PREFIXES[prefix](rest, num_classes, in_chans, image_size, **kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"wfkern.create_model: name must be one of {list_models()} or timm:<name> / "
                         f"torchvision:<name>, got {name!r}")
    return _REGISTRY[name](num_classes, in_chans, image_size, **kwargs)
