"""What every WF layer shares: the per-class alpha logits and the batch's forget labels."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from wfkern.ops import mask_epilogue, mask_epilogue_

__all__ = ["ForgetContext", "WFLayer", "find_wf_layers"]


class ForgetContext:
    """The forget labels of the batch in flight, shared by every WF layer of one model.

    ``labels`` is None outside a masked forward (the layers then run their base layer untouched),
    else a validated (B,) or (B, K) int64 tensor on the activations' device.
    """

    def __init__(self) -> None:
        self.labels: Optional[Tensor] = None


class WFLayer(nn.Module):
    """Base of the WF layers: holds ``base`` (frozen) and the gates of its ``channels`` outputs.

    Attributes:
        base: the wrapped layer, unchanged (its parameters are frozen by ``wfkern.patch``).
        alpha_w: (Nc, C) float32 weight-gate logits, one row per class.
        alpha_b: (Nc, C) bias-gate logits, or None when the base layer has no bias.
    """

    kind = "layer"

    def __init__(self, base: nn.Module, num_classes: int, channels: int, has_bias: bool,
                 context: ForgetContext, init: float) -> None:
        super().__init__()
        self.base = base
        self.context = context
        device = next(base.parameters()).device
        self.alpha_w = nn.Parameter(torch.full((num_classes, channels), float(init), device=device))
        self.alpha_b = (
            nn.Parameter(torch.full((num_classes, channels), float(init), device=device)) if has_bias else None
        )

    @property
    def num_classes(self) -> int:
        return self.alpha_w.shape[0]

    @property
    def channels(self) -> int:
        return self.alpha_w.shape[1]

    def gates(self, cls: int) -> tuple:
        """(weight gates (C,), bias gates (C,) or None) of class ``cls``, detached, float32."""
        with torch.no_grad():
            gate_b = torch.sigmoid(self.alpha_b[cls]) if self.alpha_b is not None else None
            return torch.sigmoid(self.alpha_w[cls]), gate_b

    def masked(self, y: Tensor, bias: Optional[Tensor], channel_dim: int,
               alpha_w: Optional[Tensor] = None, alpha_b: Optional[Tensor] = None) -> Tensor:
        """Apply the batch's gates to ``y`` (the base output including ``bias``), if any are set."""
        labels = self.context.labels
        if labels is None:
            return y
        alpha_w = self.alpha_w if alpha_w is None else alpha_w
        alpha_b = (self.alpha_b if alpha_b is None else alpha_b) if bias is not None else None
        # y is the base layer's fresh output: overwrite it when autograd will not need it.
        needs_grad = torch.is_grad_enabled() and (y.requires_grad or alpha_w.requires_grad)
        epilogue = mask_epilogue if needs_grad else mask_epilogue_
        return epilogue(y, alpha_w, labels, alpha_b, bias, channel_dim, check_labels=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, channels={self.channels}, bias_gates={self.alpha_b is not None}"


def find_wf_layers(module: nn.Module) -> dict:
    """{dotted name: WF layer} for every WF layer inside ``module`` (in module order)."""
    return {name: m for name, m in module.named_modules() if isinstance(m, WFLayer)}
