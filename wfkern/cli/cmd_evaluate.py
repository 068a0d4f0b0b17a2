"""``wfkern evaluate``: Table 1 / Table 2 metrics of WF-Net, a single-class baseline, or the original model."""

from __future__ import annotations

import argparse
import json
import os
import sys

import wfkern
from wfkern.baselines import per_class_loader, read_cost, wf_cost
from wfkern.cli._common import (add_data_args, add_device_arg, apply_threads, check_output_dir, checkpoint_and_splits,
                                format_table, resolve_device)
from wfkern.cli.main import UserError
from wfkern.metrics import ALL_METRICS, EvalSettings, PerClassModels, evaluate, filter_class_relations
from wfkern.metrics.evaluate import RESULTS_FILE
from wfkern.metrics.store import atomic_write_json
from wfkern.models import create_model

__all__ = ["add_parser", "run", "parse_classes", "wf_untrain_seconds"]


def parse_classes(text: str | None):
    """``None`` -> all; ``"20"`` -> a random subset of 20; ``"0,3,5"`` -> those classes."""
    if text is None:
        return None
    try:
        if "," in text:
            return [int(c) for c in text.split(",") if c.strip()]
        return int(text)
    except ValueError as e:
        raise UserError(f"--classes must be a count or a comma-separated list of indices, got {text!r}") from e


def wf_untrain_seconds(filters_path: str) -> float | None:
    """Untraining wall time of a ``wfkern unlearn`` run: the last ``seconds`` in its history.jsonl."""
    hist = os.path.join(os.path.dirname(os.path.abspath(filters_path)), "history.jsonl")
    if not os.path.isfile(hist):
        return None
    seconds = None
    with open(hist, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                seconds = json.loads(line).get("seconds", seconds)
    return seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Acc_r, Acc_f, ZRF, RT, MIA, insertion/deletion per class",
                       description="Evaluate class unlearning (docs/evaluation.md). Give the original checkpoint and "
                                   "one of --filters (WF-Net), --baseline-dir (a `wfkern baseline` output) or "
                                   "--original. Per-class results are saved as they finish; rerunning the same "
                                   "command resumes.")
    p.add_argument("--checkpoint", required=True, help="the original model (from `wfkern train`)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--filters", help="WF-Net filters (from `wfkern unlearn`)")
    what.add_argument("--baseline-dir", help="output folder of `wfkern baseline`")
    what.add_argument("--original", action="store_true", help="evaluate the original model itself")
    p.add_argument("--out", required=True, help="results folder (results.json, classes/)")
    p.add_argument("--method-name", default=None, help="name in the report (default: wfnet / the baseline's method / original)")
    p.add_argument("--classes", default=None,
                   help="N (a seeded random subset of N classes) or a list like 0,3,5 (one class: 3,); default all")
    p.add_argument("--classes-seed", type=int, default=0, help="seed of the random subset of --classes N")
    p.add_argument("--metrics", default=None, help=f"comma list from {','.join(ALL_METRICS)} (default: all that apply)")
    d = EvalSettings()
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the evaluation (per-class seeds derive from it)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="inference batch size")
    p.add_argument("--zrf-seed", type=int, default=d.zrf_seed, help="seed of the random-init reference model")
    p.add_argument("--mia-max-samples", type=int, default=d.mia_max_samples, help="samples per side of the attack")
    p.add_argument("--rt-samples", type=int, default=d.rt_samples, help="fresh training samples per relearn epoch")
    p.add_argument("--rt-lr", type=float, default=d.rt_lr, help="relearn learning rate (Adam)")
    p.add_argument("--rt-batch-size", type=int, default=d.rt_batch_size, help="relearn batch size")
    p.add_argument("--rt-max-epochs", type=int, default=d.rt_max_epochs, help="relearn cap")
    p.add_argument("--rt-target", type=float, default=d.rt_target, help="fraction of the original's class accuracy")
    p.add_argument("--insdel-steps", type=int, default=d.insdel_steps, help="points of the insertion/deletion curves")
    p.add_argument("--test-per-class", type=int, default=None,
                   help="keep N test images per class, e.g. 5 for ImageNet (default: all)")
    p.add_argument("--relations-layer", default=None, help="WF layer of the filter-class figure (default: the deepest)")
    p.add_argument("--relations-top-k", type=int, default=10, help="top filters per class in the filter-class figure")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a partial run")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_data_args(p, dataset_default=None)
    add_device_arg(p)
    p.set_defaults(run=run)


def _settings(args) -> EvalSettings:
    metrics = None
    if args.metrics:
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    return EvalSettings(metrics=metrics, seed=args.seed, batch_size=args.batch_size, zrf_seed=args.zrf_seed,
                        mia_max_samples=args.mia_max_samples, rt_samples=args.rt_samples, rt_lr=args.rt_lr,
                        rt_batch_size=args.rt_batch_size, rt_max_epochs=args.rt_max_epochs,
                        rt_target=args.rt_target, insdel_steps=args.insdel_steps, test_per_class=args.test_per_class)


def _model_under_test(args, model, config, device):
    """(what to evaluate, method name, cost record or None, WF model or None)."""
    if args.original:
        return model, args.method_name or "original", None, None
    if args.filters:
        if not os.path.isfile(args.filters):
            raise UserError(f"--filters must be an existing file, got {args.filters!r}")
        wf = wfkern.patch(model, num_classes=config.num_classes)
        wfkern.load_filters(wf, args.filters)
        seconds = wf_untrain_seconds(args.filters)
        cost = wf_cost(args.filters, seconds, config.num_classes) if seconds is not None else None
        return wf, args.method_name or "wfnet", cost, wf
    if not os.path.isdir(args.baseline_dir):
        raise UserError(f"--baseline-dir must be a folder written by `wfkern baseline`, got {args.baseline_dir!r}")
    cost = read_cost(args.baseline_dir)
    if cost is None:
        raise UserError(f"--baseline-dir must hold cost.json (a finished `wfkern baseline` run), got none in "
                        f"{args.baseline_dir!r}")

    def build():
        return create_model(config.model, config.num_classes, config.in_chans, config.image_size, **config.model_kwargs)

    method = args.method_name or cost["method"]
    um = PerClassModels(model, per_class_loader(args.baseline_dir, build), num_classes=config.num_classes, method=method)
    return um, method, cost, None


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint must be an existing file, got {args.checkpoint!r}")
    if args.filters is not None and not os.path.isfile(args.filters):
        raise UserError(f"--filters must be an existing file, got {args.filters!r}")
    apply_threads(args)
    device = resolve_device(args.device)
    check_output_dir(args.out, "--out", files=(RESULTS_FILE, "eval_config.json"), dirs=("classes",))
    model, config, (train, test) = checkpoint_and_splits(args, device, ("train", "test"))
    what, method, cost, wf = _model_under_test(args, model, config, device)
    names = list(getattr(test, "info", None).class_names) if getattr(test, "info", None) else None
    res = evaluate(what, test, train_data=train, num_classes=config.num_classes, classes=parse_classes(args.classes),
                   classes_seed=args.classes_seed, class_names=names, out_dir=args.out, resume=not args.no_resume,
                   progress=not args.no_progress, settings=_settings(args))
    res["method"] = method
    res["dataset"], res["model"] = args.dataset or config.dataset, config.model
    if cost is not None:
        res["cost"] = cost
    if wf is not None:
        res["relations"] = filter_class_relations(wf, args.relations_layer, top_k=args.relations_top_k,
                                                  classes=res["classes"])
    atomic_write_json(os.path.join(args.out, RESULTS_FILE), res)
    s = res["summary"]
    pct = lambda v: "-" if v is None else 100 * v  # noqa: E731
    rows = [[method, pct(s["acc_r"]), pct(s["acc_f"]), pct(s["zrf"]),
             "-" if s["rt"] is None else f"{s['rt']:.1f} ({s['rt_capped']})", pct(s["mia"]),
             "-" if s["insertion_auc"] is None else f"{s['insertion_auc']:.2f}",
             "-" if s["deletion_auc"] is None else f"{s['deletion_auc']:.2f}"]]
    print(format_table(["method", "Acc_r %", "Acc_f %", "ZRF", "RT (capped)", "MIA %", "Ins", "Del"], rows,
                       floatfmt="{:.1f}"))
    print(f"{len(res['classes'])} classes evaluated -> {os.path.join(args.out, 'results.json')}", file=sys.stdout)
    return 0
