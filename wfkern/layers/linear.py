"""WF wrapper of a ViT attention's qkv projection (an nn.Linear): one gate per output feature."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer

__all__ = ["WFLinear"]


class WFLinear(WFLayer):
    """``linear(x, W * gate_w[y_b], bias * gate_b[y_b])`` for each sample b, x: (B, ..., F_in).

    Per-output-feature gates are the analogue of per-filter gates (docs/method.md §1: per-element gates
    would need Nc * F_in * F_out values a layer).
    """

    kind = "linear"

    def __init__(self, base: nn.Linear, num_classes: int, context: ForgetContext, init: float = 3.0) -> None:
        super().__init__(base, num_classes, base.out_features, base.bias is not None, context, init)

    def forward(self, x: Tensor, forget: Optional[Tensor] = None) -> Tensor:
        """``x``: (B, ..., F_in). ``forget``: labels for a call on its own (see :class:`WFConv2d`)."""
        # Attention reads q, k, v out of place and keeps them for its backward: keeping the masked
        # output (not the projection's raw output) costs no extra activation memory.
        return self.masked(self.base(x), self.labels_for(forget), self.base.bias, channel_dim=-1, save_output=True)
