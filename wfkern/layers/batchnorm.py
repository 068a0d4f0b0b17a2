"""An inference BatchNorm whose affine the preceding WF conv applies in its own epilogue."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["FoldedBatchNorm2d"]


class FoldedBatchNorm2d(nn.Module):
    """Wraps a BatchNorm2d that only ever reads one WF conv's output (proved by tracing).

    When that conv runs masked in inference, it applies this BatchNorm's running-statistics
    affine inside its epilogue (one pass instead of two) and hands over the tensor it produced;
    this module then passes exactly that tensor through. Any other input runs the BatchNorm.
    """

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn
        self._handed_over: Optional[Tensor] = None
        self._affine_cache: Optional[tuple] = None

    def forward(self, x: Tensor) -> Tensor:
        handed_over, self._handed_over = self._handed_over, None
        if handed_over is not None and x is handed_over:
            return x
        return self.bn(x)

    def hand_over(self, y: Tensor) -> None:
        self._handed_over = y

    def inference_affine(self) -> Optional[Tuple[Tensor, Tensor]]:
        """(scale, shift) per channel when the BatchNorm uses running statistics, else None."""
        bn = self.bn
        if bn.training or not bn.track_running_stats or bn.running_var is None:
            return None
        tensors = [t for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias) if t is not None]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._affine_cache is None or self._affine_cache[0] != key:
            with torch.no_grad():
                scale = torch.rsqrt(bn.running_var.float() + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight.float()
                shift = -bn.running_mean.float() * scale
                if bn.bias is not None:
                    shift = shift + bn.bias.float()
            self._affine_cache = (key, scale, shift)
        return self._affine_cache[1], self._affine_cache[2]
