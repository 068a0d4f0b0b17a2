"""What only a GPU can show: grid limits, device checks, labels checked on the device, CUDA graphs, streams."""
from __future__ import annotations

import pytest
import torch
import torchvision

import wfkern
from wfkern.ops import _load, mask_epilogue, mask_epilogue_ref, raise_label_errors
from helpers import GRAD_TOL, TOL

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible"),
    pytest.mark.skipif(not _load.kernel_for("cuda"), reason="wfkern._C has no CUDA kernel"),
]


def _grads_match_ref(y, aw, labels, cd):
    y, aw = y.requires_grad_(True), aw.requires_grad_(True)
    out = torch.ops.wfkern.mask_epilogue(y, aw, labels, None, None, cd)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (y, aw), grad)
    y64, aw64 = y.detach().double().requires_grad_(True), aw.detach().double().requires_grad_(True)
    ref = mask_epilogue_ref(y64, aw64, labels, None, None, cd)
    want = torch.autograd.grad(ref, (y64, aw64), grad.double())
    torch.testing.assert_close(out, ref.float(), **TOL[torch.float32])
    torch.testing.assert_close(got[0], want[0].float(), **TOL[torch.float32])
    torch.testing.assert_close(got[1], want[1].float(), atol=1e-2, rtol=1e-4)


# one channel: blocks of 256 rows, tiles of 2048 rows, so 65,535 * 2048 + 5 rows make 65,537 tiles
@pytest.mark.parametrize("shape", [(65536 + 3, 64), (1, 65535 * 2048 + 5, 1), (3, 1000, 8)],
                         ids=["batch_65539", "tiles_65537", "tiles_cross_samples"])
def test_cuda_rows_backward_beyond_grid_limits(shape):
    """The rows-layout backward once refused more than 65,535 samples or row tiles; the CPU never did."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(shape, generator=gen).cuda()
    aw = torch.randn(5, shape[-1], generator=gen).cuda()
    labels = torch.randint(-1, 5, (shape[0],), generator=gen).cuda()
    _grads_match_ref(y, aw, labels, -1)


@pytest.mark.parametrize("batch", [0, 1, 300, 1500])
def test_cuda_gate_grads_beyond_the_class_grid_limit(batch):
    """65,537 classes (past the grid's y limit), label sets with repeats and -1, batches around the scatter's
    1024-sample chunk: the gate gradients of whichever scatter is built (WFKERN_LABEL_SCATTER) match the ref."""
    gen = torch.Generator().manual_seed(0)
    num_classes, channels = 65537, 24
    y = torch.randn(batch, channels, 3, 3, generator=gen).cuda()
    aw = torch.randn(num_classes, channels, generator=gen).cuda()
    labels = torch.randint(-1, num_classes, (batch, 3), generator=gen)
    if batch > 1:
        labels[0] = -1
        labels[1] = torch.tensor([num_classes - 1, num_classes - 1, 7])  # a repeat counts once; the last class
        labels[-1, :2] = 7  # class 7 from several samples
    _grads_match_ref(y, aw, labels.cuda(), 1)


@pytest.mark.parametrize("bad", [5, 1000, -2, -(2**40)])
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_bad_device_labels_poison_and_raise(bad, compiled):
    """Labels on the GPU are checked there: the sample's output is NaN and the host learns of it, without a sync."""
    y = torch.randn(4, 3, 2, 2, device="cuda")
    aw = torch.randn(5, 3, device="cuda")
    labels = torch.tensor([[0, -1], [1, bad], [-1, -1], [4, 4]], device="cuda")
    fn = lambda y, aw, labels: mask_epilogue(y, aw, labels) * 1  # noqa: E731
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True)
    out = fn(y, aw, labels)
    torch.cuda.synchronize()
    assert out[1].isnan().all() and not out[[0, 2, 3]].isnan().any()
    with pytest.raises(ValueError, match=rf"labels must be in \[-1, 5\).*got {bad}.*found on the GPU"):
        raise_label_errors()
    raise_label_errors()  # reported once, then clear
    torch.testing.assert_close(fn(y, aw, labels.clamp(-1, 4)), mask_epilogue_ref(y, aw, labels.clamp(-1, 4)))


def test_cuda_model_raises_a_bad_device_label_at_its_next_call():
    _, wf = _small_resnet()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with torch.no_grad():
        wf(x, forget=torch.tensor([9, 10], device="cuda"))
        torch.cuda.synchronize()
        with pytest.raises(ValueError, match=r"labels must be in \[-1, 10\).*got 10"):
            wf(x, forget=torch.tensor([1, 0], device="cuda"))
        wf(x, forget=torch.tensor([1, 0], device="cuda"))  # reported once


def test_cuda_graph_replays_with_new_labels():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(8, 16, 5, 5, generator=gen).cuda()
    aw = torch.randn(6, 16, generator=gen).cuda()
    ab = torch.randn(6, 16, generator=gen).cuda()
    bias = torch.randn(16, generator=gen).cuda()
    labels = torch.zeros(8, dtype=torch.long, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs asks
        torch.ops.wfkern.mask_epilogue(y, aw, labels, ab, bias, 1)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.wfkern.mask_epilogue(y, aw, labels, ab, bias, 1)
    for seed in range(3):
        new = torch.randint(-1, 6, (8,), generator=torch.Generator().manual_seed(seed)).cuda()
        labels.copy_(new)
        graph.replay()
        torch.testing.assert_close(out, mask_epilogue_ref(y, aw, new, ab, bias, 1), **TOL[torch.float32])


def test_cuda_inputs_from_a_side_stream():
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y = torch.randn(64, 32, 9, 9, device="cuda")
        aw = torch.randn(4, 32, device="cuda")
        labels = torch.randint(-1, 4, (64,), device="cuda")
        out = torch.ops.wfkern.mask_epilogue(y, aw, labels)
    side.synchronize()
    torch.testing.assert_close(out, mask_epilogue_ref(y, aw, labels), **TOL[torch.float32])


def _small_resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().cuda()
    wf = wfkern.patch(model, 10)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 3)
    return model, wf


def test_cuda_model_graph_capture_with_device_labels():
    """An eager WFModel forward with labels on the GPU has no host synchronisation: it can be captured."""
    _, wf = _small_resnet()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    labels = torch.tensor([3, -1, 0, 9], device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(2):
            wf(x, forget=labels)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = wf(x, forget=labels)
    for new in ([9, 9, -1, 2], [-1, -1, -1, -1], [0, 1, 2, 3]):
        labels.copy_(torch.tensor(new))
        graph.replay()
        with torch.no_grad():
            torch.testing.assert_close(out, wf(x, forget=torch.tensor(new)), atol=1e-4, rtol=1e-4)


def test_cuda_model_compiled_reduce_overhead_follows_labels():
    _, wf = _small_resnet()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(wf, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for new in ([3, -1, 0, 9], [9, 9, -1, 2], [0, 1, 2, 3], [5, 5, 5, 5]):
            labels = torch.tensor(new, device="cuda")
            torch.testing.assert_close(compiled(x, forget=labels), wf(x, forget=labels), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_untraining_step_matches_reference(dtype):
    """Forward + backward to the gates through the C++ autograd node, against the reference path."""
    _, wf = _small_resnet()
    wf = wf.to(dtype)
    x = torch.randn(6, 3, 32, 32, device="cuda", dtype=dtype)
    labels = torch.tensor([[3, -1], [-1, -1], [0, 9], [1, 1], [2, -1], [7, 8]], device="cuda")
    target = torch.arange(6, device="cuda")
    grads = []
    for reference in (False, True):
        wf.zero_grad()
        with wfkern.use_reference(reference):
            torch.nn.functional.cross_entropy(wf(x, forget=labels).float(), target).backward()
        grads.append([p.grad.float().clone() for p in wf.gate_parameters()])
    tol = GRAD_TOL[torch.float32] if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, **tol)


# Last in the file: an error raised inside a CUDA op once crashed a process on a GPU machine.
def test_cuda_backward_rejects_grad_out_on_another_device():
    y = torch.randn(2, 3, 4, device="cuda")
    aw = torch.randn(5, 3, device="cuda")
    labels = torch.tensor([0, -1], device="cuda")
    with pytest.raises(ValueError, match="grad_out must match y in shape, dtype and device"):
        torch.ops.wfkern.mask_epilogue_backward(torch.randn(2, 3, 4), y, aw, labels, None, None, 1, None, None, False, True)
    torch.cuda.synchronize()  # the context survived
