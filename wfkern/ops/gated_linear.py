"""A linear layer with the per-sample gates applied inside the GEMM (Triton): no separate pass over the output.

``out[b, n, f] = (x[b, n] · W[f]) · g_w[b, f] + bias[f] · g_b[b, f]``, with ``g_w`` / ``g_b`` the per-sample gate
tables of the forget labels (:func:`wfkern.ops.gate_table_ref`): the epilogue of ``mask_epilogue`` fused into
the matrix multiply that produces its input. For inference (no autograd rule): the WF linear layers use it only
for a forward without grad on a GPU, and only when ``WFKERN_TRITON_LINEAR=1`` (off by default until a GPU run
has measured it). The kernel's correctness is tested on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``) against :func:`gated_linear_ref`.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wfkern.ops.reference import gate_table_ref, mask_epilogue_ref

__all__ = ["gated_linear", "gated_linear_ref", "triton_linear_available", "triton_linear_enabled", "uses_fused_linear"]

_ENV = "WFKERN_TRITON_LINEAR"
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

try:  # Triton ships with CUDA builds of torch; torch.library.triton_op needs torch >= 2.6
    import triton
    import triton.language as tl

    _HAVE_TRITON = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
except ImportError:  # pragma: no cover - CPU-only torch builds
    _HAVE_TRITON = False


def gated_linear_ref(x: Tensor, weight: Tensor, bias: Optional[Tensor], alpha_w: Tensor, alpha_b: Optional[Tensor],
                     labels: Tensor) -> Tensor:
    """The oracle: ``mask_epilogue_ref(linear(x, weight, bias), ...)`` with the channels last.

    Args:
        x: (B, ..., K) activations; fp32 / fp16 / bf16.  weight: (F, K).  bias: (F,) or None.
        alpha_w: (Nc, F) fp32 weight-gate logits.  alpha_b: (Nc, F) bias-gate logits, with ``bias``.
        labels: (B,) or (B, K) int64, -1 = forget nothing.
    Returns:
        (B, ..., F) like ``x``'s dtype.
    """
    y = F.linear(x, weight, bias)
    alpha_b = alpha_b if bias is not None else None
    return mask_epilogue_ref(y, alpha_w, labels, alpha_b=alpha_b, bias=bias, channel_dim=-1)


def triton_linear_available() -> bool:
    """Whether the Triton kernel can run here: Triton installed, and a GPU or Triton's CPU interpreter."""
    return _HAVE_TRITON and (torch.cuda.is_available() or _INTERPRET)


def triton_linear_enabled() -> bool:
    """Whether WF linear layers use the fused kernel (``WFKERN_TRITON_LINEAR=1`` and it is available)."""
    return os.environ.get(_ENV, "0") == "1" and triton_linear_available()


def uses_fused_linear(x: Tensor, alpha_w: Tensor) -> bool:
    """Whether a WF linear layer runs this call through the fused kernel: switched on, an inference forward
    (no autograd), on a GPU (or the CPU under Triton's interpreter), outside a torch.compile trace."""
    if not triton_linear_enabled() or torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or alpha_w.requires_grad):
        return False
    return x.is_cuda or (_INTERPRET and x.device.type == "cpu")


if _HAVE_TRITON:

    @triton.jit
    def _gated_linear_kernel(x_ptr, w_ptr, bias_ptr, gw_ptr, gb_ptr, out_ptr, M, F_OUT, K, TOKENS,
                             stride_xm, stride_xk, stride_wf, stride_wk, stride_om, stride_of, stride_gs, stride_gf,
                             HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
        ks = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_F), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + ks
            a = tl.load(x_ptr + rows[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=(rows[:, None] < M) & (k[None, :] < K), other=0.0)
            b = tl.load(w_ptr + cols[None, :] * stride_wf + k[:, None] * stride_wk,
                        mask=(cols[None, :] < F_OUT) & (k[:, None] < K), other=0.0)
            if UPCAST:  # Triton's interpreter computes bf16 dots wrongly: it checks the math in fp32
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:  # fp32 stays fp32 (no TF32), as torch's own linear by default
                acc += tl.dot(a, b, input_precision="ieee")
            else:
                acc += tl.dot(a, b)
        # The epilogue: each row's sample picks its gates; the bias gets its own gate.
        inside = (rows[:, None] < M) & (cols[None, :] < F_OUT)
        gate_at = (rows // TOKENS)[:, None] * stride_gs + cols[None, :] * stride_gf
        out = acc * tl.load(gw_ptr + gate_at, mask=inside, other=1.0)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + cols, mask=cols < F_OUT, other=0.0).to(tl.float32)
            out += bias[None, :] * tl.load(gb_ptr + gate_at, mask=inside, other=1.0)
        tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_of,
                 out.to(out_ptr.dtype.element_ty), mask=inside)

    @torch.library.triton_op("wfkern::gated_linear", mutates_args=())
    def _gated_linear_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], gate_w: Tensor,
                         gate_b: Optional[Tensor]) -> Tensor:
        batch, features = gate_w.shape
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty((flat.shape[0], features), dtype=x.dtype, device=x.device)
        tokens = max(flat.shape[0] // max(batch, 1), 1)
        block_m, block_f, block_k = (16, 32, 16) if _INTERPRET else (64, 128, 32)
        grid = (triton.cdiv(flat.shape[0], block_m), triton.cdiv(features, block_f))
        has_bias = bias is not None
        torch.library.wrap_triton(_gated_linear_kernel)[grid](
            flat, weight, bias if has_bias else gate_w, gate_w, gate_b if has_bias else gate_w, out,
            flat.shape[0], features, flat.shape[1], tokens,
            flat.stride(0), flat.stride(1), weight.stride(0), weight.stride(1), out.stride(0), out.stride(1),
            gate_w.stride(0), gate_w.stride(1),
            HAS_BIAS=has_bias, UPCAST=_INTERPRET and x.dtype == torch.bfloat16,
            IEEE=x.dtype == torch.float32 or (_INTERPRET and x.dtype == torch.bfloat16),
            BLOCK_M=block_m, BLOCK_F=block_f, BLOCK_K=block_k)
        return out.view(*x.shape[:-1], features)


def gated_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], alpha_w: Tensor, alpha_b: Optional[Tensor],
                 labels: Tensor) -> Tensor:
    """The fused kernel (same arguments and result as :func:`gated_linear_ref`); inference only.

    Raises:
        RuntimeError: Triton (with ``torch.library.triton_op``) is missing, or no GPU and no interpreter.
    """
    if not triton_linear_available():
        raise RuntimeError("wfkern.gated_linear: needs Triton and a CUDA GPU (or TRITON_INTERPRET=1 on the CPU); "
                           "use gated_linear_ref")
    math_dtype = torch.float32
    gate_w = gate_table_ref(alpha_w, labels, math_dtype).contiguous()
    gate_b = gate_table_ref(alpha_b, labels, math_dtype).contiguous() if bias is not None else None
    return torch.ops.wfkern.gated_linear(x, weight, bias, gate_w, gate_b)
