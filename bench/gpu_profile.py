"""Where the GPU time goes: the inputs for a hardware-counter profile, and a kernel table per model.

    python3 bench/gpu_profile.py ops                 # each epilogue op once on the benchmark shapes
    ncu --kernel-name regex:'forward_|backward_|...' ... python3 bench/gpu_profile.py ops  # gpu_check.sh
    python3 bench/gpu_profile.py calls --shapes nchw_98MiB        # host vs device time of op calls
    python3 bench/gpu_profile.py models --models vit_small resnet18   # torch.profiler kernel tables
    python3 bench/gpu_profile.py compiled --models resnet18 resnet50  # the same, both models torch.compile'd

`ops` runs, once each, the forward, in-place forward and backward of the epilogue on the
benchmark's 98 MiB bf16 activation (NCHW and channels_last) and on a ViT-S/16 qkv output
(256 x 197 x 1152 bf16, with bias gates), plus a device-to-device copy of each for scale. `calls`
times whole op calls with torch.profiler (host and device time: is a call launch-bound?). `models`
prints, per model, the CUDA kernels of one plain
and one WF forward (bf16, batch 256, 224 px, mixed labels) by total time, so that the extra time
of the WF forward is seen kernel by kernel: after the two tables, a comparison lists each kernel's
calls and time per forward in both, the kernels with the most extra time first, and the totals (calls and
time per forward). `compiled` does the same for ``torch.compile``'d forwards (as bench/gpu_targets.py compiles
them), to find where a compiled WF forward's extra time goes (inductor's kernels are named for what they fuse).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(HERE), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from configs import NUM_CLASSES, make_workload, prepare_device  # noqa: E402

OP_SHAPES = {  # name -> (shape, channel dim)
    "nchw_98MiB": ((256, 64, 56, 56), 1),
    "channels_last_98MiB": ((256, 64, 56, 56), 1),
    "vit_qkv_rows": ((256, 197, 1152), -1),
}


def op_inputs(name: str, device: str):
    """Made on the device in their dtype: no conversion kernel for a profiler to catch."""
    shape, channel_dim = OP_SHAPES[name]
    torch.manual_seed(0)
    y = torch.randn(shape, device=device, dtype=torch.bfloat16)
    if name.startswith("channels_last"):
        y = y.contiguous(memory_format=torch.channels_last)
    channels = shape[channel_dim]
    aw = torch.randn(NUM_CLASSES, channels, device=device)
    ab = torch.randn(NUM_CLASSES, channels, device=device)
    bias = torch.randn(channels, device=device, dtype=torch.bfloat16)
    labels = torch.randint(-1, NUM_CLASSES, (shape[0],), device=device)
    return y, aw, labels, ab, bias, channel_dim


def run_ops(device: str, names) -> None:
    """Each op once per shape (a kernel profiler replays every kernel it catches on its own)."""
    ops = torch.ops.wfkern
    mark = torch.cuda.nvtx.range if device == "cuda" else contextlib.nullcontext
    for name in names:
        y, aw, labels, ab, bias, channel_dim = op_inputs(name, device)
        grad = torch.randn_like(y)
        calls = {
            "copy": lambda: torch.empty_like(y).copy_(y),
            "forward": lambda: ops.mask_epilogue(y, aw, labels, ab, bias, channel_dim, None, None, False),
            "inplace": lambda: ops.mask_epilogue_(y, aw, labels, ab, bias, channel_dim, None, None),
            "backward": lambda: ops.mask_epilogue_backward(grad, y, aw, labels, ab, bias, channel_dim, None, None,
                                                           True, True),
        }
        for what, fn in calls.items():
            with mark(f"{name} {what}"):
                fn()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"ops {name}: {tuple(y.shape)} {y.dtype} {'channels_last ' if name.startswith('channels_last') else ''}"
              f"{y.numel() * y.element_size() / 2**20:.0f} MiB: copy, forward, inplace, backward")


def print_profile(title: str, fn, device: str, activities, rows: int, *, warmup: int, reps: int, width: int):
    """Warm up, profile ``reps`` calls of ``fn`` (synchronised at the end), print the table by device time;
    return the profile."""
    from torch.profiler import profile

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    with profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
        sync()
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(f"\n### {title}")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=width))
    return prof


def kernel_totals(prof, device: str, reps: int) -> dict[str, tuple[float, float]]:
    """Per kernel (CUDA) or operator (CPU) name: (calls, self time in µs) per call of the profiled function.
    Names that differ only by a compiled graph's hash or frame number are counted as one name, so the plain
    and the WF forward's compiled regions compare."""
    import re

    from torch.autograd import DeviceType

    totals = {}
    for event in prof.key_averages():
        if device == "cuda":
            if event.device_type != DeviceType.CUDA:
                continue
            micros = getattr(event, "self_device_time_total", None)
            if micros is None:  # torch < 2.4 named it for CUDA
                micros = event.self_cuda_time_total
        else:
            micros = event.self_cpu_time_total
        name = re.sub(r"(CompiledFxGraph) \w+|(Torch-Compiled Region): \d+/\d+", r"\1\2", event.key)
        calls, total = totals.get(name, (0.0, 0.0))
        totals[name] = (calls + event.count / reps, total + micros / reps)
    return totals


def compare_kernels(plain: dict, wf: dict, rows: int, width: int = 70) -> list[str]:
    """Lines of a table: each name's calls and µs in the plain and the WF forward, most extra time first, then
    the totals. A kernel only the WF forward runs shows 0 calls on the plain side."""
    names = sorted(set(plain) | set(wf), key=lambda n: wf.get(n, (0, 0))[1] - plain.get(n, (0, 0))[1], reverse=True)
    lines = [f"{'kernel':<{width}} {'plain calls':>11} {'plain us':>10} {'wf calls':>9} {'wf us':>10} {'extra us':>10}"]
    for name in names[:rows]:
        (pc, pt), (wc, wt) = plain.get(name, (0, 0.0)), wf.get(name, (0, 0.0))
        lines.append(f"{name[:width]:<{width}} {pc:>11.0f} {pt:>10.1f} {wc:>9.0f} {wt:>10.1f} {wt - pt:>10.1f}")
    (plain_calls, plain_us), (wf_calls, wf_us) = ((sum(c for c, _ in d.values()), sum(t for _, t in d.values()))
                                                  for d in (plain, wf))
    ratio = f"{wf_us / plain_us:.3f}x" if plain_us > 0 else "n/a"
    lines.append(f"per forward: plain {plain_calls:.0f} calls, {plain_us:.1f} us; wf {wf_calls:.0f} calls, "
                 f"{wf_us:.1f} us (wf/plain {ratio})")
    return lines


def run_calls(device: str, names, reps: int, rows: int) -> None:
    """Host and device time of whole op calls (reps back to back, after a warm-up): a call whose
    host time exceeds its kernels' time is launch-bound, whatever the kernels' bandwidth."""
    from torch.profiler import ProfilerActivity

    ops = torch.ops.wfkern
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    for name in names:
        y, aw, labels, ab, bias, channel_dim = op_inputs(name, device)
        grad, buf = torch.randn_like(y), y.clone()
        calls = {
            "copy": lambda: buf.copy_(y),
            "forward": lambda: ops.mask_epilogue(y, aw, labels, ab, bias, channel_dim, None, None, False),
            "inplace": lambda: ops.mask_epilogue_(buf, aw, labels, ab, bias, channel_dim, None, None),
            "backward": lambda: ops.mask_epilogue_backward(grad, y, aw, labels, ab, bias, channel_dim, None, None,
                                                           False, True),
        }
        for what, fn in calls.items():
            print_profile(f"{name} {what}: {reps} calls back to back", fn, device, activities, rows,
                          warmup=1, reps=reps, width=60)


def run_models(device: str, names, rows: int, *, compiled: bool = False, reps: int = 1) -> None:
    """Kernel tables of one plain and one WF forward per model, then their comparison (``compiled``: both
    ``torch.compile``'d first, warmed up before the profile)."""
    from torch.profiler import ProfilerActivity

    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    how = "compiled" if compiled else "eager"
    for name in names:
        model, wf, x, labels = make_workload(name, device)
        forwards = {"plain": lambda: model(x), "wf": lambda: wf(x, forget=labels)}
        if compiled:
            forwards = {label: torch.compile(fn) for label, fn in forwards.items()}
        totals = {}
        with torch.inference_mode():
            for label, fn in forwards.items():
                prof = print_profile(f"{name} {label} forward, {how} ({reps} call(s), {x.shape[0]} x {x.shape[-1]} px, "
                                     f"{x.dtype})", fn, device, [activity], rows, warmup=3, reps=reps, width=70)
                totals[label] = kernel_totals(prof, device, reps)
        print(f"\n### {name}, {how}: where the WF forward's time goes (per forward)")
        print("\n".join(compare_kernels(totals["plain"], totals["wf"], rows)))
        del model, wf, x, forwards
        if device == "cuda":
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["ops", "calls", "models", "compiled"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shapes", nargs="*", default=list(OP_SHAPES), choices=list(OP_SHAPES))
    parser.add_argument("--models", nargs="*", default=["vit_small", "resnet18"])
    parser.add_argument("--rows", type=int, default=14, help="kernel table rows per forward")
    parser.add_argument("--reps", type=int, default=5, help="calls per op for `calls`, forwards for `compiled`")
    args = parser.parse_args(argv)
    if not prepare_device(args.device, None, "gpu_profile"):
        return 2
    import wfkern  # noqa: F401  (registers the ops)

    if args.what == "ops":
        run_ops(args.device, args.shapes)
    elif args.what == "calls":
        run_calls(args.device, args.shapes, args.reps, args.rows)
    else:
        run_models(args.device, args.models, args.rows, compiled=args.what == "compiled",
                   reps=args.reps if args.what == "compiled" else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
