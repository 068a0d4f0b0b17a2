"""mask_epilogue: every kernel against the pure-PyTorch reference, plus the reference against hand math."""
from __future__ import annotations

import math

import pytest
import torch

from wfkern.ops import check_label_values, gate_table_ref, mask_epilogue, mask_epilogue_ref, raise_label_errors
from helpers import GRAD_TOL, LABEL_KINDS, LAYOUTS, TOL, make_inputs
from wfkern.ops import _load

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SPATIAL = [(4, 3), (1, 1), (8, 8), (3, 43), (16, 17)]  # planes below and above the lane threshold


def _op(*args):
    return torch.ops.wfkern.mask_epilogue(*args)  # the kernel itself, never the wrapper


def _detached(args):
    return tuple(a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args)


# ---- the reference against hand-computed values -------------------------------------------------

def test_mask_epilogue_ref_hand_computed():
    y = torch.tensor([[2.0], [2.0]])  # (B=2, C=1); y includes bias 1
    alpha_w = torch.tensor([[math.log(3.0)]])  # sigmoid = 0.75
    alpha_b = torch.tensor([[0.0]])  # sigmoid = 0.5
    out = mask_epilogue_ref(y, alpha_w, torch.tensor([0, -1]), alpha_b, torch.tensor([1.0]), channel_dim=1)
    # sample 0: (2 - 1) * 0.75 + 1 * 0.5 = 1.25; sample 1 forgets nothing: 2
    torch.testing.assert_close(out, torch.tensor([[1.25], [2.0]]))


def test_gate_table_ref_multiplies_sets():
    alpha = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # gates [.5, .75], [.75, .5]
    labels = torch.tensor([[0, 1, -1], [1, -1, -1], [-1, -1, -1], [0, 0, -1], [1, 0, 1]])
    # a set counts each class once: [0, 0] is class 0's gates, not their square
    expected = torch.tensor([[0.375, 0.375], [0.75, 0.5], [1.0, 1.0], [0.5, 0.75], [0.375, 0.375]])
    torch.testing.assert_close(gate_table_ref(alpha, labels, torch.float32), expected)


# ---- kernels against the reference --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("labels", LABEL_KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_mask_epilogue_matches_ref(kernel_device, dtype, layout, labels, bias):
    args = make_inputs(kernel_device, dtype, layout, labels=labels, bias=bias)
    out = _op(*args)
    torch.testing.assert_close(out, mask_epilogue_ref(*args), **TOL[dtype])
    assert out.dtype == dtype and out.stride() == torch.empty_like(args[0]).stride()


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("channels", [1, 8, 13])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "bnf"])
def test_mask_epilogue_matches_ref_sizes(kernel_device, spatial, channels, batch, layout):
    for dtype in (torch.float32, torch.bfloat16):
        args = make_inputs(kernel_device, dtype, layout, batch=batch, channels=channels, spatial=spatial, labels="sets",
                           requires_grad=True)
        ref_args = _detached(args)
        out, ref = _op(*args), mask_epilogue_ref(*ref_args)
        torch.testing.assert_close(out, ref, **TOL[dtype])
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
        got = torch.autograd.grad(out, (args[0], args[1], args[3]), grad)
        want = torch.autograd.grad(ref, (ref_args[0], ref_args[1], ref_args[3]), grad)
        torch.testing.assert_close(got[0], want[0], **TOL[dtype])
        for g, w in zip(got[1:], want[1:]):
            torch.testing.assert_close(g, w, **GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("labels", ["single", "sets"])
def test_mask_epilogue_inplace_matches_ref(kernel_device, dtype, layout, labels):
    args = make_inputs(kernel_device, dtype, layout, labels=labels)
    expected = mask_epilogue_ref(*args)
    y = args[0].clone()
    strides, ptr = y.stride(), y.data_ptr()
    assert torch.ops.wfkern.mask_epilogue_(y, *args[1:]) is None
    torch.testing.assert_close(y, expected, **TOL[dtype])
    assert y.stride() == strides and y.data_ptr() == ptr
    torch.library.opcheck(torch.ops.wfkern.mask_epilogue_.default, (args[0].clone(),) + args[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "bnf"])
def test_mask_epilogue_bias_and_post_affine_in_their_own_dtypes(kernel_device, dtype, side_dtype, layout):
    """A bias and a post affine whose dtype is not y's (an fp32 bias under bf16 activations, a bf16 BatchNorm
    under fp32 ones): every kernel reads them as given, out of place and in place, and matches the reference."""
    args = make_inputs(kernel_device, dtype, layout, labels="sets", bias=True, batch=5, channels=16)
    gen = torch.Generator().manual_seed(11)
    channels = args[1].shape[1]
    bias = torch.randn(channels, generator=gen).to(kernel_device, side_dtype)
    post = tuple(torch.randn(channels, generator=gen).to(kernel_device, side_dtype) for _ in range(2))
    call = args[:4] + (bias, args[5])
    expected = mask_epilogue_ref(*call, *post)
    torch.testing.assert_close(_op(*call, *post), expected, **TOL[dtype])
    y = args[0].clone()
    torch.ops.wfkern.mask_epilogue_(y, *call[1:], *post)
    torch.testing.assert_close(y, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_mask_epilogue_inplace_post_affine_matches_ref(kernel_device, dtype, layout, bias):
    args = make_inputs(kernel_device, dtype, layout, labels="single", bias=bias)
    channels = args[1].shape[1]
    gen = torch.Generator().manual_seed(5)
    post = (torch.randn(channels, generator=gen).to(kernel_device), torch.randn(channels, generator=gen).to(kernel_device))
    expected = mask_epilogue_ref(*args, *post)
    y = args[0].clone()
    torch.ops.wfkern.mask_epilogue_(y, *args[1:], *post)
    torch.testing.assert_close(y, expected, **TOL[dtype])
    torch.library.opcheck(torch.ops.wfkern.mask_epilogue_.default, (args[0].clone(),) + args[1:] + post)
    with pytest.raises(ValueError, match="post_scale and post_shift must be given together"):
        torch.ops.wfkern.mask_epilogue_(args[0].clone(), *args[1:], post[0], None)


def test_mask_epilogue_ref_post_affine_hand_computed():
    y = torch.tensor([[2.0, 4.0]])
    alpha_w = torch.zeros(1, 2)  # gates 0.5
    out = mask_epilogue_ref(y, alpha_w, torch.tensor([0]), None, None, 1, torch.tensor([2.0, 3.0]),
                            torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(out, torch.tensor([[2.0 * 0.5 * 2 + 1, 4.0 * 0.5 * 3 - 1]]))


def test_mask_epilogue_rows_without_label_are_exact(kernel_device):
    for layout in LAYOUTS:
        y, aw, labels, ab, b, cd = make_inputs(kernel_device, torch.bfloat16, layout, labels="single")
        out = _op(y, aw, labels, ab, b, cd)
        none = labels == -1
        assert none.any()
        assert torch.equal(out[none], y[none])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("labels", LABEL_KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_mask_epilogue_grad_matches_ref(kernel_device, dtype, layout, labels, bias):
    args = make_inputs(kernel_device, dtype, layout, labels=labels, bias=bias, requires_grad=True)
    ref_args = _detached(args)
    out, ref = _op(*args), mask_epilogue_ref(*ref_args)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    inputs = [args[0], args[1]] + ([args[3]] if bias else [])
    ref_inputs = [ref_args[0], ref_args[1]] + ([ref_args[3]] if bias else [])
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, ref_inputs, grad)
    torch.testing.assert_close(got[0], want[0], **TOL[dtype])
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, **GRAD_TOL[dtype])


def test_mask_epilogue_backward_skips_grad_y(kernel_device):
    y, aw, labels, ab, b, cd = make_inputs(kernel_device, torch.float32, "nchw")
    grad_y, grad_aw, grad_ab = torch.ops.wfkern.mask_epilogue_backward(torch.ones_like(y), y, aw, labels, ab, b, cd, None, None, False, False)
    assert grad_y.numel() == 0 and grad_aw.shape == aw.shape and grad_ab.shape == ab.shape


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_mask_epilogue_gradcheck(kernel_device, layout, bias):
    args = make_inputs(kernel_device, torch.float64, layout, labels="sets", bias=bias, requires_grad=True, batch=2,
                       channels=3, spatial=(2, 3))
    assert torch.autograd.gradcheck(lambda *a: _op(*a), args, eps=1e-6, atol=1e-8)
    ref_args = _detached(args)
    assert torch.autograd.gradcheck(lambda *a: mask_epilogue_ref(*a), ref_args, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("labels", ["single", "sets"])
def test_mask_epilogue_opcheck(kernel_device, layout, requires_grad, labels):
    for bias in (True, False):
        args = make_inputs(kernel_device, torch.float32, layout, labels=labels, bias=bias, requires_grad=requires_grad)
        torch.library.opcheck(torch.ops.wfkern.mask_epilogue.default, args)
    y, aw, lab, ab, b, cd = make_inputs(kernel_device, torch.float32, layout, labels=labels)
    torch.library.opcheck(torch.ops.wfkern.mask_epilogue_backward.default, (torch.randn_like(y), y, aw, lab, ab, b, cd, None, None, False, True))


def test_mask_epilogue_compile(kernel_device):
    def fn(y, aw, labels, ab, b):
        return torch.relu(mask_epilogue(y, aw, labels, ab, b, 1)) * 2

    args = make_inputs(kernel_device, torch.float32, "nchw", labels="sets", requires_grad=True)[:5]
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(*args)
    torch.testing.assert_close(out, fn(*_detached(args)), **TOL[torch.float32])
    out.sum().backward()
    ref_args = _detached(args)
    fn(*ref_args).sum().backward()
    torch.testing.assert_close(args[1].grad, ref_args[1].grad, **GRAD_TOL[torch.float32])
    if kernel_device == "cuda":
        graphed = torch.compile(fn, mode="reduce-overhead", fullgraph=True)
        with torch.no_grad():
            for _ in range(3):
                torch.testing.assert_close(graphed(*args), fn(*args), **TOL[torch.float32])


def test_mask_epilogue_empty_batch(kernel_device):
    y, aw, _, ab, b, cd = make_inputs(kernel_device, torch.float32, "nchw")
    empty = y[:0]
    out = _op(empty, aw, torch.zeros(0, dtype=torch.long, device=kernel_device), ab, b, cd)
    assert out.shape == empty.shape


# ---- bad input: clear errors ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", [7, -2, 100])
def test_mask_epilogue_rejects_bad_labels(any_device, bad):
    """Whatever runs: CPU labels raise at once; CUDA labels poison their sample and raise on the host later."""
    y, aw, labels, ab, b, cd = make_inputs(any_device, torch.float32, "nchw")
    labels[1] = bad
    with pytest.raises(ValueError, match=rf"got {bad}"):
        check_label_values(labels, 7)
    if any_device == "cpu":
        with pytest.raises(ValueError, match=rf"labels must be in \[-1, 7\).*got {bad}"):
            mask_epilogue(y, aw, labels, ab, b, cd)
        return
    out = mask_epilogue(y, aw, labels, ab, b, cd)
    torch.cuda.synchronize()
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    if _load.kernel_for("cuda"):
        with pytest.raises(ValueError, match=rf"labels must be in \[-1, 7\).*got {bad}"):
            raise_label_errors()


def test_mask_epilogue_kernel_rejects_bad_labels_on_cpu():
    args = list(make_inputs("cpu", torch.float32, "nchw"))
    args[2][0] = 7
    pytest.importorskip("wfkern._C")
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 7\).*got 7"):
        torch.ops.wfkern.mask_epilogue(*args)


@pytest.mark.parametrize("impl", ["ref", "kernel"])
def test_mask_epilogue_rejects_bad_arguments(impl):
    if impl == "kernel":
        pytest.importorskip("wfkern._C")
        fn = torch.ops.wfkern.mask_epilogue
    else:
        fn = mask_epilogue_ref
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "nchw")
    with pytest.raises(TypeError, match="labels must be int64, got"):
        fn(y, aw, labels.float(), ab, b, cd)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\) or \(3, K\)"):
        fn(y, aw, labels[:2], ab, b, cd)
    with pytest.raises(ValueError, match=r"alpha_w must have shape \(num_classes, 5\)"):
        fn(y, aw[:, :4], labels, ab, b, cd)
    with pytest.raises(ValueError, match="alpha_b and bias must be given together"):
        fn(y, aw, labels, ab, None, cd)
    with pytest.raises(ValueError, match="channel_dim must be 1 or -1"):
        fn(y, aw, labels, ab, b, 2)
    with pytest.raises(TypeError, match="y must be float32, float16, bfloat16 or float64"):
        fn(y.to(torch.int32), aw, labels, ab, b, cd)


# ---- labels: any strides, one rule for bad values --------------------------------------------------

def _strided_labels(kind: str, batch: int, num_classes: int, device) -> torch.Tensor:
    """Labels that are views with unusual strides (each once read a freed temporary in the CPU kernel)."""
    gen = torch.Generator().manual_seed(7)
    if kind == "every_other":
        return torch.randint(-1, num_classes, (2 * batch,), generator=gen).to(device)[::2]
    if kind == "column":
        return torch.randint(-1, num_classes, (batch, 3), generator=gen).to(device)[:, 1]
    if kind == "transposed":
        return torch.randint(-1, num_classes, (2, batch), generator=gen).to(device).t()
    if kind == "expanded":
        return torch.tensor(3, device=device).expand(batch)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["every_other", "column", "transposed", "expanded"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "bnf"])
def test_mask_epilogue_strided_labels_match_ref(kernel_device, kind, layout):
    y, aw, _, ab, b, cd = make_inputs(kernel_device, torch.float32, layout, batch=6, requires_grad=True)
    labels = _strided_labels(kind, 6, aw.shape[0], kernel_device)
    assert not labels.is_contiguous()
    args = (y, aw, labels, ab, b, cd)
    ref_args = _detached((y, aw, labels.contiguous(), ab, b, cd))
    out, ref = _op(*args), mask_epilogue_ref(*ref_args)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (y, aw, ab), grad)
    want = torch.autograd.grad(ref, (ref_args[0], ref_args[1], ref_args[3]), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **GRAD_TOL[torch.float32])
    inplace = y.detach().clone()
    torch.ops.wfkern.mask_epilogue_(inplace, aw.detach(), labels, ab.detach(), b, cd)
    torch.testing.assert_close(inplace, ref.detach(), **TOL[torch.float32])


def test_mask_epilogue_large_batch_expanded_labels(kernel_device):
    batch = 1_000_000  # once a SIGSEGV: the CPU kernel read the labels through a freed temporary
    y = torch.randn(batch, 2, device=kernel_device)
    aw = torch.randn(5, 2, device=kernel_device)
    labels = torch.tensor(3, device=kernel_device).expand(batch)
    out = _op(y, aw, labels, None, None, -1)
    torch.testing.assert_close(out, y * torch.sigmoid(aw[3]))


@pytest.mark.parametrize("bad", [7, -2, 100, -(2**40)])
@pytest.mark.parametrize("path", ["kernel", "reference", "kernel_compiled", "reference_compiled"])
def test_mask_epilogue_bad_labels_raise_on_cpu(path, bad):
    """One rule for host labels: a clear error on every path, never a silent 'forget nothing'."""
    if path.startswith("kernel") and not _load.kernel_for("cpu"):
        pytest.skip("wfkern._C has no CPU kernel")
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "nchw", labels="sets")
    labels[1, 2] = bad

    def fn(y, aw, labels, ab, b):
        return mask_epilogue(y, aw, labels, ab, b, 1)

    if path.endswith("compiled"):
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True)
    with _load.use_reference(path.startswith("reference")):
        with pytest.raises((ValueError, RuntimeError), match=r"labels must be in \[-1, 7\)"):
            fn(y, aw, labels, ab, b)


@pytest.mark.parametrize("bad", [7, -2])
def test_mask_epilogue_ref_bad_device_labels_poison_their_sample(bad):
    """Labels the host does not read (CUDA): the reference marks only that sample NaN, never reads out of range."""
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "bnf", labels="sets")
    labels[1, 0] = bad
    gates = gate_table_ref(aw, labels, torch.float32)
    assert gates[1].isnan().all() and not gates[[0, 2]].isnan().any()
    good = labels.clone()
    good[1, 0] = -1
    torch.testing.assert_close(gates[[0, 2]], gate_table_ref(aw, good, torch.float32)[[0, 2]])


@pytest.mark.parametrize("set_size", [2, 4])
def test_mask_epilogue_sets_count_each_class_once(kernel_device, set_size):
    y, aw, _, ab, b, cd = make_inputs(kernel_device, torch.float64, "nchw", requires_grad=True, batch=4)
    once = torch.tensor([[2, -1], [5, 1], [-1, -1], [0, -1]], device=kernel_device)
    twice = torch.cat([once, once], dim=1)[:, :set_size] if set_size == 4 else \
        torch.tensor([[2, 2], [5, 1], [-1, -1], [0, 0]], device=kernel_device)
    out_once, out_twice = _op(y, aw, once, ab, b, cd), _op(y, aw, twice, ab, b, cd)
    torch.testing.assert_close(out_twice, out_once, **TOL[torch.float64])
    g_once = torch.autograd.grad(out_once.sum(), (aw, ab))
    g_twice = torch.autograd.grad(out_twice.sum(), (aw, ab))
    for g, w in zip(g_twice, g_once):
        torch.testing.assert_close(g, w, **GRAD_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_mask_epilogue_post_affine_grad_matches_ref(kernel_device, dtype, layout, bias):
    """The functional op folds a BatchNorm affine too; its backward works from the output alone."""
    args = make_inputs(kernel_device, dtype, layout, labels="sets", bias=bias, requires_grad=True)
    channels = args[1].shape[1]
    gen = torch.Generator().manual_seed(9)
    table = torch.float64 if dtype == torch.float64 else torch.float32
    post = (torch.rand(channels, generator=gen, dtype=table).add(0.5).to(kernel_device),
            torch.randn(channels, generator=gen, dtype=table).to(kernel_device))
    ref_args = _detached(args)
    out, ref = _op(*args, *post), mask_epilogue_ref(*ref_args, *post)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    inputs = [args[0], args[1]] + ([args[3]] if bias else [])
    ref_inputs = [ref_args[0], ref_args[1]] + ([ref_args[3]] if bias else [])
    got, want = torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, ref_inputs, grad)
    torch.testing.assert_close(got[0], want[0], **TOL[dtype])
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, **GRAD_TOL[dtype])


def test_mask_epilogue_post_affine_gradcheck(kernel_device):
    args = make_inputs(kernel_device, torch.float64, "nchw", labels="sets", requires_grad=True, batch=2, channels=3,
                       spatial=(2, 3))
    post = (torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64, device=kernel_device),
            torch.tensor([0.1, -0.3, 2.0], dtype=torch.float64, device=kernel_device))
    assert torch.autograd.gradcheck(lambda *a: _op(*a, *post), args, eps=1e-6, atol=1e-8)
    torch.library.opcheck(torch.ops.wfkern.mask_epilogue.default, args + post)
