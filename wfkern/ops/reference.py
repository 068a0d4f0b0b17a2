"""Pure-PyTorch reference of every wfkern op: the oracle for the kernels and the fallback; and the one
description of an epilogue call that every implementation shares.

:class:`EpilogueCall` lists the arguments of ``mask_epilogue``, ``mask_epilogue_`` and ``mask_epilogue_ref`` in
the order of the op schema (csrc/registration.cpp), so ``torch.ops.wfkern.mask_epilogue(*call)`` runs one.
:meth:`EpilogueCall.check` is the reference's and the fake rules' check; the C++ kernels' counterpart is
csrc/epilogue_call.h, with the same error texts.

Imports nothing from wfkern. Autograd and inductor work on it as on any PyTorch code.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple, Optional, get_type_hints

import torch
from torch import Tensor

__all__ = ["EpilogueCall", "check_label_values", "gate_table_ref", "mask_epilogue_ref", "reference",
           "takes_epilogue_call"]

_FLOAT_ACTIVATIONS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _require(ok: bool, message: str, error: type = ValueError) -> None:
    # A plain branch, not torch._check_value with a closure: dynamo traces it without a graph break.
    if not ok:
        raise error(message)


class EpilogueCall(NamedTuple):
    """The arguments of one epilogue call, in the op schema's order (``save_output`` last: only the
    functional op takes it, so the in-place op takes ``call[:-1]``).

    Attributes:
        y: the wrapped layer's output including its bias: (B, C, ...) any memory format with
            channel_dim=1, or (B, ..., F) with channel_dim=-1; float32 / float16 / bfloat16 / float64.
        alpha_w: (Nc, C) float32 (float64 for gradcheck) weight-gate logits.
        labels: (B,) or (B, K) int64 classes to forget; -1 = none; a class repeated in a set counts once.
        alpha_b: (Nc, C) bias-gate logits, given together with ``bias``.
        bias: (C,) the layer's bias.
        channel_dim: 1 (convolutions) or -1 (linear layers).
        post_scale, post_shift: optional (C,) per-channel affine applied last (a folded inference
            BatchNorm: one pass instead of two), given together; treated as constants.
        save_output: let the kernel's backward keep the output instead of ``y``: no extra activation
            memory when the next layer keeps the output anyway (attention), but an in-place change of
            the output (``ReLU(inplace=True)``) then makes backward raise. The reference ignores it.
    """

    y: Tensor
    alpha_w: Tensor
    labels: Tensor
    alpha_b: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    channel_dim: int = 1
    post_scale: Optional[Tensor] = None
    post_shift: Optional[Tensor] = None
    save_output: bool = False

    def check(self) -> int:
        """Validate dtypes, shapes and devices (not label values); works on real and fake tensors.

        Returns:
            The channel dim, normalised to be non-negative.
        """
        channel_dim_index = _channel_dim(self.y, self.channel_dim)
        _check_dtypes(self)
        _check_shapes(self, channel_dim_index)
        for t in (self.alpha_w, self.labels, self.alpha_b, self.bias):
            if t is not None:
                _require(t.device == self.y.device,
                         f"wfkern.mask_epilogue: all tensors must be on {self.y.device}, got {t.device}")
        _check_post_affine(self, channel_dim_index)
        return channel_dim_index


def _channel_dim(y: Tensor, channel_dim: int) -> int:
    dim = y.dim()
    channel_dim_index = channel_dim + dim if channel_dim < 0 else channel_dim
    _require(dim >= 2 and channel_dim_index in (1, dim - 1),
             "wfkern.mask_epilogue: channel_dim must be 1 or -1 for a tensor with at least 2 dims, "
             f"got channel_dim={channel_dim} for a {dim}-d tensor")
    return channel_dim_index


def _check_dtypes(call: EpilogueCall) -> None:
    _require(call.y.dtype in _FLOAT_ACTIVATIONS,
             f"wfkern.mask_epilogue: y must be float32, float16, bfloat16 or float64, got {call.y.dtype}", TypeError)
    _require(call.alpha_w.dtype in (torch.float32, torch.float64),
             f"wfkern.mask_epilogue: alpha_w must be float32 or float64, got {call.alpha_w.dtype}", TypeError)
    _require(call.labels.dtype == torch.int64,
             f"wfkern.mask_epilogue: labels must be int64, got {call.labels.dtype}", TypeError)


def _check_shapes(call: EpilogueCall, channel_dim_index: int) -> None:
    channels, batch = call.y.shape[channel_dim_index], call.y.shape[0]
    alpha_w, labels, alpha_b, bias = call.alpha_w, call.labels, call.alpha_b, call.bias
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


def _check_post_affine(call: EpilogueCall, channel_dim_index: int) -> None:
    _require((call.post_scale is None) == (call.post_shift is None),
             "wfkern.mask_epilogue_: post_scale and post_shift must be given together")
    channels, device = call.y.shape[channel_dim_index], call.y.device
    for t in (call.post_scale, call.post_shift):
        if t is not None:
            _require(t.dim() == 1 and t.shape[0] == channels and t.device == device and t.is_floating_point(),
                     f"wfkern.mask_epilogue_: post_scale and post_shift must be floating ({channels},) tensors on "
                     f"{device}, got {tuple(t.shape)} {t.dtype} on {t.device}")


def takes_epilogue_call(fn: Callable) -> Callable:
    """Give ``fn(y, alpha_w, labels, *positional, **options)`` its signature for help() and editors: the
    options of :class:`EpilogueCall` as keyword-only arguments with their defaults. ``positional`` takes
    the same options in the schema's order, for callers that pass them so."""
    kind, hints = inspect.Parameter, get_type_hints(EpilogueCall)
    required = [kind(name, kind.POSITIONAL_OR_KEYWORD, annotation=Tensor) for name in ("y", "alpha_w", "labels")]
    options = [kind(name, kind.KEYWORD_ONLY, default=default, annotation=hints[name])
               for name, default in EpilogueCall._field_defaults.items()]
    fn.__signature__ = inspect.Signature(required + [kind("positional", kind.VAR_POSITIONAL)] + options,
                                         return_annotation=inspect.signature(fn).return_annotation)
    return fn


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


@takes_epilogue_call
def mask_epilogue_ref(y: Tensor, alpha_w: Tensor, labels: Tensor, *positional, **options) -> Tensor:
    """Mask each sample's output channels by the gates of the class(es) it forgets.

    ``out = (y - bias) * gate(alpha_w) + bias * gate(alpha_b)``: for a per-channel mask this equals
    running the layer with weight ``W * gate_w`` and bias ``bias * gate_b``; then
    ``out * post_scale + post_shift`` when those are given.

    Takes the arguments of :class:`EpilogueCall` (the optional ones by keyword,
    or positionally in its order). Labels outside [-1, Nc) raise when they are on the CPU (a ValueError
    naming the label; a RuntimeError under torch.compile); CUDA labels are not read back to the host:
    that sample's output is NaN.

    Returns:
        Like ``y`` (shape, dtype); math in float32 (float64 for float64 input).
    """
    return reference(EpilogueCall(y, alpha_w, labels, *positional, **options))


def reference(call: EpilogueCall) -> Tensor:
    """:func:`mask_epilogue_ref` of a call already described."""
    channel_dim_index = call.check()
    y, alpha_w, labels = call.y, call.alpha_w, call.labels
    if labels.device.type == "cpu":  # host labels are free to read: raise now
        if torch.compiler.is_compiling():
            torch._assert_async(((labels >= -1) & (labels < alpha_w.shape[0])).all(),
                                f"wfkern.mask_epilogue: labels must be in [-1, {alpha_w.shape[0]}) (-1 = forget nothing)")
        else:
            check_label_values(labels, alpha_w.shape[0])
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    view = [y.shape[0]] + [1] * (y.dim() - 1)
    view[channel_dim_index] = y.shape[channel_dim_index]
    mask_w = gate_table_ref(alpha_w, labels, dtype)
    out = y.to(dtype) * mask_w.view(view)
    if call.bias is not None:
        mask_b = gate_table_ref(call.alpha_b, labels, dtype)
        out = out + (call.bias.to(dtype) * (mask_b - mask_w)).view(view)
    if call.post_scale is not None:
        shape = [1] * y.dim()
        shape[channel_dim_index] = y.shape[channel_dim_index]
        out = out * call.post_scale.to(dtype).view(shape) + call.post_shift.to(dtype).view(shape)
    return out.to(y.dtype)
