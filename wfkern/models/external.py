"""Any timm or torchvision classifier by name, randomly initialised (weights are never downloaded)."""

from __future__ import annotations

import re

import torch.nn as nn
from torch import Tensor

__all__ = ["create_timm", "create_torchvision", "ChannelAdapter", "FORBIDDEN_OPTIONS"]

# Options that make timm / torchvision read a file or fetch weights: never forwarded, whoever asks.
FORBIDDEN_OPTIONS = frozenset({"pretrained", "weights", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
                               "cache_dir", "pretrained_strict", "progress"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def _check(kind: str, name: str, kwargs: dict) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"wfkern.create_model: name must be {kind}:<architecture name> (no path or scheme), "
                         f"got {kind}:{name!r}")
    bad = sorted(FORBIDDEN_OPTIONS & set(kwargs))
    if bad:
        raise ValueError(f"wfkern.create_model: options must not load weights or files, got {bad} for '{kind}:{name}'")


class ChannelAdapter(nn.Module):
    """Repeat (or average) input channels to the count a fixed-stem model expects, then run it.

    Args:
        model: the wrapped classifier (``self.model``).
        in_chans: channels of the data.  model_chans: channels the model's stem takes.
    Shapes:
        x: (B, in_chans, H, W) -> the model's output.
    """

    def __init__(self, model: nn.Module, in_chans: int, model_chans: int = 3) -> None:
        super().__init__()
        self.model = model
        self.in_chans, self.model_chans = in_chans, model_chans

    def forward(self, x: Tensor) -> Tensor:
        if self.in_chans == 1:
            x = x.expand(-1, self.model_chans, -1, -1)
        else:
            x = x.mean(1, keepdim=True).expand(-1, self.model_chans, -1, -1)
        return self.model(x)


def create_timm(name: str, num_classes: int, in_chans: int, image_size: int, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, ...)``; ViTs get ``img_size`` (and a small patch below 64 px).

    Args:
        name: a timm model name (``timm.list_models()``).
        num_classes: Nc.  in_chans: C.  image_size: input side (passed as ``img_size`` to ViTs).
        kwargs: forwarded to timm (e.g. ``patch_size``).
    Returns:
        The randomly initialised model.
    Raises:
        ValueError: unknown name, a name that is a path or scheme, an option that loads weights or files.
    """
    _check("timm", name, kwargs)
    import timm

    if not timm.is_model(name):
        raise ValueError(f"wfkern.create_model: name must be a timm model, got 'timm:{name}'")
    if name.startswith(("vit_", "deit_")):
        kwargs.setdefault("img_size", image_size)
        if image_size <= 64:
            kwargs.setdefault("patch_size", 4)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def create_torchvision(name: str, num_classes: int, in_chans: int, image_size: int, **kwargs) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``; other channel counts adapted.

    Args:
        name: a torchvision classification model name (``torchvision.models.list_models()``).
        num_classes: Nc.  in_chans: C (3-channel stems get a ChannelAdapter otherwise).
        image_size: input side (``image_size`` for torchvision ViTs).
        kwargs: forwarded to the builder.
    Returns:
        The randomly initialised model.
    Raises:
        ValueError: unknown name, a name that is a path or scheme, an option that loads weights or files.
    """
    _check("torchvision", name, kwargs)
    import torchvision.models as tvm

    if name not in tvm.list_models():
        raise ValueError(f"wfkern.create_model: name must be a torchvision model, got 'torchvision:{name}'")
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", image_size)
    model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return model if in_chans == 3 else ChannelAdapter(model, in_chans, 3)
