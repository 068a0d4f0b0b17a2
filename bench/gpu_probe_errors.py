"""Does an error raised inside wfkern's compiled ops reach Python as an exception? One child process per probe.

    python3 bench/gpu_probe_errors.py [--gdb]

A C++ exception that crashes the process (seen once on a GPU machine) shows here as "CRASHED";
with --gdb, a crashed probe is run again under cuda-gdb (or gdb) for a native backtrace.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

PROBES = {
    "torch_own_error": "import torch; torch.empty(6, device='cuda').view(4)",
    "cpu_kernel_bad_label": (
        "import torch, wfkern; torch.ops.wfkern.mask_epilogue(torch.ones(2, 3), torch.zeros(4, 3), torch.tensor([0, 9]))"),
    "cuda_op_bad_grad_device": (
        "import torch, wfkern; y = torch.ones(2, 3, device='cuda'); a = torch.zeros(4, 3, device='cuda');"
        "torch.ops.wfkern.mask_epilogue_backward(torch.ones(2, 3), y, a, torch.tensor([0, 1], device='cuda'),"
        " None, None, -1, None, None, False, True)"),
    "cuda_label_report": (
        "import torch, wfkern; from wfkern.ops import mask_epilogue, raise_label_errors;"
        "out = mask_epilogue(torch.ones(2, 3, device='cuda'), torch.zeros(4, 3, device='cuda'),"
        " torch.tensor([0, 9], device='cuda'), channel_dim=-1); torch.cuda.synchronize();"
        "print('row NaN:', out[1].isnan().all().item(), 'row ok:', (~out[0].isnan()).all().item()); raise_label_errors()"),
}


def run(code: str, debugger: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-X", "faulthandler", "-c", code]
    if debugger:
        cmd = [debugger, "-q", "-batch", "-ex", "run", "-ex", "bt 25", "--args"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gdb", action="store_true", help="backtrace a crashed probe under cuda-gdb / gdb")
    args = parser.parse_args()
    crashed = 0
    for name, code in PROBES.items():
        proc = run(code)
        last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        if proc.returncode < 0:
            crashed += 1
            print(f"probe {name}: CRASHED (signal {-proc.returncode}); {proc.stdout.strip()[:200]}")
            debugger = shutil.which("cuda-gdb") or shutil.which("gdb")
            if args.gdb and debugger:
                trace = run(code, debugger)
                frames = [ln for ln in (trace.stdout + trace.stderr).splitlines() if ln.startswith("#")]
                print("\n".join(f"    {ln[:220]}" for ln in frames[:25]) or "    (no backtrace)")
        else:
            print(f"probe {name}: exit {proc.returncode}; {proc.stdout.strip()[:120]} | {last}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
