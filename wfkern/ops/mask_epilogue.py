"""The mask epilogue ops: their wrappers and fake (meta) rules (the autograd kernel is C++, csrc/)."""
from __future__ import annotations

import torch
from torch import Tensor

from wfkern.ops import _load
from wfkern.ops.reference import EpilogueCall, reference, takes_epilogue_call

__all__ = ["mask_epilogue", "mask_epilogue_", "raise_label_errors"]


@takes_epilogue_call
def mask_epilogue(y: Tensor, alpha_w: Tensor, labels: Tensor, *positional, **options) -> Tensor:
    """Mask each sample's output channels by the gates of the class(es) it forgets.

    Runs the compiled kernel for y's device when there is one, else :func:`mask_epilogue_ref`
    (same arguments, same result). Differentiable in ``y``, ``alpha_w`` and ``alpha_b``.

    Args:
        y, alpha_w, labels: as :class:`~wfkern.ops.reference.EpilogueCall` says. A label outside
            [-1, Nc) is a ValueError: at once for CPU tensors; for CUDA tensors (checked on the device,
            no host synchronisation) that sample's output is NaN and :func:`raise_label_errors` raises.
        positional, options: the optional arguments of :class:`~wfkern.ops.reference.EpilogueCall`
            (alpha_b, bias, channel_dim, post_scale, post_shift, save_output), keyword-only; or
            positional, in that order.
    Returns:
        Like ``y`` (shape, dtype, memory format).
    """
    call = EpilogueCall(y, alpha_w, labels, *positional, **options)
    if not _load.kernel_for(y.device.type):
        return reference(call)
    return torch.ops.wfkern.mask_epilogue.default(*call)


@takes_epilogue_call
def mask_epilogue_(y: Tensor, alpha_w: Tensor, labels: Tensor, *positional, **options) -> Tensor:
    """In-place :func:`mask_epilogue` for inference: overwrites and returns ``y``.

    Saves an allocation and a cold write per layer. Not differentiable: use it only where autograd
    does not need ``y`` (no grad mode, or nothing requires grad). Same arguments as :func:`mask_epilogue`
    (``save_output`` has nothing to do here).
    """
    call = EpilogueCall(y, alpha_w, labels, *positional, **options)
    if not _load.kernel_for(y.device.type):
        return y.copy_(reference(call))
    torch.ops.wfkern.mask_epilogue_.default(*call[:-1])
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


# The fake rules get the op's arguments as the dispatcher passes them (trailing defaults may be left out).
def _fake_inplace(*args, **kwargs) -> None:
    EpilogueCall(*args, **kwargs).check()


def _fake_forward(*args, **kwargs) -> Tensor:
    call = EpilogueCall(*args, **kwargs)
    call.check()
    return torch.empty_like(call.y)


def _fake_backward(grad_out, saved, alpha_w, labels, *rest):
    *options, _saved_is_output, compute_grad_y = rest  # alpha_b .. post_shift, then the two flags
    EpilogueCall(saved, alpha_w, labels, *options).check()
    grad_y = torch.empty_like(saved) if compute_grad_y else saved.new_empty(0)
    alpha_b = options[0]
    grad_alpha_b = torch.empty_like(alpha_b) if alpha_b is not None else alpha_w.new_empty(0)
    return grad_y, torch.empty_like(alpha_w), grad_alpha_b


def _register() -> None:
    """Attach fake rules to the ops that wfkern._C defined (their autograd is registered in C++)."""
    torch.library.register_fake("wfkern::mask_epilogue", _fake_forward)
    torch.library.register_fake("wfkern::mask_epilogue_backward", _fake_backward)
    torch.library.register_fake("wfkern::mask_epilogue_", _fake_inplace)
