"""The mask epilogue op: wrapper, fake (meta) implementation and autograd rule."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from wfkern.ops import _load
from wfkern.ops.reference import check_epilogue_args, check_label_values, mask_epilogue_ref

__all__ = ["mask_epilogue", "mask_epilogue_"]


def mask_epilogue(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
    *,
    check_labels: bool = True,
) -> Tensor:
    """Mask each sample's output channels by the gates of the class(es) it forgets.

    Runs the compiled kernel for y's device when there is one, else :func:`mask_epilogue_ref`
    (same arguments, same result).

    Args:
        y: the wrapped layer's output including its bias: (B, C, ...) any memory format with
            channel_dim=1, or (B, ..., F) with channel_dim=-1; float32 / float16 / bfloat16 / float64.
        alpha_w: (Nc, C) float32 weight-mask logits.
        labels: (B,) or (B, K) int64 classes to forget; -1 = none.
        alpha_b: (Nc, C) bias-mask logits, given together with ``bias``.
        bias: (C,) the layer's bias.
        channel_dim: 1 (convolutions) or -1 (linear layers).
        check_labels: validate label values first (reads them: a sync on CUDA). Callers that
            validated once per batch pass False.
    Returns:
        Like ``y`` (shape, dtype, memory format).
    """
    if check_labels and not torch.compiler.is_compiling():
        check_label_values(labels, alpha_w.shape[0])
    if not _load.kernel_for(y.device.type):
        return mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, channel_dim)
    return torch.ops.wfkern.mask_epilogue.default(y, alpha_w, labels, alpha_b, bias, channel_dim)


def mask_epilogue_(
    y: Tensor,
    alpha_w: Tensor,
    labels: Tensor,
    alpha_b: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    channel_dim: int = 1,
    post_scale: Optional[Tensor] = None,
    post_shift: Optional[Tensor] = None,
    *,
    check_labels: bool = True,
) -> Tensor:
    """In-place :func:`mask_epilogue` for inference: overwrites and returns ``y``.

    Saves an allocation and a cold write per layer, and can fold a following per-channel affine
    (an inference BatchNorm): ``out = epilogue(y) * post_scale + post_shift``. Not differentiable:
    use it only where autograd does not need ``y`` (no grad mode, or nothing requires grad).

    Args:
        post_scale, post_shift: optional (C,) tensors, given together.
    """
    if check_labels and not torch.compiler.is_compiling():
        check_label_values(labels, alpha_w.shape[0])
    if not _load.kernel_for(y.device.type):
        return y.copy_(mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift))
    torch.ops.wfkern.mask_epilogue_.default(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift)
    return y


def _fake_inplace(y, alpha_w, labels, alpha_b=None, bias=None, channel_dim=1, post_scale=None, post_shift=None):
    cd = check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim)
    torch._check_value((post_scale is None) == (post_shift is None),
                       lambda: "wfkern.mask_epilogue_: post_scale and post_shift must be given together")
    for t in (post_scale, post_shift):
        if t is not None:
            torch._check_value(t.dim() == 1 and t.shape[0] == y.shape[cd],
                               lambda: f"wfkern.mask_epilogue_: post_scale and post_shift must be floating ({y.shape[cd]},) tensors")


def _fake_forward(y, alpha_w, labels, alpha_b=None, bias=None, channel_dim=1):
    check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim)
    return torch.empty_like(y)


def _fake_backward(grad_out, y, alpha_w, labels, alpha_b, bias, channel_dim, compute_grad_y):
    check_epilogue_args(y, alpha_w, labels, alpha_b, bias, channel_dim)
    grad_y = torch.empty_like(y) if compute_grad_y else y.new_empty(0)
    grad_alpha_b = torch.empty_like(alpha_b) if alpha_b is not None else alpha_w.new_empty(0)
    return grad_y, torch.empty_like(alpha_w), grad_alpha_b


def _setup_context(ctx, inputs, output):
    y, alpha_w, labels, alpha_b, bias, channel_dim = inputs
    ctx.save_for_backward(y, alpha_w, labels, alpha_b, bias)
    ctx.channel_dim = channel_dim


def _backward(ctx, grad_out):
    y, alpha_w, labels, alpha_b, bias = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_y, grad_alpha_w, grad_alpha_b = torch.ops.wfkern.mask_epilogue_backward.default(
        grad_out, y, alpha_w, labels, alpha_b, bias, ctx.channel_dim, needs[0]
    )
    return (
        grad_y if needs[0] else None,
        grad_alpha_w if needs[1] else None,
        None,
        grad_alpha_b if alpha_b is not None and needs[3] else None,
        None,  # the base layer's bias is frozen: no gradient by design
        None,
    )


def _register() -> None:
    """Attach fake and autograd rules to the ops that wfkern._C defined."""
    torch.library.register_fake("wfkern::mask_epilogue", _fake_forward)
    torch.library.register_fake("wfkern::mask_epilogue_backward", _fake_backward)
    torch.library.register_fake("wfkern::mask_epilogue_", _fake_inplace)
    torch.library.register_autograd("wfkern::mask_epilogue", _backward, setup_context=_setup_context)
