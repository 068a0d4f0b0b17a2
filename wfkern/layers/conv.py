"""WF wrapper of nn.Conv2d: one gate per filter (output channel)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer
from wfkern.layers.fusion import folded_epilogue

__all__ = ["WFConv2d"]


class WFConv2d(WFLayer):
    """``conv(x, W * gate_w[y_b], bias * gate_b[y_b])`` for each sample b.

    The gate is per output channel, so the frozen convolution runs once for the whole batch and
    the gates scale its output (``wfkern.ops.mask_epilogue``); no per-sample weights exist.
    When ``wfkern.patch`` proved that a BatchNorm2d reads only this conv's output, a masked forward
    applies that BatchNorm's (frozen, running-statistics) affine in the same pass, with or without
    grad (see :mod:`wfkern.layers.fusion`).

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
        """Let masked forwards apply the folded BatchNorm at dotted ``name`` in this epilogue (:mod:`wfkern.layers.fusion`).

        A name, not the module: a DataParallel replica of this layer must find its replica's BatchNorm.
        """
        self.folded_batchnorm = name

    def forward(self, x: Tensor, forget: Optional[Tensor] = None) -> Tensor:
        """``x``: (B, C_in, H, W). ``forget``: (B,) or (B, K) int64 labels for a call of this layer on
        its own; inside a :class:`WFModel` the model's labels apply."""
        # The base keeps its own forward (padding modes, subclasses); y includes its bias.
        y = self.base(x)
        labels = self.labels_for(forget)
        out = folded_epilogue(self, y, labels)
        if out is not None:
            return out
        return self.masked(y, labels, self.base.bias, channel_dim=1)

