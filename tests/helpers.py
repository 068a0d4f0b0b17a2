"""Helpers the tests import: one tolerance table, input factories, kernel availability, exact fp32."""
from __future__ import annotations

import contextlib

import torch

import wfkern.ops

# One tolerance table for every kernel-vs-reference comparison.
TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
# Alpha gradients are sums over B * S products: looser for half-precision activations.
GRAD_TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-9),
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=2e-2, rtol=2e-2),
    torch.bfloat16: dict(atol=1e-1, rtol=5e-2),
}

LAYOUTS = ["nchw", "channels_last", "bnf", "strided"]
LABEL_KINDS = ["single", "all_none", "sets", "duplicates"]


def make_labels(kind: str, batch: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "single":
        labels = torch.randint(-1, num_classes, (batch,), generator=gen)
        labels[0] = -1
        return labels
    if kind == "all_none":
        return torch.full((batch,), -1, dtype=torch.long)
    if kind == "sets":
        labels = torch.randint(-1, num_classes, (batch, 3), generator=gen)
        labels[0] = -1
        return labels
    if kind == "duplicates":
        col = torch.randint(0, num_classes, (batch, 1), generator=gen)
        return torch.cat([col, col], dim=1)
    raise ValueError(kind)


def make_inputs(device, dtype, layout, *, batch=3, channels=5, spatial=(4, 3), num_classes=7, labels="single",
                bias=True, seed=0, requires_grad=False):
    """(y, alpha_w, labels, alpha_b, bias, channel_dim) for mask_epilogue in the given layout."""
    gen = torch.Generator().manual_seed(seed)
    alpha_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if layout == "bnf":
        y = torch.randn(batch, spatial[0] * spatial[1], channels, generator=gen, dtype=torch.float64)
        channel_dim = -1
    else:
        y = torch.randn(batch, channels, *spatial, generator=gen, dtype=torch.float64)
        channel_dim = 1
    y = y.to(device=device, dtype=dtype)
    if layout == "channels_last":
        y = y.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-dense slice of a wider buffer
        y = torch.cat([y, y], dim=-1)[..., ::2]
    alpha_w = (torch.randn(num_classes, channels, generator=gen, dtype=torch.float64) * 2).to(device, alpha_dtype)
    alpha_b = (torch.randn(num_classes, channels, generator=gen, dtype=torch.float64) * 2).to(device, alpha_dtype)
    b = torch.randn(channels, generator=gen, dtype=torch.float64).to(device, dtype)
    lab = make_labels(labels, batch, num_classes, gen).to(device)
    if requires_grad:
        y.requires_grad_(True)
        alpha_w.requires_grad_(True)
        alpha_b.requires_grad_(True)
    return (y, alpha_w, lab, alpha_b if bias else None, b if bias else None, channel_dim)


def has_kernel(device_type: str) -> bool:
    return wfkern.ops._load.loaded() and torch.ops.wfkern.mask_epilogue.default.has_kernel_for_dispatch_key(
        device_type.upper()
    )


@contextlib.contextmanager
def exact_fp32():
    """TF32 off for CUDA float32 comparisons (cuDNN / cuBLAS use it by default on some builds); restores it."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
