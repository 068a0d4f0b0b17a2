"""``wfkern unlearn``: one untraining round on a trained checkpoint; writes the filters and a history."""

from __future__ import annotations

import argparse
import os
import sys

import torch

import wfkern
from wfkern.cli._common import (add_data_args, add_device_arg, checkpoint_and_splits, ensure_dir, format_table,
                                per_class_accuracy, resolve_device)
from wfkern.cli.main import UserError
from wfkern.train import init_distributed
from wfkern.unlearn import PAPER_RECIPE, UnlearnConfig, unlearn

__all__ = ["add_parser", "run", "add_unlearn_args", "unlearn_kwargs", "check_data_matches"]


def _clip(value: str) -> float:
    """--clip-norm value; 'none' / 'off' / 0 turn clipping off (returned as 0.0)."""
    return 0.0 if value.lower() in ("none", "off") else float(value)


def add_unlearn_args(p: argparse.ArgumentParser) -> None:
    """Every ``wfkern.unlearn`` hyperparameter as a flag (defaults: ``wfkern.unlearn``'s)."""
    d = UnlearnConfig()
    g = p.add_argument_group("untraining (defaults: the measured recipe, docs/untraining.md)")
    g.add_argument("--recipe", choices=("default", "paper"), default="default",
                   help="paper = the paper's literal setting: SGD lr 100, no clipping, no warm-up (collapses)")
    g.add_argument("--lambda0", type=float, default=d.lambda0, help="retain-loss weight")
    g.add_argument("--lambda1", type=float, default=None, help="forget-reciprocal weight (default 10 CNN, 100 ViT)")
    g.add_argument("--lambda2", type=float, default=d.lambda2, help="gate-regulariser weight")
    g.add_argument("--chi", type=int, default=d.chi, help="retain copies per sample")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=None, help=f"default {d.optimizer}")
    g.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    g.add_argument("--momentum", type=float, default=None, help=f"SGD momentum, default {d.momentum}")
    g.add_argument("--clip-norm", type=_clip, default=None, help=f"gradient-norm clip, 'none' = off; default {d.clip_norm}")
    g.add_argument("--lambda1-warmup", type=float, default=None, help=f"fraction of the run ramping λ1; default {d.lambda1_warmup}")
    g.add_argument("--alpha-init", type=float, default=d.alpha_init)
    g.add_argument("--max-epochs", type=int, default=d.max_epochs)
    g.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch)
    g.add_argument("--patience", type=int, default=d.patience)
    g.add_argument("--seed", type=int, default=d.seed)


def unlearn_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``wfkern.unlearn`` from the parsed flags (recipe first, explicit flags win)."""
    d = UnlearnConfig()
    kw = {"optimizer": d.optimizer, "lr": d.lr, "momentum": d.momentum, "clip_norm": d.clip_norm,
          "lambda1_warmup": d.lambda1_warmup}
    if args.recipe == "paper":
        kw.update(PAPER_RECIPE)
    for key in ("optimizer", "lr", "momentum", "lambda1_warmup"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.clip_norm is not None:
        kw["clip_norm"] = args.clip_norm if args.clip_norm > 0 else None
    kw.update(lambda0=args.lambda0, lambda1=args.lambda1, lambda2=args.lambda2, chi=args.chi,
              batch_size=args.batch_size, alpha_init=args.alpha_init, max_epochs=args.max_epochs,
              evals_per_epoch=args.evals_per_epoch, patience=args.patience, seed=args.seed)
    return kw


def check_data_matches(info, config, checkpoint: str) -> None:
    """A dataset whose classes / channels differ from the checkpoint's is a one-line error."""
    if info.num_classes != config.num_classes or info.in_chans != config.in_chans:
        raise UserError(f"--checkpoint must match the dataset, got a model for {config.num_classes} classes / "
                        f"{config.in_chans} channels ({checkpoint}) and data '{info.name}' with {info.num_classes} "
                        f"classes / {info.in_chans} channels")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unlearn", help="untrain every class in one round (trains the WF gates)",
                       description="Patch a trained checkpoint with WF layers and untrain all classes in one round. "
                                   "Writes OUT_DIR/filters.safetensors, history.jsonl and a resumable "
                                   "unlearn_state.safetensors. Runs under torchrun for several processes.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint from `wfkern train`")
    p.add_argument("--out-dir", required=True, help="folder for filters, history and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_data_args(p, dataset_default=None)
    add_unlearn_args(p)
    add_device_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint must be an existing file, got {args.checkpoint!r}")
    if args.resume and not os.path.isdir(args.out_dir):
        raise UserError(f"--out-dir must hold the run to resume, got a missing folder {args.out_dir!r}")
    ensure_dir(args.out_dir, "--out-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is not None:
        resolve_device(args.device)
    ctx, device = init_distributed(args.device)
    model, config, (train, val, test) = checkpoint_and_splits(args, device, ("train", "val", "test"))
    check_data_matches(train.info, config, args.checkpoint)
    wf = wfkern.patch(model, num_classes=config.num_classes)
    result = unlearn(wf, train, val, device=device, out_dir=args.out_dir, resume=args.resume,
                     progress=not args.no_progress and ctx.rank == 0, **unlearn_kwargs(args))
    if ctx.rank == 0:
        rows = per_class_accuracy(wf, test, config.num_classes, device)
        mean_f = sum(r[0] for r in rows) / len(rows)
        mean_r = sum(r[1] for r in rows) / len(rows)
        table = format_table(["class", "Acc_r %", "Acc_f %"],
                             [[c, 100 * r, 100 * f] for c, (f, r) in enumerate(rows)] + [["mean", 100 * mean_r, 100 * mean_f]])
        print(table)
        stop = "early stop" if result.stopped_early else "epoch cap"
        print(f"untrained {result.steps} steps ({stop}) in {result.seconds:.1f}s; best val objective "
              f"{result.best_objective:.4f} at step {result.best_step}; filters -> "
              f"{os.path.join(args.out_dir, 'filters.safetensors')}", file=sys.stdout)
    return 0
