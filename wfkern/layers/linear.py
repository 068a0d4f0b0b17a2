"""WF wrapper of a ViT attention's qkv projection (an nn.Linear): one gate per output feature."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from wfkern.layers.base import ForgetContext, WFLayer, check_batch
from wfkern.ops.gated_linear import gated_linear, uses_fused_linear

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
        labels = self.labels_for(forget)
        if labels is not None and uses_fused_linear(x, self.alpha_w) and type(self.base) is nn.Linear:
            check_batch(labels, x)
            return gated_linear(x, self.base.weight, self.base.bias, self.alpha_w, self.alpha_b, labels)
        # Attention reads q, k, v out of place and keeps them for its backward: keeping the masked
        # output (not the projection's raw output) costs no extra activation memory.
        return self.masked(self.base(x), labels, self.base.bias, channel_dim=-1, save_output=True)
