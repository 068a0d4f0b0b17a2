"""Property tests: every compiled mask_epilogue kernel against the pure-PyTorch reference on random inputs.

Hypothesis draws the shape (batch 0..7, channels 1..33, spatial sizes 1..140 incl. 1 and odd), the
layout and strides of y (contiguous, channels_last(_3d), (B, N, F) / (B, F) with channel_dim=-1,
sliced, transposed, expanded and offset views), the dtype, the labels (single with -1s, sets padded
with -1 incl. duplicates, all -1; contiguous, sliced, transposed or expanded), the bias and the
folded post-affine. Each example checks the functional op, the in-place op and the gradients
against the reference, and that labels outside [-1, Nc) on the CPU raise a ValueError from both.

Examples per test: WFKERN_PROPERTY_EXAMPLES (default 200). Under CI (CI set) the examples are
derandomized, so a CI run is reproducible; locally every run draws new ones and a failure prints
the ``@reproduce_failure`` blob. No example database is written.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import GRAD_TOL, TOL, has_kernel
from wfkern.ops import mask_epilogue_ref

pytestmark = pytest.mark.property

SETTINGS = settings(
    max_examples=int(os.environ.get("WFKERN_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    print_blob=True,
    # The fixtures used (device parameters, the autouse TF32 switch) keep no state between examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# name: (rank, channel_dim, memory format of the base tensor)
LAYOUTS = {
    "bf": (2, -1, torch.contiguous_format),
    "bf_dim1": (2, 1, torch.contiguous_format),
    "bnf": (3, -1, torch.contiguous_format),
    "bcl": (3, 1, torch.contiguous_format),
    "nchw": (4, 1, torch.contiguous_format),
    "channels_last": (4, 1, torch.channels_last),
    "ncdhw": (5, 1, torch.contiguous_format),
    "channels_last_3d": (5, 1, torch.channels_last_3d),
}
Y_VIEWS = ["plain", "sliced", "transposed", "expanded", "offset"]
LABEL_KINDS = ["single", "sets", "all_none"]
LABEL_VIEWS = ["contiguous", "sliced", "transposed", "expanded"]


def _device(name: str) -> str:
    if not has_kernel(name):
        pytest.skip(f"wfkern._C has no {name.upper()} kernel")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    return name


@dataclass
class Case:
    dtype: torch.dtype
    layout: str
    shape: tuple
    y_view: str
    view_dims: tuple  # the dim(s) the view acts on
    num_classes: int
    label_kind: str
    set_size: int  # K of a (B, K) table; 0 for (B,) labels
    duplicates: bool
    label_view: str
    alpha_dtype: torch.dtype
    alpha_scale: float
    bias: bool
    post: bool
    post_dtype: Optional[torch.dtype]
    seed: int
    bad_label: Optional[int] = None
    bad_slot: int = 0

    @property
    def channel_dim(self) -> int:
        return LAYOUTS[self.layout][1]

    @property
    def table_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def overlapping(self) -> bool:
        """y has elements that share memory (an expanded dim of size > 1): no in-place op on it."""
        return self.y_view == "expanded" and self.shape[self.view_dims[0]] > 1

    # ---- y: a view of a base buffer, rebuilt identically on every call --------------------------

    def _view(self) -> tuple:
        """(shape of the base buffer, function from the base to y)."""
        shape, dims = list(self.shape), self.view_dims
        if self.y_view == "sliced":  # every other element along one dim of a buffer twice as long
            d = dims[0]
            shape[d] *= 2
            return shape, lambda base: base[(slice(None),) * d + (slice(None, None, 2),)]
        if self.y_view == "transposed":  # two dims swapped in memory
            i, j = dims
            shape[i], shape[j] = shape[j], shape[i]
            return shape, lambda base: base.transpose(i, j)
        if self.y_view == "expanded":  # stride 0 along one dim
            d = dims[0]
            shape[d] = 1
            return shape, lambda base: base.expand(self.shape)
        if self.y_view == "offset":  # a storage offset: the buffer has one more sample in front
            shape[0] += 1
            return shape, lambda base: base[1:]
        return shape, lambda base: base

    def make_y(self, device) -> tuple:
        """(y, base, view): y = view(base), base a fresh buffer in the layout's memory format."""
        shape, view = self._view()
        gen = torch.Generator().manual_seed(self.seed)
        base = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=self.dtype)
        base = base.contiguous(memory_format=LAYOUTS[self.layout][2])
        y = view(base)
        assert tuple(y.shape) == tuple(self.shape)
        return y, base, view

    # ---- the rest of the arguments ----------------------------------------------------------------

    def make_labels(self, device) -> torch.Tensor:
        batch, k = self.shape[0], self.set_size
        gen = torch.Generator().manual_seed(self.seed + 1)
        table = (batch, max(k, 1))
        if self.label_kind == "all_none":
            values = torch.full(table, -1, dtype=torch.long)
        else:
            values = torch.randint(-1, self.num_classes, table, generator=gen)
            if self.duplicates and k >= 2:  # a class listed twice in a set counts once
                values[:, -1] = values[:, 0]
        if self.label_view == "expanded":  # one row (or one value) for every sample
            base = values[:1].to(device)
            labels = base.expand(table)
        elif self.label_view == "sliced":  # every other sample of a table twice as long
            base = torch.cat([values, values.flip(0)], dim=1).reshape(2 * batch, table[1]).to(device)
            labels = base[::2]
        elif self.label_view == "transposed" and k:  # a (K', B) table seen as (B, K')[:, :K]
            base = torch.cat([values, values.flip(1)], dim=1).t().contiguous().to(device)
            labels = base.t()[:, :k]
        elif self.label_view == "transposed":  # (B,): the middle column of a (B, 3) table
            base = torch.cat([values - 1, values, values + 1], dim=1).to(device)
            labels = base[:, 1:2]
        else:
            labels = values.to(device)
        if k == 0:
            labels = labels[:, 0]
        if self.bad_label is not None:  # written through the view (into the shared value if expanded)
            b, s = divmod(self.bad_slot, table[1])
            labels[(b, s) if k else (b,)] = self.bad_label
        assert tuple(labels.shape) == ((batch, k) if k else (batch,))
        return labels

    def make_args(self, device) -> tuple:
        """(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift)."""
        y = self.make_y(device)[0]
        channels = y.shape[self.channel_dim]
        gen = torch.Generator().manual_seed(self.seed + 2)

        def randn(*size):
            return torch.randn(size, generator=gen, dtype=torch.float64)

        alpha_w = (randn(self.num_classes, channels) * self.alpha_scale).to(device, self.alpha_dtype)
        alpha_b = (randn(self.num_classes, channels) * self.alpha_scale).to(device, self.alpha_dtype)
        bias = randn(channels).to(device, self.dtype)
        post_scale = ((torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5)
                      * torch.randint(0, 2, (channels,), generator=gen).mul(2).sub(1))
        post_shift = randn(channels)
        post = (post_scale.to(device, self.post_dtype), post_shift.to(device, self.post_dtype)) if self.post \
            else (None, None)
        return (y, alpha_w, self.make_labels(device), alpha_b if self.bias else None, bias if self.bias else None,
                self.channel_dim, *post)


@st.composite
def cases(draw, bad_labels: bool = False) -> Case:
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    rank = LAYOUTS[layout][0]
    # sampled_from draws evenly (st.integers favours its bounds: a third of the batches would be 0)
    batch = draw(st.sampled_from(range(1 if bad_labels else 0, 8)))
    channels = draw(st.sampled_from(range(1, 34)))
    if rank == 2:
        spatial = []
    elif rank == 3:  # planes / rows below and above the kernels' lane (64) and tile (64) sizes
        spatial = [draw(st.sampled_from([*range(1, 10), 31, 63, 64, 65, 97, 127, 128, 129, 140]))]
    elif rank == 4:
        spatial = [draw(st.sampled_from(range(1, 18))), draw(st.sampled_from(range(1, 18)))]
    else:
        spatial = [draw(st.sampled_from(range(1, 6))) for _ in range(3)]
    if LAYOUTS[layout][1] == 1:
        shape = (batch, channels, *spatial)
    else:
        shape = (batch, *spatial, channels)
    y_view = draw(st.sampled_from(Y_VIEWS))
    if y_view == "transposed":
        view_dims = tuple(sorted(draw(st.lists(st.integers(0, rank - 1), min_size=2, max_size=2, unique=True))))
    else:
        view_dims = (draw(st.integers(0, rank - 1)),)
    label_kind = draw(st.sampled_from(LABEL_KINDS))
    # single: (B,) with -1s; sets: (B, K) padded with -1; all_none: either shape, every label -1
    set_size = {"single": 0, "sets": draw(st.integers(1, 4)), "all_none": draw(st.integers(0, 4))}[label_kind]
    num_classes = draw(st.integers(1, 9))
    post = draw(st.booleans())
    case = Case(
        dtype=dtype,
        layout=layout,
        shape=shape,
        y_view=y_view,
        view_dims=view_dims,
        num_classes=num_classes,
        label_kind=label_kind,
        set_size=set_size,
        duplicates=draw(st.booleans()),
        label_view=draw(st.sampled_from(LABEL_VIEWS)),
        alpha_dtype=torch.float64 if dtype == torch.float64 else draw(st.sampled_from([torch.float32, torch.float64])),
        alpha_scale=draw(st.sampled_from([0.5, 2.0, 8.0])),
        bias=draw(st.booleans()),
        post=post,
        post_dtype=draw(st.sampled_from(sorted({torch.float32, torch.float64, dtype}, key=str))) if post else None,
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    if bad_labels:
        case.bad_label = draw(st.one_of(st.integers(-(2**63), -2), st.integers(num_classes, 2**63 - 1),
                                        st.sampled_from([-2, num_classes, num_classes + 1])))
        case.bad_slot = draw(st.integers(0, batch * max(set_size, 1) - 1))
    return case


def _assert_untouched_rows(case: Case, y: torch.Tensor, labels: torch.Tensor, out: torch.Tensor) -> None:
    """A sample that forgets nothing (every label -1) is y bit for bit, without a post-affine."""
    if case.post:
        return
    none = (labels == -1) if labels.dim() == 1 else (labels == -1).all(dim=1)
    assert torch.equal(out[none], y[none])


# ---- forward: the functional and the in-place op ----------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "cuda"])
@SETTINGS
@given(case=cases())
def test_forward_and_inplace_match_ref(device, case):
    device = _device(device)
    args = case.make_args(device)
    y, labels, dtype = args[0], args[2], case.dtype
    expected = mask_epilogue_ref(*args)

    out = torch.ops.wfkern.mask_epilogue(*args)
    assert out.shape == y.shape and out.dtype == dtype and out.device == y.device
    assert out.stride() == torch.empty_like(y).stride()  # what the fake implementation promises
    torch.testing.assert_close(out, expected, **TOL[dtype])
    _assert_untouched_rows(case, y, labels, out)

    if case.overlapping:  # in place on memory shared between elements is not a thing
        return
    target, base, view = case.make_y(device)
    strides, ptr, before = target.stride(), target.data_ptr(), base.clone()
    assert torch.ops.wfkern.mask_epilogue_(target, *args[1:]) is None
    assert target.stride() == strides and target.data_ptr() == ptr
    torch.testing.assert_close(target, expected, **TOL[dtype])
    untouched = before.clone()
    view(untouched).copy_(target)
    assert torch.equal(base, untouched)  # not one element of the buffer outside the view was written


# ---- gradients: autograd through the op against autograd through the reference ----------------------

def _output_rounding_slack(out, grad, labels, num_classes: int, cd: int) -> torch.Tensor:
    """Bound on what rounding the saved output to its dtype can change in d loss / d alpha_w.

    With save_output the backward computes sum g * (y - bias) * gate from sum g * out; out carries a
    relative rounding error of at most eps / 2 per element, and d gate / d alpha <= 1. Per (class,
    channel): eps * sum over the samples that forget the class of sum |g * out|.
    """
    dims = [d for d in range(out.dim()) if d not in (0, cd % out.dim())]
    per_sample = (grad.double() * out.double()).abs()
    per_sample = per_sample.sum(dims) if dims else per_sample  # (B, C)
    counts = torch.zeros(labels.shape[0], num_classes, dtype=torch.float64)
    sets = labels.cpu() if labels.dim() == 2 else labels.cpu()[:, None]
    for b, row in enumerate(sets.tolist()):
        for label in set(row) - {-1}:
            counts[b, label] = 1.0
    return torch.finfo(out.dtype).eps * (counts.t() @ per_sample.cpu()).to(out.device)


def _assert_close(got, want, tol: dict, slack=0.0) -> None:
    """torch.testing.assert_close's rule |got - want| <= atol + rtol * |want|, plus an elementwise slack."""
    assert got.shape == want.shape
    diff = (got.double() - want.double()).abs()
    allowed = tol["atol"] + tol["rtol"] * want.double().abs() + slack
    bad = ~(diff <= allowed)  # NaN counts as bad
    assert not bad.any(), (f"{int(bad.sum())} / {bad.numel()} elements differ by more than allowed; worst: "
                           f"{float((diff - allowed)[bad].max())} over, got {got[bad][:5].tolist()}, "
                           f"want {want[bad][:5].tolist()}")


def _leaf(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@SETTINGS
@given(case=cases(), save_output=st.booleans())
def test_grad_matches_ref(device, case, save_output):
    device = _device(device)
    y, alpha_w, labels, alpha_b, bias, cd, post_scale, post_shift = case.make_args(device)
    y = y.detach().requires_grad_(True)  # keeps y's strides (a strided leaf)
    alpha_w.requires_grad_(True)
    if alpha_b is not None:
        alpha_b.requires_grad_(True)
    out = torch.ops.wfkern.mask_epilogue(y, alpha_w, labels, alpha_b, bias, cd, post_scale, post_shift, save_output)
    ref_y, ref_aw, ref_ab = _leaf(y), _leaf(alpha_w), _leaf(alpha_b)
    ref = mask_epilogue_ref(ref_y, ref_aw, labels, ref_ab, bias, cd, post_scale, post_shift)
    torch.testing.assert_close(out, ref, **TOL[case.dtype])

    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(case.seed + 3),
                       dtype=torch.float64).to(out)
    inputs = [y, alpha_w] + ([alpha_b] if alpha_b is not None else [])
    ref_inputs = [ref_y, ref_aw] + ([ref_ab] if ref_ab is not None else [])
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, ref_inputs, grad)
    assert got[0].shape == y.shape and got[0].dtype == case.dtype
    torch.testing.assert_close(got[0], want[0], **TOL[case.dtype])
    # From the output, the weight gates' gradient reads `out` as rounded to y's dtype: allow that rounding.
    slack = _output_rounding_slack(out.detach(), grad, labels, case.num_classes, cd) if save_output else 0.0
    assert all(g.dtype == case.alpha_dtype and g.shape == alpha_w.shape for g in got[1:])
    _assert_close(got[1], want[1], GRAD_TOL[case.dtype], slack)
    if alpha_b is not None:
        _assert_close(got[2], want[2], GRAD_TOL[case.dtype])


# ---- labels outside [-1, Nc) on the CPU: a ValueError from the kernel and the reference alike ----------

def _named_label(raises: pytest.ExceptionInfo, num_classes: int) -> int:
    message = str(raises.value)
    assert re.search(rf"labels must be in \[-1, {num_classes}\) \(-1 = forget nothing\), got -?\d+", message), message
    return int(re.search(r"got (-?\d+)", message).group(1))


@SETTINGS
@given(case=cases(bad_labels=True))
def test_bad_labels_raise_on_cpu(case):
    args = case.make_args("cpu")
    with pytest.raises(ValueError) as ref_error:
        mask_epilogue_ref(*args)
    named = _named_label(ref_error, case.num_classes)
    assert named == case.bad_label  # the only bad value in the labels
    if not has_kernel("cpu"):
        return
    with pytest.raises(ValueError) as kernel_error:
        torch.ops.wfkern.mask_epilogue(*args)
    assert _named_label(kernel_error, case.num_classes) == named
    if case.overlapping:
        return
    target = case.make_y("cpu")[0]
    before = target.clone()
    with pytest.raises(ValueError) as inplace_error:
        torch.ops.wfkern.mask_epilogue_(target, *args[1:])
    assert _named_label(inplace_error, case.num_classes) == named
    assert torch.equal(target, before)  # checked before anything is written


def test_case_views_are_what_they_claim():
    """The strategies really produce the strided inputs the properties are about."""
    base = dict(dtype=torch.float32, layout="nchw", shape=(3, 4, 5, 6), view_dims=(1,), num_classes=4,
                label_kind="sets", set_size=2, duplicates=True, label_view="contiguous", alpha_dtype=torch.float32,
                alpha_scale=2.0, bias=True, post=False, post_dtype=None, seed=0)
    for view in ("sliced", "transposed", "expanded"):
        y = Case(**dict(base, y_view=view, view_dims=(1, 3) if view == "transposed" else (1,))).make_y("cpu")[0]
        assert not y.is_contiguous() and not y.is_contiguous(memory_format=torch.channels_last), view
    assert Case(**dict(base, y_view="expanded")).overlapping
    assert Case(**dict(base, y_view="offset")).make_y("cpu")[0].storage_offset() > 0
    for view in ("sliced", "transposed", "expanded"):
        for k in (0, 2):
            labels = Case(**dict(base, y_view="plain", label_view=view, set_size=k)).make_labels("cpu")
            assert not labels.is_contiguous(), (view, k)
    dup = Case(**dict(base, y_view="plain")).make_labels("cpu")
    assert torch.equal(dup[:, 0], dup[:, 1])
