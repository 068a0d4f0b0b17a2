"""Interleaved A/B timing of wfkern's GPU performance targets; one JSON line per result, flushed.

    python3 bench/gpu_targets.py --out OUT/bench.jsonl --deadline-s 150          # CUDA, default set
    python3 bench/gpu_targets.py --out OUT/bench.jsonl --deadline-s 200 --full   # + compiled, materialised
    python3 bench/gpu_targets.py --device cpu --models resnet18 --rounds 3       # small sizes, any machine

What is measured (bf16, batch 256, 224 px on CUDA; mixed per-sample labels on the device; sizes and
dtypes from bench/configs.py):

* forward, eager, under torch.inference_mode: WF kernel / plain and WF reference / plain
  (resnet18, resnet50, vit_small); with --full also compiled vs compiled and materialised
  per-sample weights / plain;
* the untraining step, cross_entropy(wf(x, forget=labels)).backward() with the gates requiring
  grad, against the floor cross_entropy(model(x_req_grad)).backward() with the model frozen:
  time ratio and peak-memory ratio (max_memory_allocated above the allocated baseline, each
  measured alone after reset_peak_memory_stats);
* the epilogue op on a >= 64 MB bf16 activation, NCHW and channels_last: forward, in place and
  backward as GB/s and as a fraction of a same-size device-to-device copy timed in the same rounds.

Timing: warm-up first, then rounds that time every variant back to back with CUDA events (the
order rotates each round), and the ratio is the median of the per-round ratios. Rounds are sized
to fit --deadline-s: each task gets min(its cap, its share of the time left) and is skipped with a
"no time left" record when even a few rounds would not fit. Targets and verdicts: bench/gpu_summary.py.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(HERE), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import wfkern  # noqa: E402
from configs import DTYPE, MODEL_SIZES, NUM_CLASSES, make_workload, materialized, prepare_device  # noqa: E402
from gpu_summary import describe, target_text, value_text, verdict_word, verdicts  # noqa: E402

MODELS = ["resnet18", "resnet50", "vit_small"]
EPILOGUE_SHAPE = {"cuda": (256, 64, 56, 56), "cpu": (32, 64, 32, 32)}  # cuda: 98 MiB of bf16
MAX_ROUNDS = {"cuda": 30, "cpu": 15}
MIN_ROUNDS = 5
# seconds a task may take at most, its weight in sharing the time left, and the least it needs
CAPS = dict(epilogue=(6, 1, 1.5), forward=(10, 2, 4), untrain=(14, 3, 6), materialized=(12, 1, 15),
            compiled=(12, 1, 3))
# two compiles, a guess for an H100
COMPILE_COST_S = {"resnet18": 70, "vit_small": 80, "vit_small_qkv": 80, "resnet50": 120}


class Clock:
    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn, reps: int = 1) -> float:
        """Seconds per call of fn (reps calls back to back); CUDA events on the current stream."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / reps
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps


def interleave(clock: Clock, impls: dict, share_s: float, max_rounds: int, reps: int = 1, warmup: int = 2,
               rounds: int | None = None) -> dict:
    """{name: [seconds per call, one per round]}: every impl once per round, the order rotating."""
    names = list(impls)
    for _ in range(warmup):
        for fn in impls.values():
            fn()
    clock.sync()
    probe = {n: clock.time(impls[n], reps) for n in names}  # one round, also the cost estimate
    if rounds is None:
        per_round = sum(probe.values()) * reps
        rounds = int(max(MIN_ROUNDS, min(max_rounds, (share_s - per_round) / max(per_round, 1e-9))))
    times = {n: [probe[n]] for n in names}
    for round_index in range(1, rounds):
        shift = round_index % len(names)
        for n in names[shift:] + names[:shift]:
            times[n].append(clock.time(impls[n], reps))
    return times


def median_ratio(times: dict, name: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def peak_extra_mb(clock: Clock, fn, reset) -> float | None:
    """Peak allocated memory of one fn() above what was allocated before it (CUDA only)."""
    if not clock.cuda:
        return None
    reset()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    reset()
    return peak / 2**20


class Run:
    """The output file, the deadline and the printing."""

    def __init__(self, args):
        self.args = args
        self.device = args.device
        self.clock = Clock(args.device)
        self.start = time.monotonic()
        self.deadline = self.start + args.deadline_s if args.deadline_s is not None else None
        self.errors = 0
        self.out = open(args.out, "a", encoding="utf-8") if args.out else None
        self.workloads: dict = {}

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def emit(self, record: dict) -> None:
        record = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}
        if self.out is not None:
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
        kind = record.get("kind")
        if kind in ("forward", "untrain", "epilogue"):
            checks = verdicts(record)
            for check in checks or [None]:
                field = check["field"] if check else "ratio"
                tail = f"  target {target_text(check)}: {verdict_word(check['met'])}" if check else "  (info)"
                what = describe(record) + (" peak memory" if field == "mem_ratio" else "")
                print(f"{what:<58} {value_text(record, field):>26}{tail}", flush=True)
        elif kind == "skip":
            print(f"skipped {record['what']}: {record['reason']}", flush=True)
        elif kind == "error":
            print(f"ERROR {record['what']}: {record['error']}", flush=True)

    def workload(self, name: str):
        if name not in self.workloads:
            self.workloads[name] = make_workload(name, self.device)
        return self.workloads[name]

    def free(self) -> None:
        gc.collect()
        if self.clock.cuda:
            torch.cuda.empty_cache()


# ---- tasks --------------------------------------------------------------------------------------

def task_epilogue(run: Run, layout: str, share: float) -> None:
    device = run.device
    dtype = DTYPE[device]
    gen = torch.Generator().manual_seed(0)
    batch, channels, height, width = EPILOGUE_SHAPE[device]
    y = torch.randn(batch, channels, height, width, generator=gen).to(device, dtype)
    if layout == "channels_last":
        y = y.contiguous(memory_format=torch.channels_last)
    alpha_w = torch.randn(NUM_CLASSES, channels, generator=gen).to(device)
    alpha_b = torch.randn(NUM_CLASSES, channels, generator=gen).to(device)
    bias = torch.randn(channels, generator=gen).to(device, dtype)
    labels = torch.randint(-1, NUM_CLASSES, (batch,), generator=gen).to(device)
    grad = torch.randn_like(y)
    buf = torch.empty_like(y)
    buf.copy_(y)
    ops = torch.ops.wfkern
    impls = {
        "copy": lambda: buf.copy_(y),
        "forward": lambda: ops.mask_epilogue(y, alpha_w, labels, alpha_b, bias, 1),
        # repeated in place on one buffer: the values converge to a fixed point, never blow up
        "inplace": lambda: ops.mask_epilogue_(buf, alpha_w, labels, alpha_b, bias, 1),
        "backward": lambda: ops.mask_epilogue_backward(grad, y, alpha_w, labels, alpha_b, bias, 1, None, None, False, True),
    }
    moved = dict(copy=2, forward=2, inplace=2, backward=3)  # tensors of y's size read + written
    size = y.numel() * y.element_size()
    with torch.no_grad():
        times = interleave(run.clock, impls, share, MAX_ROUNDS[device], reps=5 if run.clock.cuda else 1,
                           rounds=run.args.rounds)
    copy_gbps = moved["copy"] * size / statistics.median(times["copy"]) / 1e9
    for op in ("forward", "inplace", "backward"):
        fraction = statistics.median(moved[op] / moved["copy"] * copy_time / op_time
                                     for copy_time, op_time in zip(times["copy"], times[op]))
        run.emit(dict(kind="epilogue", op=op, layout=layout, impl="kernel", vs="copy", fraction=fraction,
                      gbps=moved[op] * size / statistics.median(times[op]) / 1e9, copy_gbps=copy_gbps,
                      ms=statistics.median(times[op]) * 1e3, mb=size / 2**20, tensors=moved[op],
                      shape=list(y.shape), dtype=str(dtype).replace("torch.", ""), rounds=len(times[op])))


def _model_info(run: Run, name: str) -> dict:
    batch, px = MODEL_SIZES[run.device][name]
    return dict(model=name, batch=batch, px=px, dtype=str(DTYPE[run.device]).replace("torch.", ""))


def task_forward(run: Run, name: str, share: float) -> None:
    model, wf, x, labels = run.workload(name)

    def ref():
        with wfkern.use_reference():
            return wf(x, forget=labels)

    impls = {"plain": lambda: model(x), "wf": lambda: wf(x, forget=labels), "wf_ref": ref}
    with torch.inference_mode():
        times = interleave(run.clock, impls, share, MAX_ROUNDS[run.device], rounds=run.args.rounds)
    _emit_ratios(run, "forward", name, times, "plain", mode="eager")


def _emit_ratios(run: Run, kind: str, name: str, times: dict, base: str, **extra) -> None:
    for impl in times:
        if impl != base:
            run.emit(dict(kind=kind, **_model_info(run, name), impl=impl, vs=base,
                          ratio=median_ratio(times, impl, base), ms=statistics.median(times[impl]) * 1e3,
                          base_ms=statistics.median(times[base]) * 1e3, rounds=len(times[impl]), **extra))


def task_untrain(run: Run, name: str, share: float) -> None:
    model, wf, x, labels = run.workload(name)
    targets = labels.clamp_min(0)
    x_grad = x.detach().clone().requires_grad_(True)

    def floor():
        loss = F.cross_entropy(model(x_grad).float(), targets)
        loss.backward()
        return loss.detach()

    def step():
        loss = F.cross_entropy(wf(x, forget=labels).float(), targets)
        loss.backward()
        return loss.detach()

    def reset():
        wf.zero_grad(set_to_none=True)
        x_grad.grad = None

    impls = {"floor": floor, "wf": step}
    times = interleave(run.clock, impls, share, MAX_ROUNDS[run.device], rounds=run.args.rounds)
    peaks = {k: peak_extra_mb(run.clock, fn, reset) for k, fn in impls.items()}
    reset()
    extra = {}
    if peaks["wf"] is not None and peaks["floor"]:
        extra = dict(peak_mb=peaks["wf"], base_peak_mb=peaks["floor"], mem_ratio=peaks["wf"] / peaks["floor"])
    _emit_ratios(run, "untrain", name, times, "floor", **extra)


def task_materialized(run: Run, name: str, share: float) -> None:
    model, wf, x, labels = run.workload(name)
    with torch.inference_mode():
        impls = {"plain": lambda: model(x), "materialized": materialized(wf, x, labels)}
        times = interleave(run.clock, impls, share, MAX_ROUNDS[run.device], warmup=1, rounds=run.args.rounds)
    _emit_ratios(run, "forward", name, times, "plain", mode="eager")


def task_compiled(run: Run, name: str, share: float) -> None:
    model, wf, x, labels = run.workload(name)
    torch._dynamo.reset()
    impls = {"plain": torch.compile(lambda: model(x)), "wf": torch.compile(lambda: wf(x, forget=labels))}
    with torch.inference_mode():
        started = time.monotonic()
        for fn in impls.values():
            fn()
        run.clock.sync()
        compile_s = time.monotonic() - started
        times = interleave(run.clock, impls, share, MAX_ROUNDS[run.device], rounds=run.args.rounds)
    _emit_ratios(run, "forward", name, times, "plain", mode="compiled", compile_s=compile_s)
    torch._dynamo.reset()


TASKS = dict(epilogue=task_epilogue, forward=task_forward, untrain=task_untrain, materialized=task_materialized,
             compiled=task_compiled)


def plan(args) -> list:
    """[(task kind, subject)] in priority order."""
    models = [m for m in (args.models or MODELS)]
    only = set(args.only.split(",")) if args.only else None
    tasks = [("epilogue", layout) for layout in ("nchw", "channels_last")]
    for name in models:
        tasks += [("forward", name), ("untrain", name)]
    if args.full:  # the compiled targets first; the materialised weights are for contrast only
        ordered = [m for m in ("resnet18", "vit_small", "vit_small_qkv", "resnet50") if m in models]
        tasks += [("compiled", name) for name in ordered]
        # per-sample ResNet-50 weights at batch 256 do not fit comfortably
        tasks += [("materialized", name) for name in ordered if name != "resnet50"]
    return [t for t in tasks if only is None or t[0] in only]


def run_task(run: Run, tasks: list, i: int) -> None:
    kind, subject = tasks[i]
    what = f"{kind} {subject}"
    if kind != "epilogue" and subject not in MODEL_SIZES[run.device]:
        run.emit(dict(kind="skip", what=what, reason=f"{subject} is not benchmarked on {run.device}"))
        return
    cap, weight, least = CAPS[kind]
    # compiling comes before the timed rounds: the share is what is left for the rounds
    setup = COMPILE_COST_S.get(subject, 100) if kind == "compiled" and run.clock.cuda else 0.0
    weights = sum(CAPS[k][1] for k, _ in tasks[i:])
    left = run.left()
    share = min(cap, max(0.0, left - setup - 2) * weight / weights) if left != float("inf") else cap
    least += setup
    if left < least or (left != float("inf") and share < (least - setup) / 2):
        run.emit(dict(kind="skip", what=what, reason=f"skipped: no time left ({max(left, 0):.0f}s left, "
                                                     f"needs ~{least:.0f}s)"))
        return
    try:
        if kind != "epilogue" and subject not in run.workloads:
            run.workload(subject)
        TASKS[kind](run, subject, share)
    except ImportError as err:  # timm missing: vit_small cannot be built here
        run.emit(dict(kind="skip", what=what, reason=f"{type(err).__name__}: {err}"))
    except Exception as err:  # one broken model must not lose the rest
        run.errors += 1
        where = traceback.extract_tb(err.__traceback__)[-1]
        run.emit(dict(kind="error", what=what, error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                      f" ({os.path.basename(where.filename)}:{where.lineno})"[:400]))
    finally:
        run.free()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default=None, help="JSON lines file to append to (default: print only)")
    parser.add_argument("--deadline-s", type=float, default=None, help="finish within this many seconds")
    parser.add_argument("--full", action="store_true", help="also compiled and materialised-weights forwards")
    parser.add_argument("--models", nargs="*", default=None, help=f"default: {' '.join(MODELS)}")
    parser.add_argument("--only", default=None, help="comma list of task kinds: " + ",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=None, help="fixed rounds per task (default: fit the time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if not prepare_device(args.device, args.threads, "gpu_targets"):
        return 2
    run = Run(args)
    meta = dict(kind="meta", device=args.device, torch=torch.__version__, backend=wfkern.backend(),
                dtype=str(DTYPE[args.device]).replace("torch.", ""), mode="full" if args.full else "default",
                time=datetime.now(timezone.utc).isoformat(timespec="seconds"), threads=torch.get_num_threads())
    if run.clock.cuda:
        meta.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    capability="%d.%d" % torch.cuda.get_device_capability(),
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    run.emit(meta)
    print(f"# gpu_targets: {meta.get('gpu', 'cpu')}, {meta['dtype']}, backend {meta['backend']}, mode {meta['mode']}, "
          f"deadline {f'{args.deadline_s:.0f}s' if args.deadline_s is not None else 'none'}", flush=True)
    tasks = plan(args)
    try:
        for i, (_, subject) in enumerate(tasks):
            run_task(run, tasks, i)
            if subject in run.workloads and all(s != subject for _, s in tasks[i + 1:]):
                del run.workloads[subject]  # no later task needs this model: free it
                run.free()
    except KeyboardInterrupt:  # the stage's time cap: what was measured is already written
        run.emit(dict(kind="skip", what="remaining tasks", reason="interrupted (stage time cap)"))
        return 3
    print(f"# gpu_targets: done in {time.monotonic() - run.start:.0f}s, {run.errors} errors", flush=True)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
