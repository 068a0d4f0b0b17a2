"""The gates inside the linear layer's GEMM (Triton): the kernel against its reference.

On the CPU the kernel runs under Triton's interpreter in a subprocess (the interpreter must be chosen before
Triton loads); on a GPU the ``*_cuda`` tests run it natively (``bench/gpu_check.sh`` selects them).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import TOL
from wfkern.ops.gated_linear import gated_linear, gated_linear_ref, triton_linear_available

HERE = os.path.dirname(os.path.abspath(__file__))


def test_gated_linear_matches_ref_under_the_interpreter():
    pytest.importorskip("triton")
    if not hasattr(torch.library, "triton_op"):
        pytest.skip("torch.library.triton_op needs torch >= 2.6")
    env = dict(os.environ, TRITON_INTERPRET="1", WFKERN_TRITON_LINEAR="1")
    run = subprocess.run([sys.executable, os.path.join(HERE, "_gated_linear_interpret.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.count("ok ") == 3 * 4 * 3 + 2


def test_gated_linear_without_a_gpu_or_interpreter_says_what_it_needs():
    if triton_linear_available():
        pytest.skip("the kernel can run here")
    x, w, alpha = torch.randn(2, 4), torch.randn(6, 4), torch.zeros(3, 6)
    with pytest.raises(RuntimeError, match=r"wfkern.gated_linear: needs Triton and a CUDA GPU"):
        gated_linear(x, w, None, alpha, None, torch.tensor([0, -1]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gated_linear_matches_ref_cuda(dtype, with_bias):
    if not (torch.cuda.is_available() and triton_linear_available()):
        pytest.skip("needs a CUDA GPU and Triton")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(8, 197, 384, device="cuda", generator=gen).to(dtype)
    w = (torch.randn(1152, 384, device="cuda", generator=gen) / 20).to(dtype)
    b = torch.randn(1152, device="cuda", generator=gen).to(dtype) if with_bias else None
    alpha_w = torch.randn(10, 1152, device="cuda", generator=gen) * 3
    alpha_b = torch.randn(10, 1152, device="cuda", generator=gen) * 3 if with_bias else None
    labels = torch.tensor([[3, -1], [-1, -1], [0, 9], [5, 5], [1, 2], [-1, 4], [7, -1], [8, 8]], device="cuda")
    out = gated_linear(x, w, b, alpha_w, alpha_b, labels)
    ref = gated_linear_ref(x.float(), w.float(), None if b is None else b.float(), alpha_w, alpha_b, labels)
    torch.testing.assert_close(out.float(), ref, atol=TOL[dtype]["atol"] * 8, rtol=TOL[dtype]["rtol"] * 4)
