"""An inference BatchNorm whose affine the preceding WF conv applies in its own epilogue."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["FoldedBatchNorm2d"]


class FoldedBatchNorm2d(nn.Module):
    """Wraps a BatchNorm2d that only ever reads one WF conv's output (proved by tracing).

    When that conv runs masked, it applies this BatchNorm's running-statistics affine inside its
    epilogue (one pass instead of two; the backward, too, then needs one) and hands over the tensor it produced
    through the calling thread's :class:`ForgetContext` state; this module then passes exactly
    that tensor through. Any other input runs the BatchNorm.

    Attributes:
        bn: the wrapped BatchNorm2d, unchanged.
        name: its dotted name in the patched model (the key of the hand-over).
    """

    def __init__(self, bn: nn.BatchNorm2d, name: str, context) -> None:
        super().__init__()
        self.training = bn.training
        self.bn = bn
        self.name = name
        self.context = context
        self._affine_cache: Optional[tuple] = None

    def forward(self, x: Tensor) -> Tensor:
        if self.context.take_handed_over(self.name) is x:
            return x
        return self.bn(x)

    def inference_affine(self) -> Optional[Tuple[Tensor, Tensor]]:
        """(scale, shift) per channel when the BatchNorm uses running statistics, else None."""
        bn = self.bn
        if bn.training or not bn.track_running_stats or bn.running_var is None:
            return None
        if any(p.requires_grad for p in bn.parameters()):  # a BatchNorm being trained is not folded
            return None
        tensors = [t for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias) if t is not None]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._affine_cache is None or self._affine_cache[0] != key:
            # Plain tensors even under torch.inference_mode: a later forward with grad saves them.
            with torch.inference_mode(False), torch.no_grad():
                scale = torch.rsqrt(bn.running_var.float() + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight.float()
                shift = -bn.running_mean.float() * scale
                if bn.bias is not None:
                    shift = shift + bn.bias.float()
            self._affine_cache = (key, scale, shift)
        return self._affine_cache[1], self._affine_cache[2]
