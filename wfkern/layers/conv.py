"""WF wrapper of nn.Conv2d: one gate per filter (output channel)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer
from wfkern.layers.batchnorm import FoldedBatchNorm2d
from wfkern.ops import mask_epilogue_

__all__ = ["WFConv2d"]


class WFConv2d(WFLayer):
    """``conv(x, W * gate_w[y_b], bias * gate_b[y_b])`` for each sample b.

    The gate is per output channel, so the frozen convolution runs once for the whole batch and
    the gates scale its output (``wfkern.ops.mask_epilogue``); no per-sample weights exist.
    When ``wfkern.patch`` proved that a BatchNorm2d reads only this conv's output, masked
    inference applies that BatchNorm too, in the same pass (see :class:`FoldedBatchNorm2d`).

    Args:
        base: the convolution to wrap (kept as ``self.base``, not copied).
        num_classes: Nc, rows of the gate matrices.
        context: the model's shared :class:`ForgetContext`.
        init: initial alpha logit (3.0: sigmoid(3) ~ 0.95, gates open with a live gradient).
    """

    kind = "conv"

    def __init__(self, base: nn.Conv2d, num_classes: int, context: ForgetContext, init: float = 3.0) -> None:
        super().__init__(base, num_classes, base.out_channels, base.bias is not None, context, init)
        self._folded_bn: Optional[FoldedBatchNorm2d] = None

    def fold_batchnorm(self, bn: FoldedBatchNorm2d) -> None:
        """Let masked inference apply ``bn`` in this layer's epilogue (not registered as a child)."""
        object.__setattr__(self, "_folded_bn", bn)

    def forward(self, x: Tensor) -> Tensor:
        # The base keeps its own forward (padding modes, subclasses); y includes its bias.
        y = self.base(x)
        labels, bn = self.context.labels, self._folded_bn
        if labels is not None and bn is not None and not torch.compiler.is_compiling():
            affine = bn.inference_affine()
            if affine is not None and not (torch.is_grad_enabled() and (y.requires_grad or self.alpha_w.requires_grad)):
                alpha_b = self.alpha_b if self.base.bias is not None else None
                mask_epilogue_(y, self.alpha_w, labels, alpha_b, self.base.bias, 1, affine[0], affine[1],
                               check_labels=False)
                bn.hand_over(y)
                return y
        return self.masked(y, self.base.bias, channel_dim=1)
