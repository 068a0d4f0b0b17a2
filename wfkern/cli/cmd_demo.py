"""``wfkern demo``: the main job on the embedded digits, end to end, in a few minutes on a CPU."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import wfkern
from wfkern._atomic import atomic_write_text
from wfkern.cli._common import (add_device_arg, add_loader_args, check_output_dir, format_table, load_splits,
                                per_class_accuracy, start_command, with_throughput)
from wfkern.cli.cmd_train import DEMO_TRAIN, check_train_flags
from wfkern.cli.cmd_unlearn import UNLEARN_FILES, add_unlearn_args, unlearn_kwargs
from wfkern.data import dataset_targets, iter_batches
from wfkern.models import DEFAULT_MODEL, create_model
from wfkern.train import ModelConfig, save_checkpoint, train_model
from wfkern.unlearn import UnlearnConfig, unlearn

__all__ = ["add_parser", "run", "run_demo", "mixed_batch"]

TABLE_FILE = "demo_table.txt"
RESULTS_FILE = "demo_results.json"
MODEL_FILE = "model.safetensors"
# Everything the demo writes into OUT_DIR (checked before training starts).
DEMO_FILES = (MODEL_FILE, TABLE_FILE, RESULTS_FILE, *UNLEARN_FILES)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small CNN on the digits, untrain all classes, show the table",
                       description="The main job on the embedded default (scikit-learn digits, no download): train "
                                   "the small original CNN, untrain every class in one round, print per-class "
                                   "Acc_r / Acc_f of the original and the unlearned model, then one mixed batch in "
                                   "which each sample forgets a different class. Writes the table to OUT_DIR.")
    p.add_argument("--out-dir", default="runs/demo", help="where to write the model, filters and table")
    p.add_argument("--train-epochs", type=int, default=DEMO_TRAIN["epochs"], help="epochs of the original model")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_unlearn_args(p)
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


@torch.no_grad()
def mixed_batch(wf, test, num_classes: int, seed: int, device: torch.device) -> list[dict]:
    """One test sample per class; sample i forgets a different class (its own for even i, another for odd i,
    nothing for the last), predicted in a single forward pass.

    Returns:
        One dict per sample: true label, forget label, original and WF predictions.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = dataset_targets(test, single_label=True)
    idx = torch.stack([torch.nonzero(targets == c).flatten()[torch.randint(0, int((targets == c).sum()), (1,),
                                                                        generator=generator)][0] for c in range(num_classes)])
    x, y = next(iter_batches(test, [idx]))
    forget = torch.where(torch.arange(num_classes) % 2 == 0, y, (y + 1 + torch.arange(num_classes) // 2) % num_classes)
    forget[-1] = -1
    x = x.to(device)
    orig = wf(x).argmax(1).cpu()
    pred = wf(x, forget=forget.to(device)).argmax(1).cpu()
    return [{"true": int(a), "forget": int(f), "original": int(o), "unlearned": int(p)}
            for a, f, o, p in zip(y, forget, orig, pred)]


def run_demo(out_dir: str, train_epochs: int, config: UnlearnConfig, device: torch.device, progress: bool) -> dict:
    """Train, untrain with ``config`` (its seed also seeds the model), measure; returns the numbers (also written to
    OUT_DIR/demo_results.json)."""
    t0 = time.perf_counter()
    seed = config.seed
    train, val, test = load_splits("digits", None, False, None, 0)
    info = train.info
    torch.manual_seed(seed)
    model = create_model(DEFAULT_MODEL, info.num_classes, info.in_chans, info.image_size)
    trained = train_model(model, train, val, epochs=train_epochs, batch_size=DEMO_TRAIN["batch_size"],
                          lr=DEMO_TRAIN["lr"], weight_decay=DEMO_TRAIN["weight_decay"],
                          max_shift=DEMO_TRAIN["max_shift"], seed=seed, device=device, progress=progress)
    save_checkpoint(os.path.join(out_dir, MODEL_FILE), model,
                    ModelConfig(DEFAULT_MODEL, info.num_classes, info.in_chans, info.image_size, {}, "digits", 0))
    original = per_class_accuracy(model, test, info.num_classes, device, wf_forget=False)
    print(f"original {DEFAULT_MODEL}: trained in {trained.seconds:.1f}s, "
          f"test accuracy {100 * _overall(original, test):.2f}%")
    wf = wfkern.patch(model, num_classes=info.num_classes)
    res = unlearn(wf, train, val, config, device=device, out_dir=out_dir, progress=progress)
    unlearned = per_class_accuracy(wf, test, info.num_classes, device)
    mixed = mixed_batch(wf, test, info.num_classes, seed, device)
    seconds = time.perf_counter() - t0
    return {"original_acc": _overall(original, test), "original": original, "unlearned": unlearned, "mixed": mixed,
            "train_seconds": trained.seconds, "unlearn_seconds": res.seconds, "unlearn_steps": res.steps,
            "stopped_early": res.stopped_early, "seconds": seconds, "backend": wfkern.backend()}


def _overall(per_class: list[tuple[float, float]], test) -> float:
    """Overall accuracy of the plain model from its per-class Acc_f (= accuracy on class c) and class sizes."""
    targets = dataset_targets(test, single_label=True)
    counts = torch.bincount(targets, minlength=len(per_class)).double()
    return float(sum(acc * n for (acc, _), n in zip(per_class, counts.tolist())) / counts.sum())


def render(r: dict) -> str:
    """The per-class table, the means and the mixed batch, as text."""
    rows = [[c, 100 * o[1], 100 * o[0], 100 * u[1], 100 * u[0]]
            for c, (o, u) in enumerate(zip(r["original"], r["unlearned"]))]
    mean = lambda col: sum(row[col] for row in rows) / len(rows)  # noqa: E731
    rows.append(["mean", mean(1), mean(2), mean(3), mean(4)])
    head = ["class", "orig Acc_r %", "orig Acc_f %", "WF Acc_r %", "WF Acc_f %"]
    mixed = [[i, m["true"], "-" if m["forget"] < 0 else m["forget"], m["original"], m["unlearned"],
              "forgotten" if m["forget"] == m["true"] and m["unlearned"] != m["true"] else
              ("kept" if m["unlearned"] == m["true"] else "changed")] for i, m in enumerate(r["mixed"])]
    return "\n".join([
        f"wfkern demo: small CNN on the scikit-learn digits (test accuracy {100 * r['original_acc']:.2f}%), "
        f"backend {r['backend']}",
        "Per class c: Acc_f = accuracy on class c's test images, Acc_r = on the others' (every sample forgets c).",
        format_table(head, rows), "",
        "One mixed batch, one forward pass: each sample forgets a different class (- = nothing).",
        format_table(["sample", "true", "forget", "original pred", "WF pred", ""], mixed), "",
        f"train {r['train_seconds']:.1f}s, untrain {r['unlearn_seconds']:.1f}s ({r['unlearn_steps']} steps), "
        f"total {r['seconds']:.1f}s"])


def run(args: argparse.Namespace) -> int:
    device = start_command(args)
    check_train_flags({"--train-epochs": args.train_epochs})
    config = UnlearnConfig(**unlearn_kwargs(args))
    out_dir = check_output_dir(args.out_dir, "--out-dir", files=DEMO_FILES)
    results = run_demo(out_dir, args.train_epochs, config, device, progress=not args.no_progress)
    text = render(results)
    print(text)
    atomic_write_text(os.path.join(out_dir, TABLE_FILE), text + "\n")
    atomic_write_text(os.path.join(out_dir, RESULTS_FILE), json.dumps(results, indent=1))
    print(f"table -> {os.path.join(out_dir, TABLE_FILE)}")
    return 0
