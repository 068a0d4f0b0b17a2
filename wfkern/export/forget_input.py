"""The patched model with the forget labels as a tensor input: what the ONNX and pt2 exports trace."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from wfkern.patch import WFModel

__all__ = ["ForgetInput"]


class ForgetInput(nn.Module):
    """``forward(x, forget)``: ``wf(x, forget=forget)`` with the labels a required int64 input.

    ``forget`` is (B,) or (B, K); -1 forgets nothing (that row's logits are the original model's) and the K
    labels of a row are a set whose gates multiply. A row holding any label outside [-1, Nc) gets NaN logits:
    its labels are replaced by -1 before the model runs (so no kernel or gather ever reads out of range) and its
    output row is set to NaN explicitly, in eager PyTorch, in the exported graph and in ONNX alike.

    Args:
        wf: the patched model (not copied; keep it in eval mode).
    """

    def __init__(self, wf: WFModel) -> None:
        super().__init__()
        if not isinstance(wf, WFModel):
            raise TypeError(f"wfkern.export.ForgetInput: wf must be a WFModel (from wfkern.patch), got "
                            f"{type(wf).__name__}")
        self.wf = wf
        self.num_classes = wf.num_classes

    def forward(self, x: Tensor, forget: Tensor) -> Tensor:
        sets = forget if forget.dim() == 2 else forget.unsqueeze(1)
        bad = ((sets < -1) | (sets >= self.num_classes)).any(dim=1, keepdim=True)
        sets = torch.where(bad, torch.full_like(sets, -1), sets)
        # A padding column of -1 changes no gate and gives the set width a known lower bound of 2, so a
        # dynamic K traces one graph for K = 1 and K > 1 alike.
        sets = torch.cat([sets, torch.full_like(sets[:, :1], -1)], dim=1)
        out = self.wf(x, forget=sets)
        return torch.where(bad, torch.full_like(out, float("nan")), out)
