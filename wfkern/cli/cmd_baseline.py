"""``wfkern baseline``: a single-class unlearning method run once per class (checkpoints + cost record)."""

from __future__ import annotations

import argparse
import os
import sys

from wfkern.baselines import BASELINES, COST_FILE, baseline_setting_problem, run_baseline
from wfkern.cli._common import (add_class_args, add_data_args, add_device_arg, add_loader_args, check_output_dir,
                                checkpoint_and_splits, class_list_items, resolve_classes, start_command,
                                with_throughput)
from wfkern.cli.errors import UserError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline",
                       help="single-class baselines: retrain, random-labels, neg-grad, ft, ssd, salun, scrub, l1-sparse "
                            "(one run per class)",
                       description="Unlearn each class separately with a single-class method; writes one "
                                   "checkpoint per class and cost.json (wall time, bytes). Rerunning resumes.")
    p.add_argument("--method", required=True, choices=BASELINES)
    p.add_argument("--checkpoint", required=True, help="the original model (from `wfkern train`)")
    p.add_argument("--out-dir", required=True, help="folder for cost.json and one checkpoint per class")
    add_class_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of each run")
    own = " (default: the method's own, docs/evaluation.md)"
    group = p.add_argument_group("method options (default: each method's own, docs/evaluation.md)")
    group.add_argument("--epochs", type=int, default=None,
                       help="random-labels, ft, salun, scrub, l1-sparse: epochs; retrain: training epochs "
                            "(default: the method's own; retrain: the checkpoint's)")
    group.add_argument("--max-epochs", type=int, default=None, help="neg-grad: cap on epochs" + own)
    group.add_argument("--lr", type=float, default=None, help="learning rate (not ssd)" + own)
    group.add_argument("--batch-size", type=int, default=None, help="batch size (ssd: of the Fisher estimates)" + own)
    group.add_argument("--retain-ratio", type=float, default=None,
                       help="random-labels, salun: retain samples per forget sample per epoch (salun's default: "
                            "the whole retain set)" + own)
    group.add_argument("--alpha", type=float, default=None,
                       help="ssd: selection threshold, dampen where I_Df > alpha * I_D (default: the paper's 10, "
                            "at most N / (2 N_f): 5 on 10 balanced classes)")
    group.add_argument("--lambda", dest="lam", metavar="LAMBDA", type=float, default=None,
                       help="ssd: dampening constant, beta = min(lambda * I_D / I_Df, 1) (default: the paper's 1)")
    group.add_argument("--saliency-fraction", dest="fraction", metavar="FRACTION", type=float, default=None,
                       help="salun: share of all weights in the saliency mask, those with the largest |gradient| of "
                            "the forget loss (default: the paper's 0.5)")
    group.add_argument("--forget-epochs", type=int, default=None,
                       help="scrub: the first epochs that also take a max-step pass over the forget samples "
                            "(default 3)")
    group.add_argument("--temperature", type=float, default=None, help="scrub: distillation temperature (default 4)")
    group.add_argument("--l1", type=float, default=None,
                       help="l1-sparse: initial strength of the l1 penalty, decaying linearly over the epochs "
                            "(default 1e-3)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out-dir holds finished classes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_data_args(p, dataset_default=None)
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


def _method_kwargs(args, config) -> dict:
    method_kwargs = {}
    allowed = {"retrain": ("epochs", "lr", "batch_size"), "random-labels": ("epochs", "lr", "batch_size", "retain_ratio"),
               "neg-grad": ("max_epochs", "lr", "batch_size"), "ft": ("epochs", "lr", "batch_size"),
               "ssd": ("alpha", "lam", "batch_size"),
               "salun": ("epochs", "lr", "batch_size", "retain_ratio", "fraction"),
               "scrub": ("epochs", "lr", "batch_size", "retain_ratio", "forget_epochs", "temperature"),
               "l1-sparse": ("epochs", "lr", "batch_size", "l1")}[args.method]
    flags = {"lam": "--lambda", "fraction": "--saliency-fraction"}
    for key in ("epochs", "max_epochs", "lr", "batch_size", "retain_ratio", "alpha", "lam", "fraction", "forget_epochs",
                "temperature", "l1"):
        value = getattr(args, key)
        if value is not None:
            flag = flags.get(key, "--" + key.replace("_", "-"))
            if key not in allowed:
                raise UserError(f"{flag} must not be given for --method {args.method}, got {value}")
            problem = baseline_setting_problem(key, value) if args.method != "retrain" else None
            if problem is not None:
                raise UserError(f"{flag} must {problem}, got {value}")
            method_kwargs[key] = value
    if args.method == "retrain":
        method_kwargs.setdefault("epochs", int(config.extra.get("epochs", 30)))
    return method_kwargs


def run(args: argparse.Namespace) -> int:
    device = start_command(args)
    if args.classes is not None:  # the form of --classes, before any work (the bounds need the model)
        class_list_items(args.classes)
    check_output_dir(args.out_dir, "--out-dir", files=(COST_FILE,), dirs=("models", "cost"))
    model, config, (train, val) = checkpoint_and_splits(args, device, ("train", "val"))
    classes = resolve_classes(args, config.num_classes)
    cost = run_baseline(args.method, original=model, train_data=train, out_dir=args.out_dir,
                        num_classes=config.num_classes, classes=classes, model_fn=config.build, val_data=val,
                        seed=args.seed, method_kwargs=_method_kwargs(args, config), resume=not args.no_resume,
                        progress=not args.no_progress, device=device)
    method_kwargs = cost["method_kwargs"]
    print(f"{args.method}: {cost['n_runs']} runs, {cost['seconds_total']:.1f}s, {cost['bytes_total'] / 2**20:.2f} MiB "
          f"({method_kwargs or 'defaults'}); all {config.num_classes} classes: {cost['all_classes_seconds']:.1f}s, "
          f"{cost['all_classes_bytes'] / 2**20:.2f} MiB -> {os.path.join(args.out_dir, 'cost.json')}", file=sys.stdout)
    return 0
