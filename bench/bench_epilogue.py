"""Op level: the mask epilogue against a same-size copy (bytes moved / time)."""
from __future__ import annotations

import pytest
import torch

import wfkern
from wfkern.ops import mask_epilogue_ref
from configs import DTYPE, ROUNDS
from common import synced

SHAPES = {"cpu": (32, 64, 32, 32), "cuda": (256, 64, 112, 112)}  # (B, C, H, W): a ResNet stem output


def _inputs(device, layout):
    batch, channels, height, width = SHAPES[device]
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(batch, channels, height, width, generator=gen).to(device, DTYPE[device])
    if layout == "channels_last":
        y = y.contiguous(memory_format=torch.channels_last)
    alpha_w = torch.randn(10, channels, generator=gen).to(device)
    alpha_b = torch.randn(10, channels, generator=gen).to(device)
    bias = torch.randn(channels, generator=gen).to(device, DTYPE[device])
    labels = torch.randint(-1, 10, (batch,), generator=gen).to(device)
    return y, alpha_w, labels, alpha_b, bias


def _require_kernel(impl, device):
    if impl.startswith("kernel") and not wfkern.ops._load.kernel_for(device):
        pytest.skip(f"wfkern._C has no {device} kernel")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["copy", "ref", "kernel", "kernel_inplace"])
def test_epilogue_fwd(benchmark, bench_device, impl, layout):
    _require_kernel(impl, bench_device)
    y, alpha_w, labels, alpha_b, bias = _inputs(bench_device, layout)
    buf = torch.empty_like(y)
    fns = {
        "copy": lambda: buf.copy_(y),
        "ref": lambda: mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, 1),
        "kernel": lambda: torch.ops.wfkern.mask_epilogue(y, alpha_w, labels, alpha_b, bias, 1),
        "kernel_inplace": lambda: torch.ops.wfkern.mask_epilogue_(buf, alpha_w, labels, alpha_b, bias, 1),
    }
    benchmark.group = f"epilogue-fwd-{layout}"
    benchmark.extra_info.update(impl=impl, backend=wfkern.backend(), dtype=str(y.dtype), layout=layout,
                                batch=y.shape[0], launches=1, bytes=2 * y.numel() * y.element_size())
    def reset():  # the in-place kernel overwrites buf: start each round from y
        buf.copy_(y)

    with torch.no_grad():
        benchmark.pedantic(synced(fns[impl], bench_device), setup=reset, **ROUNDS[bench_device])
        if impl != "copy":  # check outside the timed region
            buf.copy_(y)
            out = fns[impl]()
            torch.testing.assert_close(buf if out is None else out,
                                       mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, 1), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("impl", ["copy", "ref", "kernel"])
def test_epilogue_bwd(benchmark, bench_device, impl):
    _require_kernel(impl, bench_device)
    y, alpha_w, labels, alpha_b, bias = _inputs(bench_device, "nchw")
    grad = torch.randn_like(y)
    buf = torch.empty_like(y)

    def ref():
        y_ = y.detach().requires_grad_(True)
        aw, ab = alpha_w.detach().requires_grad_(True), alpha_b.detach().requires_grad_(True)
        return torch.autograd.grad(mask_epilogue_ref(y_, aw, labels, ab, bias, 1), (y_, aw, ab), grad)

    fns = {
        "copy": lambda: buf.copy_(y),
        "ref": ref,
        "kernel": lambda: torch.ops.wfkern.mask_epilogue_backward(grad, y, alpha_w, labels, alpha_b, bias, 1, None, None, False, True),
    }
    benchmark.group = "epilogue-bwd"
    # the backward reads grad_out and y and writes grad_y: three tensors of y's size (copy moves two)
    moved = (2 if impl == "copy" else 3) * y.numel() * y.element_size()
    benchmark.extra_info.update(impl=impl, backend=wfkern.backend(), dtype=str(y.dtype), layout="nchw",
                                batch=y.shape[0], launches=1, bytes=moved)
    benchmark.pedantic(synced(fns[impl], bench_device), **ROUNDS[bench_device])
