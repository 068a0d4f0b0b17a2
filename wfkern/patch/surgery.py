"""wfkern.patch: find a classifier's convs and attention qkv projections and wrap them."""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Tuple

from torch import nn

from wfkern.layers import ForgetContext, WFConv2d, WFLayer, WFLinear, WFMultiheadAttention
from wfkern.layers.attention import unsupported_reason
from wfkern.patch.model import WFModel

__all__ = ["patch", "set_submodule"]


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at dotted ``name`` under ``root``; returns the (possibly new) root."""
    if name == "":
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
    return root


def _target(name: str, module: nn.Module) -> Tuple[Optional[type], Optional[str]]:
    """(WF layer class to wrap ``module`` with, or None; skip reason worth reporting, or None)."""
    if isinstance(module, nn.Conv2d):
        return WFConv2d, None
    if isinstance(module, nn.Linear) and name.rpartition(".")[2] == "qkv":
        return WFLinear, None
    if isinstance(module, nn.MultiheadAttention):
        reason = unsupported_reason(module)
        return (None, reason) if reason else (WFMultiheadAttention, None)
    if isinstance(module, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
        return None, f"{type(module).__name__} is not wrapped (only Conv2d, qkv Linear, MultiheadAttention)"
    return None, None


def patch(
    model: nn.Module,
    num_classes: int,
    *,
    init: float = 3.0,
    inplace: bool = False,
    include: Optional[Callable[[str, nn.Module], bool]] = None,
) -> WFModel:
    """Wrap every ``nn.Conv2d`` and ViT attention qkv projection of ``model`` in a WF layer.

    Targets: ``nn.Conv2d`` (and subclasses), ``nn.Linear`` modules named ``qkv`` (timm
    ``Attention``), and ``nn.MultiheadAttention`` with a packed in-projection (torchvision ViTs).
    The base model's parameters are frozen; the gate logits are the only trainable parameters.

    Args:
        model: a trained classifier with ``num_classes`` outputs.
        num_classes: Nc, one gate row per class (>= 1).
        init: initial gate logit (3.0: sigmoid(3) ~ 0.95).
        inplace: patch ``model`` itself instead of a deep copy.
        include: optional ``(name, module) -> bool`` filter; targets it rejects are skipped.
    Returns:
        A :class:`WFModel`; ``.skipped`` lists (name, reason) of targets left unwrapped.
    Raises:
        TypeError / ValueError: bad ``num_classes``, an already patched model, nothing to wrap.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"wfkern.patch: num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"wfkern.patch: num_classes must be >= 1, got {num_classes}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"wfkern.patch: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, WFModel) or any(isinstance(m, WFLayer) for m in model.modules()):
        raise ValueError("wfkern.patch: model must not be patched already, got a model with WF layers; "
                         "patch the original model, or use the WFModel you have")
    if not inplace:
        model = copy.deepcopy(model)
    plan: List[Tuple[str, type]] = []
    skipped: List[Tuple[str, str]] = []
    for name, module in model.named_modules():
        if any(name.startswith(planned + ".") for planned, _ in plan):
            continue  # inside a module that is wrapped whole
        cls, reason = _target(name, module)
        if cls is not None and include is not None and not include(name, module):
            cls, reason = None, "excluded by include()"
        if cls is not None:
            plan.append((name, cls))
        elif reason is not None:
            skipped.append((name, reason))
    if not plan:
        raise ValueError(
            f"wfkern.patch: model must contain an nn.Conv2d, a qkv nn.Linear or an nn.MultiheadAttention to wrap, "
            f"got none in {type(model).__name__}" + (f" (skipped: {skipped[:3]})" if skipped else "")
        )
    for param in model.parameters():
        param.requires_grad_(False)
    context = ForgetContext()
    for name, cls in plan:
        base = model.get_submodule(name) if name else model
        model = set_submodule(model, name, cls(base, num_classes, context, init))
    return WFModel(model, num_classes, context, skipped)
