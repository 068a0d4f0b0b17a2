"""WF wrapper of nn.Conv2d: one gate per filter (output channel)."""
from __future__ import annotations

from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer

__all__ = ["WFConv2d"]


class WFConv2d(WFLayer):
    """``conv(x, W * gate_w[y_b], bias * gate_b[y_b])`` for each sample b.

    The gate is per output channel, so the frozen convolution runs once for the whole batch and
    the gates scale its output (``wfkern.ops.mask_epilogue``); no per-sample weights exist.

    Args:
        base: the convolution to wrap (kept as ``self.base``, not copied).
        num_classes: Nc, rows of the gate matrices.
        context: the model's shared :class:`ForgetContext`.
        init: initial alpha logit (3.0: sigmoid(3) ~ 0.95, gates open with a live gradient).
    """

    kind = "conv"

    def __init__(self, base: nn.Conv2d, num_classes: int, context: ForgetContext, init: float = 3.0) -> None:
        super().__init__(base, num_classes, base.out_channels, base.bias is not None, context, init)

    def forward(self, x: Tensor) -> Tensor:
        # The base keeps its own forward (padding modes, subclasses); y includes its bias.
        return self.masked(self.base(x), self.base.bias, channel_dim=1)
