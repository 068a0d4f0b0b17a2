"""CPU cost of the forget input in ONNX: the exported WF model against the plain model's ONNX export, onnxruntime.

Both files are exported in this process (the WF model through ``wfkern.export.export_onnx``, the plain one with the
same ``torch.onnx.export(dynamo=True)`` call and a dynamic batch), run by onnxruntime sessions with the same options,
and timed in interleaved rounds (the order rotating); ratios are medians of the per-round ratios.

    python bench/export_onnx.py [--threads 2] [--rounds 15] [--models resnet18 vit_small]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile

import numpy as np
import torch

from configs import MODEL_SIZES, NUM_CLASSES, make_workload
from gpu_targets import Clock, interleave, median_ratio

ARCH = {"resnet18": "torchvision:resnet18", "vit_small": "timm:vit_small_patch16_224"}


def _session(path: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _export(name: str, folder: str):
    """(plain ONNX path, WF ONNX path, input batch, batch size, resolution)."""
    from wfkern.export import ExportSource, export_onnx
    from wfkern.export.writers import _quiet_exporter
    from wfkern.train.checkpoint import ModelConfig

    batch, resolution = MODEL_SIZES["cpu"][name]
    model, wf, x, _ = make_workload(name, "cpu")
    config = ModelConfig(ARCH[name], NUM_CLASSES, 3, resolution)
    source = ExportSource(wf.eval(), config, "0" * 64, "0" * 64)
    wf_path, plain_path = os.path.join(folder, f"{name}_wf.onnx"), os.path.join(folder, f"{name}_plain.onnx")
    export_onnx(source, wf_path, verify=False)
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(model.eval(), (x[:2],), dynamo=True, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=dims, optimize=True, verbose=False).save(plain_path, external_data=False)
    return plain_path, wf_path, x.numpy(), batch, resolution


def bench(name: str, threads: int, rounds: int, folder: str) -> dict:
    plain_path, wf_path, x, batch, resolution = _export(name, folder)
    plain, wf = _session(plain_path, threads), _session(wf_path, threads)
    gen = np.random.default_rng(0)
    mixed = gen.integers(-1, NUM_CLASSES, (batch, 1))  # one label per sample, some -1
    sets = gen.integers(-1, NUM_CLASSES, (batch, 2))  # two-class sets
    nothing = np.full((batch, 1), -1)
    impls = {"plain": lambda: plain.run(None, {"input": x}),
             "mixed": lambda: wf.run(None, {"input": x, "forget": mixed}),
             "sets": lambda: wf.run(None, {"input": x, "forget": sets}),
             "nothing": lambda: wf.run(None, {"input": x, "forget": nothing})}
    times = interleave(Clock("cpu"), impls, share_s=0, max_rounds=rounds, rounds=rounds)
    return dict(model=name, batch=batch, resolution=resolution, plain_ms=statistics.median(times["plain"]) * 1e3,
                **{f"{k}_ms": statistics.median(times[k]) * 1e3 for k in impls if k != "plain"},
                **{f"{k}_ratio": median_ratio(times, k, "plain") for k in impls if k != "plain"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (and torch's)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=list(ARCH), choices=list(ARCH))
    args = parser.parse_args(argv)
    try:
        import onnxruntime
    except ImportError:
        print("bench/export_onnx.py needs onnxruntime, onnx and onnxscript: pip install 'wfkern[export]'",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# ONNX forget input vs plain ONNX, onnxruntime {onnxruntime.__version__} CPU, fp32, {args.threads} "
          f"threads, {args.rounds} interleaved rounds, torch {torch.__version__}, {now}")
    print("| model | batch | px | plain ms | WF, mixed labels ms | mixed / plain | two-class sets / plain "
          "| all -1 / plain |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            r = bench(name, args.threads, args.rounds, folder)
            print(f"| {r['model']} | {r['batch']} | {r['resolution']} | {r['plain_ms']:.1f} | {r['mixed_ms']:.1f} | "
                  f"{r['mixed_ratio']:.3f}x | {r['sets_ratio']:.3f}x | {r['nothing_ratio']:.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
