"""``wfkern unlearn``: one untraining round on a trained checkpoint; writes the filters and a history."""

from __future__ import annotations

import argparse
import os
import sys

import wfkern
from wfkern.cli._common import (add_data_args, add_device_arg, add_loader_args, apply_threads, check_output_dir,
                                checkpoint_and_splits, format_table, per_class_accuracy, resolve_device,
                                with_throughput)
from wfkern.cli.main import UserError
from wfkern.train import init_distributed
from wfkern.unlearn import PAPER_RECIPE, UnlearnConfig, unlearn
from wfkern.unlearn.config import setting_problem
from wfkern.unlearn.state import FILTERS_FILE, HISTORY_FILE, STATE_FILE

__all__ = ["add_parser", "run", "add_unlearn_args", "unlearn_kwargs", "check_data_matches", "parse_clip_norm",
           "UNLEARN_FILES"]

# What an untraining run writes into its folder.
UNLEARN_FILES = (FILTERS_FILE, HISTORY_FILE, STATE_FILE)


NO_CLIP = ("none", "off")


def parse_clip_norm(text: str) -> float | None:
    """--clip-norm: a positive number, or 'none' (also 'off') for no clipping (None, as in ``wfkern.unlearn``)."""
    if text.strip().lower() in NO_CLIP:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--clip-norm must be a positive finite number or 'none' (no clipping), got {text!r}") from None


def add_unlearn_args(p: argparse.ArgumentParser) -> None:
    """Every ``wfkern.unlearn`` hyperparameter as a flag (defaults: ``wfkern.unlearn``'s)."""
    d = UnlearnConfig()
    g = p.add_argument_group("untraining (defaults: the measured recipe, docs/untraining.md)")
    g.add_argument("--recipe", choices=("default", "paper"), default="default",
                   help="paper = the paper's literal setting: SGD lr 100, no clipping, no warm-up (collapses)")
    g.add_argument("--lambda0", type=float, default=d.lambda0, help="retain-loss weight, >= 0")
    g.add_argument("--lambda1", type=float, default=None, help="forget-reciprocal weight, >= 0 (default: 10 for CNNs, 100 for ViTs)")
    g.add_argument("--lambda2", type=float, default=d.lambda2, help="gate-regulariser weight, >= 0")
    g.add_argument("--chi", type=int, default=d.chi, help="retain copies per sample")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size, >= 2")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=None, help=f"optimizer (default: {d.optimizer})")
    g.add_argument("--lr", type=float, default=None, help=f"learning rate on the gate logits (default: {d.lr}; the paper recipe's otherwise)")
    g.add_argument("--momentum", type=float, default=None, help=f"SGD momentum in [0, 1) (default: {d.momentum})")
    g.add_argument("--clip-norm", default=None, metavar="NORM",
                   help=f"gradient-norm clip: a positive number, or 'none' for no clipping (default: {d.clip_norm}; "
                        "none with --recipe paper)")
    g.add_argument("--lambda1-warmup", type=float, default=None,
                   help=f"fraction of the run ramping λ1, in [0, 1] (default: {d.lambda1_warmup})")
    g.add_argument("--alpha-init", type=float, default=d.alpha_init, help="initial gate logit")
    g.add_argument("--max-epochs", type=int, default=d.max_epochs, help="epoch cap")
    g.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch, help="validations per epoch")
    g.add_argument("--patience", type=int, default=d.patience, help="validations without improvement before stopping")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds the batch order and the drawn rows")


def unlearn_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``wfkern.unlearn`` from the parsed flags (recipe first, explicit flags win).

    Every value is checked here, with the library's own rules (``wfkern.unlearn.config.setting_problem``),
    so a bad flag is a one-line error before any data is loaded or any model trained.
    """
    d = UnlearnConfig()
    kw = {"optimizer": d.optimizer, "lr": d.lr, "momentum": d.momentum, "clip_norm": d.clip_norm,
          "lambda1_warmup": d.lambda1_warmup}
    if args.recipe == "paper":
        kw.update(PAPER_RECIPE)
    for key in ("optimizer", "lr", "momentum", "lambda1_warmup"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.clip_norm is not None:
        kw["clip_norm"] = parse_clip_norm(args.clip_norm) if isinstance(args.clip_norm, str) else args.clip_norm
    kw.update(lambda0=args.lambda0, lambda1=args.lambda1, lambda2=args.lambda2, chi=args.chi,
              batch_size=args.batch_size, alpha_init=args.alpha_init, max_epochs=args.max_epochs,
              evals_per_epoch=args.evals_per_epoch, patience=args.patience, seed=args.seed)
    for key, value in kw.items():
        if key == "lambda1" and value is None:
            continue  # the model family's default
        problem = setting_problem(key, value)
        if problem is not None:
            expectation = problem[1]
            if key == "clip_norm":
                expectation = "be a positive finite number or 'none' (no clipping)"
            raise UserError(f"--{key.replace('_', '-')} must {expectation}, got {value}")
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
    p.add_argument("--no-progress", action="store_true",
                   help="hide the progress (a bar on a terminal, a plain line every 10%% of the steps otherwise)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also log every validation as a full line (as `wfkern -v unlearn`)")
    add_data_args(p, dataset_default=None)
    add_unlearn_args(p)
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint must be an existing file, got {args.checkpoint!r}")
    kwargs = unlearn_kwargs(args)
    if args.resume and not os.path.isdir(args.out_dir):
        raise UserError(f"--out-dir must hold the run to resume, got a missing folder {args.out_dir!r}")
    check_output_dir(args.out_dir, "--out-dir", files=UNLEARN_FILES)
    apply_threads(args)
    if args.device is not None:
        resolve_device(args.device)
    ctx, device = init_distributed(args.device)
    model, config, (train, val, test) = checkpoint_and_splits(args, device, ("train", "val", "test"))
    check_data_matches(train.info, config, args.checkpoint)
    wf = wfkern.patch(model, num_classes=config.num_classes)
    result = unlearn(wf, train, val, device=device, out_dir=args.out_dir, resume=args.resume,
                     progress=not args.no_progress and ctx.rank == 0, **kwargs)
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
