"""Run by tests/test_ops_gated_linear.py in a subprocess with TRITON_INTERPRET=1 (set before Triton loads).

Checks the fused gated-linear kernel against its reference on the CPU, through the op and through a WF
layer with WFKERN_TRITON_LINEAR=1; prints one line per case and exits non-zero on the first mismatch.
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("WFKERN_TRITON_LINEAR") == "1"

import torch  # noqa: E402
from torch import nn  # noqa: E402

import wfkern  # noqa: E402
from wfkern.ops.gated_linear import gated_linear, gated_linear_ref, uses_fused_linear  # noqa: E402

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
       torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}
gen = torch.Generator().manual_seed(0)
NC, FEATURES = 7, 3 * 20


def labels_of(kind, batch):
    if kind == "single":
        labels = torch.randint(-1, NC, (batch,), generator=gen)
    elif kind == "sets":
        labels = torch.randint(-1, NC, (batch, 3), generator=gen)
    else:  # duplicates: a set naming one class twice counts it once
        labels = torch.randint(0, NC, (batch, 1), generator=gen).repeat(1, 2)
    labels[0] = -1
    return labels


for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for shape in ((3, 5, 24), (4, 24), (2, 17, 40), (1, 1, 8)):
        x = torch.randn(*shape, generator=gen).to(dtype)
        weight = (torch.randn(FEATURES, shape[-1], generator=gen) / shape[-1] ** 0.5).to(dtype)
        bias = torch.randn(FEATURES, generator=gen).to(dtype)
        alpha_w, alpha_b = torch.randn(NC, FEATURES, generator=gen) * 3, torch.randn(NC, FEATURES, generator=gen) * 3
        for kind in ("single", "sets", "duplicates"):
            labels = labels_of(kind, shape[0])
            for b, ab in ((bias, alpha_b), (None, None)):
                out = gated_linear(x, weight, b, alpha_w, ab, labels)
                ref = gated_linear_ref(x, weight, b, alpha_w, ab, labels)
                assert out.dtype == dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.shape)
                torch.testing.assert_close(out, ref, **TOL[dtype])
                # a row that forgets nothing is the plain linear layer (to its rounding)
                torch.testing.assert_close(out[0], torch.nn.functional.linear(x, weight, b)[0], **TOL[dtype])
            print("ok", dtype, shape, kind)

# A label outside [-1, Nc) makes that sample NaN (as the CUDA epilogue does), never an out-of-range read.
x, weight = torch.randn(2, 3, 8, generator=gen), torch.randn(16, 8, generator=gen)
alpha = torch.randn(NC, 16, generator=gen)
out = gated_linear(x, weight, None, alpha, None, torch.tensor([NC, 1]))
assert torch.isnan(out[0]).all() and not torch.isnan(out[1]).any()
print("ok bad label -> NaN row")

# Through a WF model: the switch routes inference (not training) of timm-style qkv layers to the kernel.
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.head = nn.Linear(24, NC)

    def forward(self, x):
        return self.head(self.qkv(x).mean(1))


wf = wfkern.patch(Block().eval(), NC)
with torch.no_grad():
    for p in wf.gate_parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * 3)
x = torch.randn(4, 6, 8, generator=gen)
labels = torch.tensor([[2, 5], [-1, -1], [0, -1], [6, 6]])
with torch.no_grad():
    assert uses_fused_linear(x, wf.gate_parameters()[0])
    fused = wf(x, forget=labels)
    os.environ["WFKERN_TRITON_LINEAR"] = "0"
    assert not uses_fused_linear(x, wf.gate_parameters()[0])
    plain = wf(x, forget=labels)
    os.environ["WFKERN_TRITON_LINEAR"] = "1"
torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
assert not uses_fused_linear(x.requires_grad_(), wf.gate_parameters()[0])  # training keeps the autograd op
print("ok WF layer routing")
sys.exit(0)
