"""WF wrapper of nn.Conv2d: one gate per filter (output channel)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer, check_batch
from wfkern.layers.batchnorm import FoldedBatchNorm2d
from wfkern.ops import mask_epilogue, mask_epilogue_

__all__ = ["WFConv2d"]


class WFConv2d(WFLayer):
    """``conv(x, W * gate_w[y_b], bias * gate_b[y_b])`` for each sample b.

    The gate is per output channel, so the frozen convolution runs once for the whole batch and
    the gates scale its output (``wfkern.ops.mask_epilogue``); no per-sample weights exist.
    When ``wfkern.patch`` proved that a BatchNorm2d reads only this conv's output, a masked forward
    applies that BatchNorm's (frozen, running-statistics) affine in the same pass, with or without
    grad (see :class:`FoldedBatchNorm2d`).

    Args:
        base: the convolution to wrap (kept as ``self.base``, not copied).
        num_classes: Nc, rows of the gate matrices.
        context: the model's shared :class:`ForgetContext`.
        init: initial alpha logit (3.0: sigmoid(3) ~ 0.95, gates open with a live gradient).
    """

    kind = "conv"
    compile_as_tensor_ops = True  # inductor fuses them with the BatchNorm and activation that follow

    def __init__(self, base: nn.Conv2d, num_classes: int, context: ForgetContext, init: float = 3.0) -> None:
        super().__init__(base, num_classes, base.out_channels, base.bias is not None, context, init)
        self.folded_batchnorm: Optional[str] = None

    def fold_batchnorm(self, name: str) -> None:
        """Let masked inference apply the :class:`FoldedBatchNorm2d` at dotted ``name`` in this epilogue.

        A name, not the module: a DataParallel replica of this layer must find its replica's BatchNorm.
        """
        self.folded_batchnorm = name

    def forward(self, x: Tensor, forget: Optional[Tensor] = None) -> Tensor:
        """``x``: (B, C_in, H, W). ``forget``: (B,) or (B, K) int64 labels for a call of this layer on
        its own; inside a :class:`WFModel` the model's labels apply."""
        # The base keeps its own forward (padding modes, subclasses); y includes its bias.
        y = self.base(x)
        labels = self.labels_for(forget)
        # A batch with rows that forget nothing runs unfolded: the epilogue leaves those rows untouched and the
        # BatchNorm's own arithmetic follows, so they stay bit for bit the original (a folded affine rounds
        # differently); one BatchNorm pass costs less than recomputing those rows apart.
        if (labels is not None and self.folded_batchnorm is not None and not self.context.has_unmasked_rows
                and not torch.compiler.is_compiling()):
            check_batch(labels, y)
            bn = self.context.module(self.folded_batchnorm)
            affine = bn.inference_affine() if isinstance(bn, FoldedBatchNorm2d) else None
            if affine is not None:
                alpha_b = self.alpha_b if self.base.bias is not None else None
                needs_grad = torch.is_grad_enabled() and (y.requires_grad or self.alpha_w.requires_grad)
                epilogue = mask_epilogue if needs_grad else mask_epilogue_
                out = epilogue(y, self.alpha_w, labels, alpha_b, self.base.bias, 1, affine[0], affine[1])
                self.context.hand_over(self.folded_batchnorm, out)
                return out
        return self.masked(y, labels, self.base.bias, channel_dim=1)

