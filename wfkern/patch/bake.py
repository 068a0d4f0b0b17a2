"""wfkern.bake: export a plain model with the gates of a set of classes folded into its weights."""
from __future__ import annotations

import copy
from typing import List, Sequence, Union

import torch
from torch import Tensor, nn

from wfkern.layers import FoldedBatchNorm2d, WFLayer, find_wf_layers
from wfkern.ops import gate_table_ref
from wfkern.patch.model import WFModel
from wfkern.patch.surgery import set_submodule

__all__ = ["bake", "forget_set"]

_BAKEABLE = {"conv": nn.Conv2d, "linear": nn.Linear, "mha": nn.MultiheadAttention}

ForgetSet = Union[int, Sequence[int], Tensor]


def forget_set(forget: ForgetSet, num_classes: int, where: str = "wfkern.bake") -> List[int]:
    """The distinct classes of ``forget`` (an int, a list / tuple or a 0-d / 1-d integer tensor), sorted.

    ``-1`` entries mean nothing; an empty set or only ``-1`` gives ``[]``; a class listed twice counts once.

    Raises:
        TypeError: not an int, a sequence of ints or an integer tensor.
        ValueError: a class outside ``[-1, num_classes)`` (the first one is named).
    """
    if isinstance(forget, Tensor):
        if forget.dtype == torch.bool or forget.is_floating_point() or forget.is_complex() or forget.dim() > 1:
            raise TypeError(f"{where}: forget must be an int, a list of ints or a 0-d / 1-d integer tensor, got a "
                            f"{forget.dim()}-d {forget.dtype} tensor")
        items = [int(label) for label in forget.reshape(-1).tolist()]
    elif isinstance(forget, (list, tuple)):
        items = list(forget)
    else:
        items = [forget]
    for label in items:
        if isinstance(label, bool) or not isinstance(label, int):
            raise TypeError(f"{where}: forget must be an int, a list of ints or an integer tensor, got "
                            f"{type(label).__name__} {label!r}")
        if not -1 <= label < num_classes:
            shown = "" if isinstance(forget, int) else f" in the set {items}"
            raise ValueError(f"{where}: forget must be an int in [-1, {num_classes}), got {label}{shown}; -1 means "
                             "nothing, a set is a list or tensor of such ints")
    return sorted({label for label in items if label >= 0})


def _fold(layer: WFLayer, classes: Tensor) -> None:
    """Scale ``layer.base``'s weight and bias in place by the gates of ``classes`` (one (K,) forget row)."""
    base = layer.base
    if type(base) is not _BAKEABLE[layer.kind]:
        raise ValueError(
            f"wfkern.bake: layers must be plain {_BAKEABLE[layer.kind].__name__} to fold gates into weights, "
            f"got {type(base).__name__} (its forward may not be linear in the weight)"
        )
    weight = base.in_proj_weight if layer.kind == "mha" else base.weight
    bias = base.in_proj_bias if layer.kind == "mha" else base.bias
    row = classes.to(layer.alpha_w.device)[None]
    with torch.no_grad():
        # The gate of a set is the product over its classes: the same table a (B, K) forget row selects.
        gate_w = gate_table_ref(layer.alpha_w.detach(), row, torch.float32)[0]
        weight.mul_(gate_w.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1))))
        if bias is not None and layer.alpha_b is not None:
            bias.mul_(gate_table_ref(layer.alpha_b.detach(), row, torch.float32)[0].to(bias.dtype))


def bake(wf: WFModel, forget: ForgetSet) -> nn.Module:
    """A plain ``nn.Module`` (the original classes) that behaves like ``wf(x, forget=[forget] * B)``.

    Args:
        wf: the patched model.
        forget: the class(es) to fold in: an int, a list / tuple of ints or an integer tensor of ids. A set's
            gates multiply, exactly as a ``(B, K)`` forget row does; a class listed twice counts once; ``-1``
            entries and an empty set forget nothing (the result is a copy of the original model).
    Returns:
        The original architecture (same module classes and state-dict keys) with weights
        ``W * prod_c sigmoid(alpha_w[c])`` per output channel, biases likewise. All parameters require grad,
        like a freshly built model (e.g. for relearn-time fine-tuning).
    Raises:
        TypeError: ``wf`` is not a WFModel, or ``forget`` is not made of ints.
        ValueError: a class outside ``[-1, Nc)``.
    """
    if not isinstance(wf, WFModel):
        raise TypeError(f"wfkern.bake: wf must be a WFModel (from wfkern.patch), got {type(wf).__name__}")
    classes = torch.tensor(forget_set(forget, wf.num_classes), dtype=torch.long)
    model = copy.deepcopy(wf.model)
    for name, layer in find_wf_layers(model).items():
        if classes.numel():
            _fold(layer, classes)
        model = set_submodule(model, name, layer.base)
    for name, module in list(model.named_modules()):
        if isinstance(module, FoldedBatchNorm2d):
            model = set_submodule(model, name, module.bn)
    for param in model.parameters():
        param.requires_grad_(True)
    return model
