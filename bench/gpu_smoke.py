"""Smoke check of the compiled mask-epilogue kernels against the float64 reference (no pytest).

    python3 bench/gpu_smoke.py                 # CUDA: every case (a few seconds plus one compile)
    python3 bench/gpu_smoke.py --quick         # small shapes only: for compute-sanitizer
    python3 bench/gpu_smoke.py --device cpu --quick      # the C++ CPU kernels, same checks
    compute-sanitizer --tool memcheck python3 bench/gpu_smoke.py --quick

Every kernel result (``torch.ops.wfkern.mask_epilogue``, the in-place ``mask_epilogue_`` with and
without its post affine, autograd through the op, the raw ``mask_epilogue_backward``) is compared
with ``wfkern.ops.mask_epilogue_ref`` run on float64 CPU copies of the same (rounded) inputs:
relative error ||out - ref|| / ||ref|| against a per-dtype threshold, plus a loose per-element
bound and a NaN check, so a handful of unwritten or misplaced elements cannot hide in the norm.
Outputs are poisoned with NaN first: freshly allocated outputs by handing the caching allocator
a NaN-filled block of the same size, and the memory around strided / misaligned views (which also
catches reads and writes outside the view).

Labels stay in [-1, Nc) except in the separate "bad labels" case, which only reports what happens
(an exception, NaN rows, ...). The reference is the oracle for every semantic question (e.g. a
label repeated inside one sample's set).

One line per case: ``ok``, ``FAIL`` (with the errors), ``skip`` or ``info``; then
``gpu_smoke: N ok, M FAIL, K skipped, I info``. Exit 0 all ok, 1 any FAIL, 2 nothing could be
tested (no device or no kernel), 3 stopped early (--deadline-s or an interrupt) without a FAIL.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import wfkern  # noqa: E402
from wfkern.ops import mask_epilogue_ref  # noqa: E402

NUM_CLASSES = 7
F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
DTYPES = {"fp32": F32, "bf16": BF16, "fp16": F16, "fp64": F64}
# ||out - ref|| / ||ref||: output rounding of the dtype plus float32 math (float64 for float64)
REL_TOL = {F64: 1e-12, F32: 1e-5, F16: 2e-3, BF16: 1.2e-2}
# gradients w.r.t. the gate logits are sums over B * S products: looser
GRAD_REL_TOL = {F64: 1e-10, F32: 1e-4, F16: 5e-3, BF16: 3e-2}
# per element: |out - ref| <= ELEM_TOL * (1 + |ref|)
ELEM_TOL = {F64: 1e-10, F32: 1e-4, F16: 4e-3, BF16: 3e-2}

# name: (logical shape without the batch, channel_dim, storage): C=13 and 7x9 planes are odd on
# purpose; "misaligned" views sit one element into a bigger buffer (no 16-byte vector loads) with
# otherwise vector-friendly sizes, so only the pointer offset stops vectorisation.
LAYOUTS = {
    "nchw": ((13, 7, 9), 1, "dense"),
    "channels_last": ((13, 7, 9), 1, "channels_last"),
    "bnf": ((63, 13), -1, "dense"),
    "bf": ((13,), -1, "dense"),
    "strided": ((13, 7, 9), 1, "strided"),
    "misaligned": ((16, 8, 8), 1, "offset"),
    "misaligned_bnf": ((64, 16), -1, "offset"),
    "nchw_1x1": ((13, 1, 1), 1, "dense"),
    "channels_last_1x1": ((13, 1, 1), 1, "channels_last"),
}
LABEL_KINDS = ["single", "sets", "none", "dups"]
QUICK_LAYOUTS = ["nchw", "channels_last", "bnf", "strided", "misaligned", "misaligned_bnf"]
BATCH = 6
OFFSET = 1  # elements: the misaligned view's start in its buffer
_SEED = [0]  # fresh inputs for every case: seeds count up from --seed


def next_seed() -> int:
    _SEED[0] += 1
    return _SEED[0]


# ---- reporting ----------------------------------------------------------------------------------

class Report:
    def __init__(self, deadline: float | None):
        self.counts = {"ok": 0, "FAIL": 0, "skip": 0, "info": 0}
        self.deadline = deadline
        self.stopped = ""

    def line(self, status: str, name: str, detail: str = "") -> None:
        self.counts[status] += 1
        print(f"{status:<4} {name}" + (f": {detail}" if detail else ""), flush=True)

    def run(self, name: str, fn, *args) -> None:
        if not self.stopped and self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = "skipped: no time left"
            self.line("skip", name, f"{self.stopped} (and every case after it)")
            return
        if self.stopped:
            self.counts["skip"] += 1
            return
        seed = f" [seed {_SEED[0] + 1}]"
        try:
            problems, notes = fn(*args)
        except Skip as why:
            self.line("skip", name, str(why))
            return
        except Exception as err:  # one broken case must not hide the others
            frames = traceback.extract_tb(err.__traceback__)
            where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
            self.line("FAIL", name, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
                      + where + seed)
            return
        if problems:
            self.line("FAIL", name, "; ".join(problems)[:600] + seed)
        else:
            self.line("ok", name, " ".join(notes))

    def finish(self) -> int:
        counts = self.counts
        tail = f" ({self.stopped})" if self.stopped else ""
        print(f"gpu_smoke: {counts['ok']} ok, {counts['FAIL']} FAIL, {counts['skip']} skipped, {counts['info']} info"
              f"{tail}", flush=True)
        if counts["FAIL"]:
            return 1
        if self.stopped:
            return 3
        return 0 if counts["ok"] else 2


class Skip(Exception):
    pass


class Check:
    """Collects the problems and the error notes of one case."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.problems, self.notes = [], []

    def close(self, what, out, ref, grad=False, elementwise=True):
        if out is None:
            self.problems.append(f"{what}: missing")
            return
        out64 = out.detach().to("cpu", F64)
        ref64 = ref.detach().to("cpu", F64)
        if out64.shape != ref64.shape:
            self.problems.append(f"{what}: shape {tuple(out64.shape)}, want {tuple(ref64.shape)}")
            return
        bad = ~torch.isfinite(out64)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            self.problems.append(f"{what}: {int(bad.sum())}/{out64.numel()} not finite (unwritten?), first at {first}")
            return
        diff = out64 - ref64
        denom = float(ref64.norm())
        err = float(diff.norm()) / denom if denom > 0 else float(diff.norm())
        tol = (GRAD_REL_TOL if grad else REL_TOL)[self.dtype]
        self.notes.append(f"{what}={err:.0e}")
        if not err <= tol:
            self.problems.append(f"{what}: rel err {err:.2e} > {tol:.0e}")
        if elementwise:
            off = diff.abs() > ELEM_TOL[self.dtype] * (1 + ref64.abs())
            if off.any():
                idx = tuple(int(i) for i in off.nonzero()[0])
                self.problems.append(f"{what}: {int(off.sum())} elements off, first at {idx}: "
                                     f"{float(out64[idx]):.4g}, want {float(ref64[idx]):.4g}")

    def true(self, what, cond, detail=""):
        if not cond:
            self.problems.append(f"{what}{': ' + detail if detail else ''}")

    def result(self):
        return self.problems, self.notes


# ---- inputs -------------------------------------------------------------------------------------

def make_labels(kind: str, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Valid labels only: in [-1, NUM_CLASSES)."""
    if kind == "single":
        labels = torch.randint(-1, NUM_CLASSES, (batch,), generator=gen)
        labels[0], labels[1] = -1, NUM_CLASSES - 1
        return labels
    if kind == "none":
        return torch.full((batch,), -1, dtype=torch.long)
    if kind not in ("sets", "dups"):
        raise ValueError(kind)
    width = 3
    rows = []
    for sample in range(batch):
        classes = torch.randperm(NUM_CLASSES, generator=gen)[:width]
        used = [0, width, 1][sample] if sample < 3 else int(torch.randint(0, width + 1, (1,), generator=gen))
        row = [int(c) for c in classes[:used]] + [-1] * (width - used)
        if kind == "dups" and used >= 1:
            row = [row[0], row[0]] + row[1:2] if used >= 2 else [row[0], row[0], -1]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def place(values: torch.Tensor, storage: str, dtype, device):
    """values (a dense float64 CPU tensor) as ``dtype`` on ``device`` in the given storage.

    Returns (tensor, guard): guard() gives the NaN-poisoned memory around the view (or None).
    """
    on_device = values.to(device=device, dtype=dtype, copy=True)  # never an alias of values: ops run in place on it
    if storage == "dense":
        return on_device.contiguous(), None
    if storage == "channels_last":
        return on_device.contiguous(memory_format=torch.channels_last), None
    if storage == "strided":  # every other element of a twice-as-wide buffer
        base = torch.full((*on_device.shape[:-1], 2 * on_device.shape[-1]), math.nan, dtype=dtype, device=device)
        view = base[..., ::2]
        view.copy_(on_device)
        return view, lambda: base[..., 1::2]
    if storage == "offset":  # one element into a bigger buffer: never 16-byte aligned
        n = on_device.numel()
        base = torch.full((n + OFFSET + 7,), math.nan, dtype=dtype, device=device)
        view = base[OFFSET:OFFSET + n].view(on_device.shape)
        view.copy_(on_device)
        assert view.data_ptr() % 16 != 0
        return view, lambda: torch.cat([base[:OFFSET], base[OFFSET + n:]])
    raise ValueError(storage)


def poison_allocator(like: torch.Tensor) -> None:
    """Hand the CUDA caching allocator a NaN block of ``like``'s size: the next same-size output
    most likely gets it, so elements a kernel never writes show up as NaN."""
    if like.is_cuda and like.numel():
        block = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
        block.fill_(math.nan)
        del block


def guard_intact(check: Check, what: str, guard) -> None:
    if guard is not None:
        outside = guard()
        written = int((~torch.isnan(outside)).sum())
        check.true(f"{what}: memory outside the view", written == 0, f"{written} elements overwritten")


class Case:
    """One set of inputs and its float64 reference results."""

    def __init__(self, device, dtype, layout, labels, bias, batch=BATCH, shape=None):
        rest, self.channel_dim, self.storage = LAYOUTS[layout]
        rest = shape or rest
        gen = torch.Generator().manual_seed(next_seed())
        self.device, self.dtype = device, dtype
        alpha_dtype = F64 if dtype == F64 else F32
        channels = rest[0] if self.channel_dim == 1 else rest[-1]
        self.shape = (batch, *rest)
        self.values = torch.randn(self.shape, generator=gen, dtype=F64)
        self.grad_values = torch.randn(self.shape, generator=gen, dtype=F64)
        self.alpha_w = (torch.randn(NUM_CLASSES, channels, generator=gen, dtype=F64) * 2).to(device, alpha_dtype)
        self.alpha_b = (torch.randn(NUM_CLASSES, channels, generator=gen, dtype=F64) * 2).to(device, alpha_dtype)
        self.bias = torch.randn(channels, generator=gen, dtype=F64).to(device, dtype)
        if not bias:
            self.alpha_b = self.bias = None
        self.post_scale = (torch.rand(channels, generator=gen, dtype=F64) + 0.5).to(device, alpha_dtype)
        self.post_shift = torch.randn(channels, generator=gen, dtype=F64).to(device, alpha_dtype)
        self.labels = (labels if isinstance(labels, torch.Tensor) else make_labels(labels, batch, gen)).to(device)

    def y(self):
        return place(self.values, self.storage, self.dtype, self.device)

    def grad_out(self):
        return place(self.grad_values, self.storage, self.dtype, self.device)[0]

    def args(self, y, labels=None):
        return (y, self.alpha_w, self.labels if labels is None else labels, self.alpha_b, self.bias, self.channel_dim)

    def ref(self, labels=None, post=False, grads=False):
        """mask_epilogue_ref on float64 CPU copies of exactly what the kernel sees."""
        def c64(t, req=False):
            return None if t is None else t.detach().to("cpu", F64).requires_grad_(req)

        y, _ = self.y()
        y64, aw64, ab64 = c64(y, grads), c64(self.alpha_w, grads), c64(self.alpha_b, grads and self.bias is not None)
        labels = (self.labels if labels is None else labels).cpu()
        extra = (c64(self.post_scale), c64(self.post_shift)) if post else ()
        out = mask_epilogue_ref(y64, aw64, labels, ab64, c64(self.bias), self.channel_dim, *extra)
        if not grads:
            return out.detach()
        inputs = [y64, aw64] + ([ab64] if ab64 is not None else [])
        got = torch.autograd.grad(out, inputs, c64(self.grad_out()))
        return out.detach(), got


def backward_op(go, case, y, compute_grad_y, labels=None, post=False):
    """The raw backward op: it takes the forward's output (never y), so run the forward first."""
    extra = (case.post_scale, case.post_shift) if post else (None, None)
    args = case.args(y, labels)
    out = torch.ops.wfkern.mask_epilogue(*args, *extra)
    _, aw, lab, ab, b, channel_dim = args
    return torch.ops.wfkern.mask_epilogue_backward(go, out, aw, lab, ab, b, channel_dim, *extra, True, compute_grad_y)


# ---- the cases ----------------------------------------------------------------------------------

def ops_case(device, dtype, layout, labels, bias, shape=None, batch=BATCH):
    """Forward, in place (with and without the post affine), autograd and the raw backward."""
    case = Case(device, dtype, layout, labels, bias, batch=batch, shape=shape)
    check = Check(dtype)
    ref, ref_grads = case.ref(grads=True)

    y, _ = case.y()
    before = y.detach().to("cpu", F64)
    poison_allocator(y)
    out = torch.ops.wfkern.mask_epilogue(*case.args(y))
    check.close("fwd", out, ref)
    check.true("fwd: dtype", out.dtype == dtype, str(out.dtype))
    check.true("fwd: input unchanged", torch.equal(y.detach().to("cpu", F64), before))

    for post in (False, True):
        what = "inplace_post" if post else "inplace"
        yi, guard = case.y()
        ptr = yi.data_ptr()
        extra = (case.post_scale, case.post_shift) if post else ()
        ret = torch.ops.wfkern.mask_epilogue_(*case.args(yi), *extra)
        check.true(f"{what}: returns None", ret is None, type(ret).__name__)
        check.true(f"{what}: storage moved", yi.data_ptr() == ptr)
        check.close(what, yi, case.ref(post=True) if post else ref)
        guard_intact(check, what, guard)

    # autograd through the op: gradients w.r.t. y, alpha_w and alpha_b
    yg, _ = case.y()
    yg.requires_grad_(True)
    aw = case.alpha_w.detach().clone().requires_grad_(True)
    ab = None if case.alpha_b is None else case.alpha_b.detach().clone().requires_grad_(True)
    out = torch.ops.wfkern.mask_epilogue(yg, aw, case.labels, ab, case.bias, case.channel_dim)
    poison_allocator(yg)
    grads = torch.autograd.grad(out, [yg, aw] + ([ab] if ab is not None else []), case.grad_out())
    for name, g, r in zip(("grad_y", "grad_aw", "grad_ab"), grads, ref_grads):
        check.close(f"autograd_{name}", g, r, grad=name != "grad_y", elementwise=name == "grad_y")

    # autograd with the folded-BatchNorm affine (post_scale, post_shift: constants)
    yg, _ = case.y()
    yg.requires_grad_(True)
    aw = case.alpha_w.detach().clone().requires_grad_(True)
    ab = None if case.alpha_b is None else case.alpha_b.detach().clone().requires_grad_(True)
    out = torch.ops.wfkern.mask_epilogue(yg, aw, case.labels, ab, case.bias, case.channel_dim,
                                         case.post_scale, case.post_shift)
    ref_post, ref_post_grads = case.ref(post=True, grads=True)
    check.close("fwd_post", out, ref_post)
    grads = torch.autograd.grad(out, [yg, aw] + ([ab] if ab is not None else []), case.grad_out())
    for name, g, r in zip(("grad_y", "grad_aw", "grad_ab"), grads, ref_post_grads):
        check.close(f"autograd_post_{name}", g, r, grad=name != "grad_y", elementwise=name == "grad_y")

    # the raw backward op, with and without grad_y
    y, _ = case.y()
    go = case.grad_out()
    poison_allocator(y)
    gy, gaw, gab = backward_op(go, case, y, True)
    check.close("bwd_grad_y", gy, ref_grads[0])
    check.close("bwd_grad_aw", gaw, ref_grads[1], grad=True, elementwise=False)
    if case.alpha_b is not None:
        check.close("bwd_grad_ab", gab, ref_grads[2], grad=True, elementwise=False)
    else:
        check.true("bwd_grad_ab: empty without alpha_b", gab.numel() == 0, f"{tuple(gab.shape)}")
    gy0, gaw0, _ = backward_op(go, case, y, False)
    check.true("bwd(compute_grad_y=False): grad_y empty", gy0.numel() == 0, f"{tuple(gy0.shape)}")
    check.close("bwd_nograd_y_grad_aw", gaw0, ref_grads[1], grad=True, elementwise=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return check.result()


def large_case(device, layout):
    """One activation of at least 64 MB (bf16): forward, in place, raw backward."""
    if device != "cuda":
        raise Skip("large case runs on CUDA only")
    case = Case(device, BF16, layout, "single", True, batch=64, shape=(64, 96, 96))  # 75.5 MB
    y, _ = case.y()
    mb = y.numel() * y.element_size() / 2**20
    check = Check(BF16)
    check.true("size >= 64 MB", mb >= 64, f"{mb:.0f} MB")
    ref = case.ref()
    poison_allocator(y)
    check.close("fwd", torch.ops.wfkern.mask_epilogue(*case.args(y)), ref)
    yi, _ = case.y()
    torch.ops.wfkern.mask_epilogue_(*case.args(yi))
    check.close("inplace", yi, ref)
    del yi
    go = case.grad_out()
    poison_allocator(y)
    gy, gaw, gab = backward_op(go, case, y, True)
    _, ref_grads = case.ref(grads=True)
    check.close("bwd_grad_y", gy, ref_grads[0])
    check.close("bwd_grad_aw", gaw, ref_grads[1], grad=True, elementwise=False)
    check.close("bwd_grad_ab", gab, ref_grads[2], grad=True, elementwise=False)
    check.notes.insert(0, f"{mb:.0f}MB")
    torch.cuda.synchronize()
    return check.result()


def graph_case(device, label_kind):
    """CUDA-graph capture of forward, in place (+ post affine) and backward; the captured labels
    buffer gets new contents before each replay and every output must follow."""
    if device != "cuda":
        raise Skip("CUDA only")
    if os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1":
        raise Skip("graph capture needs the caching allocator (disabled for memcheck)")
    case = Case(device, F32, "nchw", label_kind, True, batch=8)
    gen = torch.Generator().manual_seed(next_seed())
    y, _ = case.y()
    go = case.grad_out()
    labels_buf = case.labels.clone()
    y_ip = torch.empty_like(y)

    def step():
        out = torch.ops.wfkern.mask_epilogue(*case.args(y, labels_buf))
        y_ip.copy_(y)
        torch.ops.wfkern.mask_epilogue_(*case.args(y_ip, labels_buf), case.post_scale, case.post_shift)
        grads = backward_op(go, case, y, True, labels_buf)
        return (out,) + tuple(grads)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture, as torch.cuda.graphs documents
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    check = Check(F32)
    trials = [make_labels(label_kind, 8, gen), torch.full_like(case.labels.cpu(), -1), make_labels(label_kind, 8, gen),
              case.labels.cpu()]
    for i, new in enumerate(trials):
        labels_buf.copy_(new.to(device))
        graph.replay()
        torch.cuda.synchronize()
        ref, ref_grads = case.ref(labels=new, grads=True)
        ref_post = case.ref(labels=new, post=True)
        check.close(f"replay{i}_fwd", captured[0], ref)
        check.close(f"replay{i}_inplace_post", y_ip, ref_post)
        check.close(f"replay{i}_grad_y", captured[1], ref_grads[0])
        check.close(f"replay{i}_grad_aw", captured[2], ref_grads[1], grad=True, elementwise=False)
        check.close(f"replay{i}_grad_ab", captured[3], ref_grads[2], grad=True, elementwise=False)
    if check.notes:
        check.notes = [f"{len(trials)} replays, worst {max(check.notes, key=lambda n: float(n.split('=')[1]))}"]
    return check.result()


def stream_case(device):
    """Inputs produced on a side stream (after a spin, so a kernel on the wrong stream would read the
    NaN they replace), consumed there and on a second stream that waits for it."""
    if device != "cuda":
        raise Skip("CUDA only")
    case = Case(device, F32, "nchw", "single", True, batch=16, shape=(32, 28, 28))
    src, _ = case.y()
    go = case.grad_out()
    y = torch.full_like(src, math.nan)
    labels = torch.full_like(case.labels, -1)
    torch.cuda.synchronize()
    producer, consumer = torch.cuda.Stream(), torch.cuda.Stream()
    producer.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(producer):
        if hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(50_000_000)  # tens of ms: a launch on another stream would race ahead
        y.copy_(src)
        labels.copy_(case.labels)
        out_same = torch.ops.wfkern.mask_epilogue(*case.args(y, labels))
        y_ip = y.clone()
        torch.ops.wfkern.mask_epilogue_(*case.args(y_ip, labels))
    consumer.wait_stream(producer)
    with torch.cuda.stream(consumer):
        out_other = torch.ops.wfkern.mask_epilogue(*case.args(y, labels))
        grads = backward_op(go, case, y, True, labels)
    torch.cuda.current_stream().wait_stream(consumer)
    torch.cuda.synchronize()
    ref, ref_grads = case.ref(grads=True)
    check = Check(F32)
    check.close("producer_stream_fwd", out_same, ref)
    check.close("producer_stream_inplace", y_ip, ref)
    check.close("consumer_stream_fwd", out_other, ref)
    check.close("consumer_stream_grad_y", grads[0], ref_grads[0])
    check.close("consumer_stream_grad_aw", grads[1], ref_grads[1], grad=True, elementwise=False)
    return check.result()


def compile_case(device):
    """torch.compile(fullgraph=True) of functions calling the ops: forward, backward, in place."""
    def fn(y, aw, labels, ab, b):
        return torch.relu(torch.ops.wfkern.mask_epilogue(y, aw, labels, ab, b, 1)) * 2

    def fn_inplace(y, aw, labels, ab, b, scale, shift):
        z = y.clone()
        torch.ops.wfkern.mask_epilogue_(z, aw, labels, ab, b, 1, scale, shift)
        return z + 1

    torch._dynamo.reset()
    case = Case(device, F32, "nchw", "sets", True)
    check = Check(F32)
    y, _ = case.y()
    y.requires_grad_(True)
    aw = case.alpha_w.detach().clone().requires_grad_(True)
    ab = case.alpha_b.detach().clone().requires_grad_(True)
    out = torch.compile(fn, fullgraph=True)(y, aw, case.labels, ab, case.bias)
    check.close("compiled_fwd", out, torch.relu(case.ref()) * 2)
    go = case.grad_out()
    grads = torch.autograd.grad(out, [y, aw, ab], go)
    y64 = y.detach().to("cpu", F64).requires_grad_(True)
    aw64 = aw.detach().to("cpu", F64).requires_grad_(True)
    ab64 = ab.detach().to("cpu", F64).requires_grad_(True)
    ref_out = torch.relu(mask_epilogue_ref(y64, aw64, case.labels.cpu(), ab64, case.bias.to("cpu", F64), 1)) * 2
    ref_grads = torch.autograd.grad(ref_out, [y64, aw64, ab64], go.to("cpu", F64))
    check.close("compiled_grad_y", grads[0], ref_grads[0])
    check.close("compiled_grad_aw", grads[1], ref_grads[1], grad=True, elementwise=False)
    check.close("compiled_grad_ab", grads[2], ref_grads[2], grad=True, elementwise=False)
    with torch.no_grad():
        yi, _ = case.y()
        got = torch.compile(fn_inplace, fullgraph=True)(yi, case.alpha_w, case.labels, case.alpha_b, case.bias,
                                                        case.post_scale, case.post_shift)
    check.close("compiled_inplace_post", got, case.ref(post=True) + 1)
    check.true("compiled_inplace: input untouched", torch.equal(yi.cpu(), case.y()[0].cpu()))
    return check.result()


def bad_labels_report(device) -> list:
    """What the raw ops and the wrapper do with labels outside [-1, Nc): reported, never asserted."""
    lines = []
    labels = torch.tensor([0, NUM_CLASSES, -1, -2, 3, 100], dtype=torch.long)
    bad_rows = [1, 3, 5]
    valid_labels = torch.where((labels >= -1) & (labels < NUM_CLASSES), labels, -1)  # for the good rows' reference
    case = Case(device, F32, "nchw", labels, True)

    def describe(what, fn, reference):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fn()
                if device == "cuda":
                    torch.cuda.synchronize()
            except Exception as err:  # noqa: BLE001 -- reported, whatever it is
                lines.append(f"{what}: raised {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
                return
        warned = "; warned: " + " | ".join(str(w.message)[:120] for w in caught) if caught else ""
        if result is None:
            lines.append(f"{what}: returned nothing{warned}")
            return
        out = result.detach().to("cpu", F64)
        nan_rows = [b for b in range(out.shape[0]) if bool(torch.isnan(out[b]).all())]
        some_nan = [b for b in range(out.shape[0]) if bool(torch.isnan(out[b]).any())]
        good = [b for b in range(out.shape[0]) if b not in bad_rows]
        ref = reference()
        diff = float((out[good] - ref[good]).norm() / ref[good].norm())
        lines.append(f"{what}: no exception; rows all-NaN {nan_rows}, rows with NaN {some_nan} (bad label rows "
                     f"{bad_rows}); valid rows rel err {diff:.1e}{warned}")

    def next_valid_call(after):
        """A call with valid labels right after: a kernel may report a bad label on the next call."""
        try:
            torch.ops.wfkern.mask_epilogue(*case.args(case.y()[0], torch.full_like(case.labels, -1)))
            if device == "cuda":
                torch.cuda.synchronize()
            return True
        except Exception as err:  # noqa: BLE001
            lines.append(f"  the next call (valid labels) after {after} raised {type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160] if str(err) else ''}")
            try:  # a sticky CUDA error leaves nothing else to learn in this process
                torch.ops.wfkern.mask_epilogue(*case.args(case.y()[0], torch.full_like(case.labels, -1)))
                if device == "cuda":
                    torch.cuda.synchronize()
                return True
            except Exception as again:  # noqa: BLE001
                lines.append(f"  and the one after it too ({type(again).__name__}): stopping")
                return False

    def out_ref():
        return case.ref(labels=valid_labels)

    def grad_y_ref():
        return case.ref(labels=valid_labels, grads=True)[1][0]

    for what, fn, reference in (
        ("wrapper wfkern.ops.mask_epilogue", lambda: wfkern.ops.mask_epilogue(*case.args(case.y()[0])), out_ref),
        ("raw mask_epilogue", lambda: torch.ops.wfkern.mask_epilogue(*case.args(case.y()[0])), out_ref),
        ("raw mask_epilogue_", lambda: _inplace_result(case), out_ref),
        ("raw mask_epilogue_backward grad_y",
         lambda: backward_op(case.grad_out(), case, case.y()[0], True)[0], grad_y_ref),
    ):
        describe(what, fn, reference)
        if not next_valid_call(what):
            break
    return lines


def _inplace_result(case):
    y, _ = case.y()
    torch.ops.wfkern.mask_epilogue_(*case.args(y))
    return y


def run_bad_labels(report: Report, device: str, timeout: float) -> None:
    """In a child process: an out-of-range label may break the CUDA context for good."""
    if report.stopped or (report.deadline is not None and time.monotonic() + 20 > report.deadline):
        report.line("skip", "bad_labels", "skipped: no time left")
        return
    cmd = [sys.executable, os.path.abspath(__file__), "--device", device, "--bad-labels-only", "--seed", str(_SEED[0])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = proc.stdout.strip().splitlines() or [f"(no output) {proc.stderr.strip()[-300:]}"]
        for ln in text:
            report.line("info", "bad_labels", ln)
        if proc.returncode != 0:
            report.line("info", "bad_labels", f"child exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    except subprocess.TimeoutExpired:
        report.line("info", "bad_labels", f"child did not finish in {timeout:.0f}s (hang?)")


# ---- main ---------------------------------------------------------------------------------------

def plan(quick: bool):
    """[(name, dtype, layout, labels, bias)] for the operator matrix."""
    cases = []
    if quick:
        for dname in ("fp32", "bf16"):
            for layout in QUICK_LAYOUTS:
                for labels in ("single", "sets"):
                    cases.append((dname, layout, labels, True))
        cases += [("fp16", "nchw_1x1", "single", True), ("fp64", "bf", "sets", False), ("fp32", "nchw", "none", True),
                  ("fp32", "channels_last", "dups", False)]
        return cases
    for dname in DTYPES:
        for layout in LAYOUTS:
            for labels in LABEL_KINDS:
                for bias in (True, False):
                    cases.append((dname, layout, labels, bias))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="small shapes only (for compute-sanitizer)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="run the torch.compile case (default: on for a full CUDA run)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-bad-labels", action="store_true", help="skip the bad-labels report")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no case after this many seconds")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: from the clock; printed)")
    parser.add_argument("--bad-labels-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    _SEED[0] = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    if args.bad_labels_only:
        for line in bad_labels_report(args.device):
            print(line, flush=True)
        return 0
    started = time.monotonic()
    report = Report(started + args.deadline_s if args.deadline_s is not None else None)
    device = args.device
    print(f"# gpu_smoke: torch {torch.__version__}, wfkern backend {wfkern.backend()}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" and torch.cuda.is_available() else "")
          + (", quick" if args.quick else "") + f", seed {_SEED[0]} (--seed {_SEED[0]} repeats this run)",
          flush=True)
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU is visible to torch", flush=True)
        return 2
    op = torch.ops.wfkern.mask_epilogue.default if wfkern.ops._load.loaded() else None
    if op is None or not op.has_kernel_for_dispatch_key(device.upper()):
        print(f"gpu_smoke: wfkern._C has no {device.upper()} kernel ({wfkern.describe_backend().splitlines()[1]})",
              flush=True)
        return 2
    try:
        run_all(report, device, args)
    except KeyboardInterrupt:  # the stage's time cap (SIGINT): keep the counts so far
        report.stopped = "interrupted"
    print(f"# {time.monotonic() - started:.1f}s", flush=True)
    return report.finish()


def run_all(report: Report, device: str, args) -> None:
    for dname, layout, labels, bias in plan(args.quick):
        name = f"ops {dname} {layout} {labels} {'bias' if bias else 'nobias'}"
        report.run(name, ops_case, device, DTYPES[dname], layout, labels, bias)
    report.run("side_streams", stream_case, device)
    if not args.quick:
        for layout in ("nchw", "channels_last"):
            report.run(f"large bf16 {layout}", large_case, device, layout)
    # after the plain cases: a capture that goes wrong may leave the stream unusable
    for kind in ("single", "sets"):
        report.run(f"cuda_graph {kind} (labels changed between replays)", graph_case, device, kind)
    use_compile = args.compile if args.compile is not None else (device == "cuda" and not args.quick)
    if use_compile:
        report.run("torch.compile fullgraph", compile_case, device)
    else:
        report.line("skip", "torch.compile fullgraph", "off (--compile to run it)")
    if not args.quick and not args.no_bad_labels:
        left = None if report.deadline is None else report.deadline - time.monotonic()
        run_bad_labels(report, device, timeout=min(90.0, left) if left is not None else 90.0)


if __name__ == "__main__":
    sys.exit(main())
