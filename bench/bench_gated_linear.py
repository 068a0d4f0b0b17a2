"""A ViT-S/16 qkv projection (B=256, N=197, 384 -> 1152, bf16) with per-sample gates: the plain linear layer,
the linear layer followed by the epilogue op (today's WF path), and the gates inside the GEMM (Triton).

GPU only (the Triton kernel has no CPU path outside the interpreter). Run: python -m pytest
bench/bench_gated_linear.py --benchmark-only --device cuda; the question is fused / plain <= 1.05.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wfkern
from common import synced
from configs import ROUNDS
from wfkern.ops.gated_linear import gated_linear, gated_linear_ref, triton_linear_available

BATCH, TOKENS, DIM = 256, 197, 384


@pytest.mark.parametrize("impl", ["plain", "linear_then_epilogue", "fused"])
def test_qkv_fwd(benchmark, bench_device, impl):
    if bench_device != "cuda" or not triton_linear_available():
        pytest.skip("needs a CUDA GPU and Triton")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(BATCH, TOKENS, DIM, device="cuda", generator=gen).bfloat16()
    weight = (torch.randn(3 * DIM, DIM, device="cuda", generator=gen) / DIM ** 0.5).bfloat16()
    bias = torch.randn(3 * DIM, device="cuda", generator=gen).bfloat16()
    alpha_w = torch.randn(10, 3 * DIM, device="cuda", generator=gen)
    alpha_b = torch.randn(10, 3 * DIM, device="cuda", generator=gen)
    labels = torch.randint(-1, 10, (BATCH,), device="cuda", generator=gen)
    fns = {
        "plain": lambda: F.linear(x, weight, bias),
        "linear_then_epilogue": lambda: wfkern.ops.mask_epilogue_(F.linear(x, weight, bias), alpha_w, labels,
                                                                  alpha_b, bias, -1),
        "fused": lambda: gated_linear(x, weight, bias, alpha_w, alpha_b, labels),
    }
    benchmark.group = "qkv-fwd"
    benchmark.extra_info.update(impl=impl, backend=wfkern.backend(), dtype="bf16", layout="bnf", batch=BATCH,
                                launches=1)
    with torch.no_grad():
        benchmark.pedantic(synced(fns[impl], bench_device), **ROUNDS[bench_device])
        if impl != "plain":  # checked outside the timed region
            ref = gated_linear_ref(x.float(), weight.float(), bias.float(), alpha_w, alpha_b, labels)
            torch.testing.assert_close(fns[impl]().float(), ref, atol=0.1, rtol=0.05)
