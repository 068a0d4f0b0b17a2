"""BatchNorm folding, in one place: which conv/BatchNorm pairs fold, the folded BatchNorm, and the conv's folded
epilogue.

Where tracing proves that a ``BatchNorm2d`` reads only a wrapped conv's output, a masked forward applies that
BatchNorm's frozen running-statistics affine inside the conv's epilogue (one pass over the output instead of two,
in inference and untraining alike) and hands the result to the :class:`FoldedBatchNorm2d`, which passes it through.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
import torch.fx
from torch import Tensor, nn

from wfkern.layers.base import check_batch

if TYPE_CHECKING:
    from wfkern.layers.conv import WFConv2d

__all__ = ["FoldedBatchNorm2d", "conv_batchnorm_pairs", "folded_epilogue"]


def conv_batchnorm_pairs(model: nn.Module) -> Dict[str, str]:
    """{conv name: BatchNorm2d name} where tracing proves the BatchNorm is the conv's only reader.

    Every call of the conv must feed only that BatchNorm, and no other conv may feed it.
    Untraceable models give {}.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure just means "no folding"
        return {}
    modules = dict(model.named_modules())
    readers: Dict[str, set] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        users = list(node.users)
        only = users[0] if len(users) == 1 else None
        foldable = (only is not None and only.op == "call_module" and type(modules.get(only.target)) is nn.BatchNorm2d
                    and only.args == (node,) and not only.kwargs)
        readers.setdefault(node.target, set()).add(only.target if foldable else None)
    pairs = {conv: next(iter(bns)) for conv, bns in readers.items() if len(bns) == 1 and None not in bns}
    convs_per_bn: Dict[str, int] = {}
    for bn in pairs.values():
        convs_per_bn[bn] = convs_per_bn.get(bn, 0) + 1
    # A BatchNorm that reads two convs folds into neither: its hand-over must have one source.
    return {conv: bn for conv, bn in pairs.items() if convs_per_bn[bn] == 1}


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


def folded_epilogue(conv: "WFConv2d", y: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """``conv``'s masked output with its folded BatchNorm applied, handed over to that BatchNorm; None when this
    call does not fold (no labels or no folded BatchNorm, a trace, a BatchNorm being trained, or a batch in which
    some rows forget nothing).

    A batch with rows that forget nothing runs unfolded: the epilogue leaves those rows untouched and the
    BatchNorm's own arithmetic follows, so they stay bit for bit the original (a folded affine rounds
    differently); one BatchNorm pass costs less than recomputing those rows apart.
    """
    context = conv.context
    if (labels is None or conv.folded_batchnorm is None or context.has_unmasked_rows
            or torch.compiler.is_compiling()):
        return None
    check_batch(labels, y)
    bn = context.module(conv.folded_batchnorm)
    affine = bn.inference_affine() if isinstance(bn, FoldedBatchNorm2d) else None
    if affine is None:
        return None
    alpha_b = conv.alpha_b if conv.base.bias is not None else None
    out = conv.epilogue_op(y)(y, conv.alpha_w, labels, alpha_b, conv.base.bias, 1, affine[0], affine[1])
    context.hand_over(conv.folded_batchnorm, out)
    return out
