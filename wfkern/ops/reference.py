"""Pure-PyTorch reference of every wfkern op: the oracle for the kernels and the fallback.

Imports nothing from wfkern. Autograd and inductor work on it as on any PyTorch code.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["check_epilogue_args", "check_label_values", "gate_table_ref", "mask_epilogue_ref"]

_FLOAT_ACTIVATIONS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _require(ok: bool, message: str, error: type = ValueError) -> None:
    # A plain branch, not torch._check_value with a closure: dynamo traces it without a graph break.
    if not ok:
        raise error(message)


def check_epilogue_args(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
) -> int:
    """Validate dtypes, shapes and devices (not label values); same texts as csrc/checks.h.

    Works on real and fake tensors (it is also the fake implementation's check).

    Returns:
        The channel dim, normalised to be non-negative.
    """
    cd = _channel_dim(y, channel_dim)
    _check_dtypes(y, alpha_w, labels)
    _check_shapes(y, cd, alpha_w, labels, alpha_b, bias)
    for t in (alpha_w, labels, alpha_b, bias):
        if t is not None:
            _require(t.device == y.device, f"wfkern.mask_epilogue: all tensors must be on {y.device}, got {t.device}")
    return cd


def _channel_dim(y: Tensor, channel_dim: int) -> int:
    dim = y.dim()
    cd = channel_dim + dim if channel_dim < 0 else channel_dim
    _require(dim >= 2 and cd in (1, dim - 1),
             "wfkern.mask_epilogue: channel_dim must be 1 or -1 for a tensor with at least 2 dims, "
             f"got channel_dim={channel_dim} for a {dim}-d tensor")
    return cd


def _check_dtypes(y: Tensor, alpha_w: Tensor, labels: Tensor) -> None:
    _require(y.dtype in _FLOAT_ACTIVATIONS,
             f"wfkern.mask_epilogue: y must be float32, float16, bfloat16 or float64, got {y.dtype}", TypeError)
    _require(alpha_w.dtype in (torch.float32, torch.float64),
             f"wfkern.mask_epilogue: alpha_w must be float32 or float64, got {alpha_w.dtype}", TypeError)
    _require(labels.dtype == torch.int64, f"wfkern.mask_epilogue: labels must be int64, got {labels.dtype}", TypeError)


def _check_shapes(y: Tensor, cd: int, alpha_w: Tensor, labels: Tensor, alpha_b: Optional[Tensor],
                  bias: Optional[Tensor]) -> None:
    channels, batch = y.shape[cd], y.shape[0]
    _require(alpha_w.dim() == 2 and alpha_w.shape[1] == channels,
             f"wfkern.mask_epilogue: alpha_w must have shape (num_classes, {channels}), got {tuple(alpha_w.shape)}")
    _require(labels.dim() in (1, 2) and labels.shape[0] == batch,
             f"wfkern.mask_epilogue: labels must have shape ({batch},) or ({batch}, K), got {tuple(labels.shape)}")
    _require((alpha_b is None) == (bias is None),
             "wfkern.mask_epilogue: alpha_b and bias must be given together, got alpha_b "
             f"{'None' if alpha_b is None else 'set'} and bias {'None' if bias is None else 'set'}")
    if alpha_b is not None and bias is not None:
        _require(alpha_b.shape == alpha_w.shape and alpha_b.dtype == alpha_w.dtype,
                 "wfkern.mask_epilogue: alpha_b must match alpha_w in shape and dtype, "
                 f"got {tuple(alpha_b.shape)} {alpha_b.dtype}")
        _require(bias.dim() == 1 and bias.shape[0] == channels,
                 f"wfkern.mask_epilogue: bias must have shape ({channels},), got {tuple(bias.shape)}")


def check_label_values(labels: Tensor, num_classes: int, name: str = "wfkern.mask_epilogue: labels") -> None:
    """Raise a ValueError naming the first label outside [-1, num_classes).

    Reads the values (a device sync for CUDA tensors): call it on host labels, once per batch.
    """
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.numel() == 0:
        return
    bad = (labels < -1) | (labels >= num_classes)
    if bool(bad.any()):
        value = int(labels[bad].flatten()[0])
        raise ValueError(
            f"{name} must be in [-1, {num_classes}) (-1 = forget nothing), got {value}"
        )


def gate_table_ref(alpha: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
    """Per-sample gates: the product of the sigmoid rows of the distinct classes a sample selects.

    Args:
        alpha: (Nc, C) logits.
        labels: (B,) or (B, K) int64; -1 selects nothing; a class repeated in a set counts once.
        dtype: math dtype of the result.
    Returns:
        (B, C) in ``dtype``: prod over distinct l >= 0 of sigmoid(alpha[l]), exactly 1 where every
        label is -1, NaN for a sample with a label outside [-1, Nc) (never an out-of-range read).
    """
    sets = labels if labels.dim() == 2 else labels[:, None]
    num_classes = alpha.shape[0]
    use = (sets >= 0) & (sets < num_classes)
    if sets.shape[1] > 1:
        earlier = torch.ones(sets.shape[1], sets.shape[1], dtype=torch.bool, device=sets.device).tril(-1)
        use = use & ~((sets[:, :, None] == sets[:, None, :]) & earlier).any(dim=2)
    gates = torch.sigmoid(alpha.to(dtype)[sets.clamp(0, num_classes - 1)])  # (B, K, C)
    gates = torch.where(use[..., None], gates, torch.ones((), dtype=dtype, device=gates.device))
    bad = ((sets < -1) | (sets >= num_classes)).any(dim=1, keepdim=True)
    return torch.where(bad, torch.full((), float("nan"), dtype=dtype, device=gates.device), gates.prod(dim=1))


def mask_epilogue_ref(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
    post_scale: Optional[Tensor] = None,
    post_shift: Optional[Tensor] = None,
) -> Tensor:
    """Mask each sample's output channels by the gates of the class(es) it forgets.

    ``out = (y - bias) * gate(alpha_w) + bias * gate(alpha_b)``: for a per-channel mask this equals
    running the layer with weight ``W * gate_w`` and bias ``bias * gate_b``.

    Args:
        y: the wrapped layer's output *including* its bias: (B, C, ...) with channel_dim=1 in any
            memory format, or (B, ..., F) with channel_dim=-1; float32 / float16 / bfloat16 / float64.
        alpha_w: (Nc, C) float32 (float64 for gradcheck) weight-mask logits.
        labels: (B,) or (B, K) int64 classes to forget; -1 = none (rows left exactly as they are); a
            class repeated in a set counts once. Labels outside [-1, Nc) raise when they are on the
            CPU (a ValueError naming the label; a RuntimeError under torch.compile); CUDA labels
            are not read back to the host: that sample's output is NaN.
        alpha_b: (Nc, C) bias-mask logits, given together with ``bias``.
        bias: (C,) the layer's bias.
        channel_dim: 1 (convolutions) or -1 (linear layers).
        post_scale, post_shift: optional (C,) per-channel affine applied last (a folded inference
            BatchNorm); only the in-place op ``mask_epilogue_`` takes them.
    Returns:
        Like ``y`` (shape, dtype); math in float32 (float64 for float64 input).
    """
    cd = check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim)
    if labels.device.type == "cpu":  # host labels are free to read: raise now
        if torch.compiler.is_compiling():
            torch._assert_async(((labels >= -1) & (labels < alpha_w.shape[0])).all(),
                                f"wfkern.mask_epilogue: labels must be in [-1, {alpha_w.shape[0]}) (-1 = forget nothing)")
        else:
            check_label_values(labels, alpha_w.shape[0])
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    view = [y.shape[0]] + [1] * (y.dim() - 1)
    view[cd] = y.shape[cd]
    mask_w = gate_table_ref(alpha_w, labels, dtype)
    out = y.to(dtype) * mask_w.view(view)
    if alpha_b is not None and bias is not None:
        mask_b = gate_table_ref(alpha_b, labels, dtype)
        out = out + (bias.to(dtype) * (mask_b - mask_w)).view(view)
    if post_scale is not None and post_shift is not None:
        shape = [1] * y.dim()
        shape[cd] = y.shape[cd]
        out = out * post_scale.to(dtype).view(shape) + post_shift.to(dtype).view(shape)
    return out.to(y.dtype)
