"""The mask epilogue op: wrapper, fake (meta) implementation and autograd rule."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from wfkern.ops import _load
from wfkern.ops.reference import _require, check_epilogue_args, mask_epilogue_ref

__all__ = ["mask_epilogue", "mask_epilogue_", "raise_label_errors"]


def mask_epilogue(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
    post_scale: Optional[Tensor] = None,
    post_shift: Optional[Tensor] = None,
    save_output: bool = False,
) -> Tensor:
    """Mask each sample's output channels by the gates of the class(es) it forgets.

    Runs the compiled kernel for y's device when there is one, else :func:`mask_epilogue_ref`
    (same arguments, same result). Differentiable in ``y``, ``alpha_w`` and ``alpha_b``.

    Args:
        y: the wrapped layer's output including its bias: (B, C, ...) any memory format with
            channel_dim=1, or (B, ..., F) with channel_dim=-1; float32 / float16 / bfloat16 / float64.
        alpha_w: (Nc, C) float32 weight-mask logits.
        labels: (B,) or (B, K) int64 classes to forget; -1 = none; a class repeated in a set
            counts once. A label outside [-1, Nc) is a ValueError: at once for CPU tensors; for
            CUDA tensors (checked on the device, no host synchronisation) that sample's output is
            NaN and :func:`raise_label_errors` raises.
        alpha_b: (Nc, C) bias-mask logits, given together with ``bias``.
        bias: (C,) the layer's bias.
        channel_dim: 1 (convolutions) or -1 (linear layers).
        post_scale, post_shift: optional (C,) per-channel affine applied last (a folded inference
            BatchNorm: one pass instead of two), given together; treated as constants.
        save_output: let the backward keep the output instead of ``y``: no extra activation
            memory when the next layer keeps the output anyway (attention), but an in-place
            change of the output (``ReLU(inplace=True)``) then makes backward raise.
    Returns:
        Like ``y`` (shape, dtype, memory format).
    """
    if not _load.kernel_for(y.device.type):
        return mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift)
    return torch.ops.wfkern.mask_epilogue.default(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift,
                                                  save_output)


def mask_epilogue_(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
    post_scale: Optional[Tensor] = None,
    post_shift: Optional[Tensor] = None,
) -> Tensor:
    """In-place :func:`mask_epilogue` for inference: overwrites and returns ``y``.

    Saves an allocation and a cold write per layer. Not differentiable: use it only where autograd
    does not need ``y`` (no grad mode, or nothing requires grad). Same arguments as :func:`mask_epilogue`.
    """
    if not _load.kernel_for(y.device.type):
        return y.copy_(mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift))
    torch.ops.wfkern.mask_epilogue_.default(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift)
    return y


def raise_label_errors() -> None:
    """Raise the ValueError for a forget label outside [-1, Nc) that a CUDA kernel found.

    CUDA kernels check labels on the device, so they never stall the host: a bad label makes its
    sample's output NaN and is reported to the host, where this function reads the report with a
    plain memory load (no synchronisation) and raises. :class:`wfkern.WFModel` calls it before each
    forward that gets its labels on a GPU; call it after a synchronisation to cover every launch.
    """
    if not _load.kernel_for("cuda"):
        return
    found, label, num_classes = torch.ops.wfkern.take_label_error.default()
    if found:
        raise ValueError(
            f"wfkern.mask_epilogue: labels must be in [-1, {num_classes}) (-1 = forget nothing), got {label} "
            "(found on the GPU in an earlier call, whose samples with that label got NaN outputs)"
        )


def _check_post_affine(y, cd, post_scale, post_shift) -> None:
    _require((post_scale is None) == (post_shift is None),
             "wfkern.mask_epilogue_: post_scale and post_shift must be given together")
    for t in (post_scale, post_shift):
        if t is not None:
            _require(t.dim() == 1 and t.shape[0] == y.shape[cd],
                     f"wfkern.mask_epilogue_: post_scale and post_shift must be floating ({y.shape[cd]},) tensors")


def _fake_inplace(y, alpha_w, labels, alpha_b=None, bias=None, channel_dim=1, post_scale=None, post_shift=None):
    _check_post_affine(y, check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim), post_scale, post_shift)


def _fake_forward(y, alpha_w, labels, alpha_b=None, bias=None, channel_dim=1, post_scale=None, post_shift=None,
                  save_output=False):
    _check_post_affine(y, check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim), post_scale, post_shift)
    return torch.empty_like(y)


def _fake_backward(grad_out, saved, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift,
                   saved_is_output, compute_grad_y):
    check_epilogue_args(saved, alpha_w, labels, alpha_b, bias, channel_dim)
    grad_y = torch.empty_like(saved) if compute_grad_y else saved.new_empty(0)
    grad_alpha_b = torch.empty_like(alpha_b) if alpha_b is not None else alpha_w.new_empty(0)
    return grad_y, torch.empty_like(alpha_w), grad_alpha_b


def _register() -> None:
    """Attach fake rules to the ops that wfkern._C defined (their autograd is registered in C++)."""
    torch.library.register_fake("wfkern::mask_epilogue", _fake_forward)
    torch.library.register_fake("wfkern::mask_epilogue_backward", _fake_backward)
    torch.library.register_fake("wfkern::mask_epilogue_", _fake_inplace)
