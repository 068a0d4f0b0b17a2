"""Interleaved A/B timing of the plain model and the WF model with mixed labels.

Under background load, consecutive benchmark groups see different load. Here
each round times plain then WF (then WF on the reference) back to back, and the ratio reported
is the median of the per-round ratios.

    python bench/paired.py [--device cpu|cuda] [--rounds 15] [--models resnet18 vit_small]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

import wfkern
from configs import DTYPE, MODEL_SIZES, make_workload, prepare_device
from gpu_targets import Clock, interleave, median_ratio


def paired(name: str, device: str, rounds: int) -> dict:
    batch, resolution = MODEL_SIZES[device][name]
    model, wf, x, labels = make_workload(name, device)

    def ref():
        with wfkern.use_reference():
            return wf(x, forget=labels)

    impls = {"plain": lambda: model(x), "wf": lambda: wf(x, forget=labels), "wf_ref": ref}
    with torch.inference_mode():  # two warm-up calls each, then rounds in a rotating order
        times = interleave(Clock(device), impls, share_s=0, max_rounds=rounds, rounds=rounds)
    return dict(model=name, batch=batch, resolution=resolution, plain_ms=statistics.median(times["plain"]) * 1e3,
                **{f"{k}_ratio": median_ratio(times, k, "plain") for k in impls if k != "plain"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if not prepare_device(args.device, args.threads, "bench/paired.py"):
        return 2
    models = args.models or list(MODEL_SIZES[args.device])
    print(f"# paired forward timing, {args.device}, {DTYPE[args.device]}, backend {wfkern.backend()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("| model | batch | px | plain ms (median) | WF kernel / plain | WF reference / plain |")
    print("|---|---|---|---|---|---|")
    for name in models:
        row = paired(name, args.device, args.rounds)
        print(f"| {row['model']} | {row['batch']} | {row['resolution']} | {row['plain_ms']:.1f} | "
              f"{row['wf_ratio']:.3f} | {row['wf_ref_ratio']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
