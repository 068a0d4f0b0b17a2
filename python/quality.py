"""Untraining quality rows: train a model from scratch, untrain every class in one round, measure.

One row = (model, dataset, input side, training epochs). It trains the original with ``wfkern``'s trainer
(one run per seed, ``--seeds N``, default 3: seeds 0 .. N-1, or S .. S+N-1 with ``--first-seed S``, for training
and untraining; the data split is fixed), untrains all classes with the default recipe (and, with ``--paper``, the
paper's literal recipe beside it), and reports the original test accuracy, the mean and worst class's Acc_r, the mean Acc_f, the
untraining epochs, and the wall times of training and untraining, measured in the same run: one JSON line per
seed and recipe, then one per recipe with the mean, standard deviation and count of every number over the seeds
and the manifest (versions, seeds, settings, data hashes); ``--out FILE`` writes all of it as one JSON file.
``drop_worst`` is the largest Acc_r loss against the original model on the same retain set. The rows in
docs/untraining.md ("Results") and the README came from this script; tests/test_unlearn_quality.py asserts the
digits rows.

    python python/quality.py --row vit_digits --paper
    python python/quality.py --row small_cnn_digits --seeds 5 --out runs/quality_small_cnn.json
    python python/quality.py --row small_cnn_fashion --threads 2
    python python/quality.py --row vit_digits --gate-mlp qkv --threads 1
    python python/quality.py --row vit_fashion --seeds 1 --save-weights runs/vit_fashion.pt

ViTs take ``wfkern.patch``'s default placement (``--gate-mlp auto``: every linear layer of each block) and the
ViT family's margin (4) unless ``--gate-mlp`` / ``--set margin=...`` say otherwise; each row records the placement
the model was patched with. ``vit_tv_digits`` is a torchvision ``VisionTransformer`` (its attention an
``nn.MultiheadAttention``); ``vit_tiny32_digits`` has timm ViT-Tiny's width, depth and heads (192, 12, 3) at 32 px,
patch 8, on the digits upsampled to 32 px.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time

import torch
from torch import nn

import wfkern
from wfkern._utils import interactive
from wfkern.data import get_dataset
from wfkern.metrics import evaluate
from wfkern.metrics.manifest import run_manifest
from wfkern.metrics.store import atomic_write_json
from wfkern.reports.spread import mean_std
from wfkern.models import create_model
from wfkern.patch import gates_mlp
from wfkern.patch.surgery import gate_placement
from wfkern.train import train_model
from wfkern.unlearn import PAPER_RECIPE



def torchvision_vit(num_classes: int, in_chans: int, image_size: int, *, patch_size: int, num_layers: int,
                    num_heads: int, hidden_dim: int, mlp_dim: int) -> nn.Module:
    """A small torchvision ``VisionTransformer`` whose patch projection takes ``in_chans`` channels."""
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
                              hidden_dim=hidden_dim, mlp_dim=mlp_dim, num_classes=num_classes)
    model.conv_proj = nn.Conv2d(in_chans, hidden_dim, kernel_size=patch_size, stride=patch_size)
    return model


# name: (model (a create_model name or a builder), model kwargs, dataset, input side (None: native), training epochs)
ROWS = {
    "small_cnn_digits": ("small_cnn", {}, "digits", None, 20),
    "small_vgg_digits": ("small_vgg", {}, "digits", None, 20),
    "vit_digits": ("vit_t", {"depth": 4, "embed_dim": 96, "num_heads": 3}, "digits", 16, 100),
    "small_cnn_fashion": ("small_cnn", {}, "fashion_mnist", 14, 10),
    "vit_fashion": ("vit_t", {"depth": 4, "embed_dim": 96, "num_heads": 3, "patch_size": 2}, "fashion_mnist", 14, 15),
    "resnet18_fashion": ("resnet18", {}, "fashion_mnist", 14, 3),
    "vit_tv_digits": (torchvision_vit, {"patch_size": 4, "num_layers": 4, "num_heads": 3, "hidden_dim": 96,
                                        "mlp_dim": 384}, "digits", 16, 100),
    "vit_tiny32_digits": ("vit_t", {"depth": 12, "embed_dim": 192, "num_heads": 3, "patch_size": 8}, "digits", 32, 150),
}


def trained_model(row: str, weights: str | None = None, seed: int = 0, epochs: int | None = None,
                  progress: bool = False) -> tuple[torch.nn.Module, tuple, float]:
    """The row's original model trained from scratch (``seed``; ``epochs``, default the row's; ``progress``: a bar),
    its (train, val, test) splits, training seconds.

    ``weights``: a state dict saved earlier from the same row's training (``torch.save``), loaded instead of
    training again (the training time is then reported as 0: take it from the run that trained it)."""
    arch, kwargs, dataset, side, row_epochs = ROWS[row]
    splits = tuple(get_dataset(dataset, split=s, image_size=side) for s in ("train", "val", "test"))
    x0, _ = splits[0][0]
    torch.manual_seed(seed)
    build = (lambda **kw: create_model(arch, **kw)) if isinstance(arch, str) else arch
    model = build(num_classes=10, in_chans=x0.shape[0], image_size=x0.shape[-1], **kwargs)
    t0 = time.perf_counter()
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval(), splits, 0.0
    train_model(model, splits[0], splits[1], epochs=epochs or row_epochs, seed=seed, progress=progress)
    return model.eval(), splits, time.perf_counter() - t0


def untrain_and_measure(model: torch.nn.Module, splits: tuple, gate_mlp: bool | str | None = None,
                        progress: bool = False, filters: str | None = None, **settings) -> dict:
    """Patch a copy of ``model`` (``gate_mlp``: ``wfkern.patch``'s; None, the default placement), untrain every class
    (``settings`` override the defaults; ``filters``: save the gates there), evaluate Acc_r / Acc_f.

    Besides the mean and worst Acc_r, ``drop_worst`` is the largest loss against the original model on the same
    retain set (``orig_acc_r``: the classes differ in difficulty, so the retain set's own accuracy moves with c)."""
    train, val, test = splits
    wf = wfkern.patch(copy.deepcopy(model), num_classes=10, gate_mlp=gate_mlp)
    res = wfkern.unlearn(wf, train, val, progress=progress, **settings)
    if filters:
        wf.save_gates(filters)
    out = evaluate(wf, test, progress=progress and interactive(sys.stderr), metrics=("acc",))  # a bar on a terminal only
    rows = list(out["per_class"].values())
    worst = min(rows, key=lambda r: r["acc_r"])
    return {"placement": gate_placement(gates_mlp(wf.wf_layers())), "original": out["original"]["acc"],
            "acc_r": out["summary"]["acc_r"], "acc_r_worst": worst["acc_r"],
            "orig_acc_r_of_worst": worst["orig_acc_r"], "drop_worst": max(r["orig_acc_r"] - r["acc_r"] for r in rows),
            "acc_f": out["summary"]["acc_f"], "epochs": res.epochs, "steps": res.steps, "untrain_s": res.seconds,
            "margin": res.config["margin"]}


def parse_settings(pairs: list[str]) -> dict:
    """``["temperature=4", "max_epochs=40"]`` -> ``{"temperature": 4, "max_epochs": 40}``: each value is read as
    JSON (numbers, ``null``), else kept as text; ``unlearn`` checks the names and values."""
    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"quality.py: --set must be KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    return settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", choices=sorted(ROWS), required=True)
    p.add_argument("--paper", action="store_true", help="also untrain with the paper's literal recipe")
    p.add_argument("--no-default", action="store_true", help="skip the default recipe (with --paper: only the paper's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=None, help="untraining epoch cap (default: the recipe's)")
    p.add_argument("--weights", default=None, help="the row's trained state dict (torch.save) instead of training")
    p.add_argument("--save-weights", default=None, help="save the trained state dict here")
    p.add_argument("--train-epochs", type=int, default=None, help="training epochs of the original (default: the row's)")
    p.add_argument("--gate-mlp", choices=("auto", "qkv", "fc1", "all"), nargs="?", const="fc1", default="auto",
                   help="patch(gate_mlp=...): where a ViT block's gates sit (default auto: every linear layer for "
                        "ViTs; a bare --gate-mlp: fc1)")
    p.add_argument("--gate-all", dest="gate_mlp", action="store_const", const="all", help="the same as --gate-mlp all")
    p.add_argument("--gates", default=None, help="save the default recipe's gates here (safetensors)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an unlearn setting for every recipe, repeatable (--set temperature=4); a seed set here "
                        "replaces the untraining seed of every run")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--seeds", type=int, default=3, help="runs with seeds 0 .. N-1 (training and untraining; default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="start the seeds here (S .. S+N-1; default 0)")
    p.add_argument("--out", default=None, help="also write every row, the spread and the manifest to this JSON file")
    args = p.parse_args()
    if not args.quiet:  # the trainer's per-epoch lines where no bar is drawn (a log file)
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    recipes = {**({} if args.no_default else {"default": {}}), **({"paper": PAPER_RECIPE} if args.paper else {})}
    if not recipes:
        p.error("--no-default needs --paper: no recipe left to run")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.train_epochs is not None and args.train_epochs < 1:
        p.error(f"--train-epochs must be >= 1, got {args.train_epochs}")
    if args.weights and args.seeds > 1:
        p.error("--weights holds one trained original: give --seeds 1 with it")
    torch.set_num_threads(args.threads)
    extra = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    try:
        extra.update(parse_settings(args.set))
    except ValueError as e:
        p.error(str(e))
    rows: dict[str, list] = {name: [] for name in recipes}
    splits = None
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for seed in seeds:
        model, splits, train_s = trained_model(args.row, args.weights, seed, args.train_epochs, not args.quiet)
        if args.save_weights:
            torch.save(model.state_dict(), args.save_weights if args.seeds == 1 else f"{args.save_weights}.seed{seed}")
        for name, recipe in recipes.items():
            settings = {**recipe, "seed": seed, **extra}
            row = {"row": args.row, "recipe": name, "seed": seed, "gate_mlp": args.gate_mlp,
                   "train_epochs": args.train_epochs or ROWS[args.row][4], "train_s": round(train_s, 1),
                   "threads": args.threads,
                   **({"settings": extra} if extra else {}),
                   **untrain_and_measure(model, splits, args.gate_mlp, not args.quiet,
                                         args.gates if name == "default" and seed == 0 else None, **settings)}
            rows[name].append(row)
            print(json.dumps(row), flush=True)
    report = {"row": args.row, "seeds": seeds, "recipes": {}}
    for name, runs in rows.items():
        keys = [k for k, v in runs[0].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"]
        spread = {k: dict(zip(("mean", "std", "n"), mean_std([r[k] for r in runs]))) for k in keys}
        manifest = run_manifest({**recipes[name], **extra, "gate_mlp": args.gate_mlp, "threads": args.threads},
                                {"seeds": seeds}, dict(zip(("train", "val", "test"), splits)))
        report["recipes"][name] = {"runs": runs, "spread": spread, "manifest": manifest}
        print(json.dumps({"row": args.row, "recipe": name, "seeds": seeds, "spread": spread,
                          "manifest": manifest}), flush=True)
    if args.out:
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
