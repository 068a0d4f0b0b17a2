"""wfkern.bake: export a plain model with one class's gates folded into its weights."""
from __future__ import annotations

import copy

import torch
from torch import nn

from wfkern.layers import FoldedBatchNorm2d, WFLayer, find_wf_layers
from wfkern.patch.model import WFModel
from wfkern.patch.surgery import set_submodule

__all__ = ["bake"]

_BAKEABLE = {"conv": nn.Conv2d, "linear": nn.Linear, "mha": nn.MultiheadAttention}


def _fold(layer: WFLayer, cls: int) -> None:
    base = layer.base
    if type(base) is not _BAKEABLE[layer.kind]:
        raise ValueError(
            f"wfkern.bake: layers must be plain {_BAKEABLE[layer.kind].__name__} to fold gates into weights, "
            f"got {type(base).__name__} (its forward may not be linear in the weight)"
        )
    gate_w, gate_b = layer.gates(cls)
    weight = base.in_proj_weight if layer.kind == "mha" else base.weight
    bias = base.in_proj_bias if layer.kind == "mha" else base.bias
    with torch.no_grad():
        weight.mul_(gate_w.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1))))
        if bias is not None:
            bias.mul_(gate_b.to(bias.dtype))


def bake(wf: WFModel, forget: int) -> nn.Module:
    """A plain ``nn.Module`` (the original classes) that behaves like ``wf(x, forget=forget)``.

    Weights are ``W * sigmoid(alpha_w[forget])`` per output channel, biases likewise; ``forget=-1``
    gives a copy of the original model. All parameters of the result require grad, like a freshly
    built model (e.g. for relearn-time fine-tuning).
    """
    if not isinstance(wf, WFModel):
        raise TypeError(f"wfkern.bake: wf must be a WFModel (from wfkern.patch), got {type(wf).__name__}")
    if isinstance(forget, bool) or not isinstance(forget, int) or not -1 <= forget < wf.num_classes:
        raise ValueError(f"wfkern.bake: forget must be an int in [-1, {wf.num_classes}), got {forget!r}")
    model = copy.deepcopy(wf.model)
    for name, layer in find_wf_layers(model).items():
        if forget >= 0:
            _fold(layer, forget)
        model = set_submodule(model, name, layer.base)
    for name, module in list(model.named_modules()):
        if isinstance(module, FoldedBatchNorm2d):
            model = set_submodule(model, name, module.bn)
    for param in model.parameters():
        param.requires_grad_(True)
    return model
