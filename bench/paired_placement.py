"""Forward cost of each ViT gate placement: plain vs WF models gated at qkv, + fc1, + fc1 + fc2, + fc1 + proj, all.

Interleaved rounds (bench/paired.py's ``interleave`` / ``median_ratio``): each round times the plain model and every
placement back to back in a rotating order; a ratio is the median of the per-round ratios to the plain model. Random
gates (logits ~ N(0, 3)), mixed labels (-1 included), inference mode.

    python bench/paired_placement.py --threads 1 --rounds 15
    python bench/paired_placement.py --models vit_s16 --rounds 9
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

import wfkern
from wfkern.models import create_model
from gpu_targets import Clock, interleave, median_ratio

NUM_CLASSES = 10
# name: (builder, batch, input side, channels)
MODELS = {
    # the vit_digits row of python/quality.py: timm, 4 blocks, width 96, 3 heads, patch 4, 16 px, 1 channel
    "vit_digits": (lambda: create_model("vit_t", NUM_CLASSES, 1, 16, depth=4, embed_dim=96, num_heads=3),
                   256, 16, 1),
    # timm ViT-S/16 (12 blocks, width 384, 6 heads) at 64 px: 16 patches
    "vit_s16": (lambda: create_model("timm:vit_small_patch16_224", NUM_CLASSES, 3, 64, patch_size=16),
                32, 64, 3),
}
# The linear layers of a block each variant gates (the convs and qkv projections are gated by every one).
VARIANTS = {"qkv": (), "+fc1": ("mlp.fc1",), "+fc1+fc2": ("mlp.fc1", "mlp.fc2"),
            "+fc1+proj": ("mlp.fc1", "attn.proj"), "all": ("mlp.fc1", "mlp.fc2", "attn.proj")}


def gated(model: torch.nn.Module, extra: tuple) -> torch.nn.Module:
    """``model`` patched with its convs, qkv projections and the block layers named in ``extra``; random gates."""
    keep = lambda name, module: not name.endswith(("mlp.fc1", "mlp.fc2", "attn.proj")) or name.endswith(extra)
    wf = wfkern.patch(model, NUM_CLASSES, gate_mlp="all", include=keep)
    with torch.no_grad():
        for p in (p for p in wf.parameters() if p.requires_grad):  # the gate logits: the only trainable ones
            p.normal_(0, 3)
    return wf.eval()


def paired(name: str, rounds: int) -> dict:
    build, batch, side, chans = MODELS[name]
    torch.manual_seed(0)
    model = build().eval().requires_grad_(False)
    x = torch.randn(batch, chans, side, side)
    labels = torch.randint(-1, NUM_CLASSES, (batch,))
    impls = {"plain": lambda: model(x)}
    for variant, extra in VARIANTS.items():
        wf = gated(model, extra)
        impls[variant] = (lambda wf: lambda: wf(x, forget=labels))(wf)
    with torch.inference_mode():
        times = interleave(Clock("cpu"), impls, share_s=0, max_rounds=rounds, rounds=rounds)
    plain = statistics.median(times["plain"])
    return {"model": name, "batch": batch, "px": side, "plain_ms": plain * 1e3,
            "plain_us_per_sample": plain / batch * 1e6,
            **{v: median_ratio(times, v, "plain") for v in VARIANTS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# gate placements, forward, cpu fp32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds; ratios to the plain model (median of per-round ratios)")
    print("| model | batch | px | plain ms | plain µs/sample | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(VARIANTS))
    for name in args.models:
        r = paired(name, args.rounds)
        print(f"| {name} | {r['batch']} | {r['px']} | {r['plain_ms']:.1f} | {r['plain_us_per_sample']:.0f} | "
              + " | ".join(f"{r[v]:.3f}" for v in VARIANTS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
