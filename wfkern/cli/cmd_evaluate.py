"""``wfkern evaluate``: Table 1 / Table 2 metrics of WF-Net, a single-class baseline, or the original model."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import threading
import time

import wfkern
from wfkern.baselines import per_class_loader, read_cost, wf_cost
from wfkern.cli._common import (add_class_args, add_data_args, add_device_arg, add_gates_arg, add_loader_args,
                                add_settings_flags,
                                check_output_dir, checkpoint_and_splits, format_table, class_list_items,
                                resolve_classes, settings_given, start_command, with_throughput)
from wfkern.cli.errors import UserError
from wfkern.metrics import EvalSettings, PerClassModels, evaluate, filter_class_relations
from wfkern.metrics.classes import format_classes
from wfkern.metrics.evaluate import RESULTS_FILE
from wfkern.metrics.manifest import read_run_manifest
from wfkern.metrics.store import atomic_write_json
from wfkern.patch import gates_layer_names, gates_mlp
from wfkern.reports.history import history_path, read_history
from wfkern.reports.tables import MIA_CHANCE_MARGIN, mia_at_chance
from wfkern.unlearn.progress import format_clock

__all__ = ["add_parser", "run", "wf_untrain_seconds", "baseline_classes"]

# The figure's default top-k is filter_class_relations' own.
_RELATIONS_TOP_K = inspect.signature(filter_class_relations).parameters["top_k"].default

# Without a terminal (a log file, a pipe), progress is a plain line at most this often instead of a bar.
PLAIN_PROGRESS_INTERVAL_S = 20.0


def wf_untrain_seconds(gates_path: str, run_dir: str | None = None) -> float | None:
    """Untraining wall time of a ``wfkern unlearn`` run: the last ``seconds`` in its history.jsonl (in
    ``run_dir``, default the folder of ``gates_path``); None without a history."""
    run = run_dir or os.path.dirname(os.path.abspath(gates_path))
    if not history_path(run).is_file():
        return None
    seconds = None
    for record in read_history(run, keys=None):
        seconds = record.get("seconds", seconds)
    return seconds


def baseline_classes(baseline_dir: str, cost: dict) -> list[int]:
    """The classes a ``wfkern baseline`` folder holds a model for: those its cost.json records (``classes``, or
    its ``per_class`` keys) whose checkpoint ``models/class_<c>.safetensors`` exists."""
    have = set()
    models = os.path.join(baseline_dir, "models")
    if os.path.isdir(models):
        for name in os.listdir(models):
            match = re.fullmatch(r"class_(\d+)\.safetensors", name)
            if match:
                have.add(int(match.group(1)))
    recorded = cost.get("classes")
    if not isinstance(recorded, list):
        recorded = list((cost.get("per_class") or {}).keys())
    ran = set()
    for c in recorded:
        try:
            ran.add(int(c))
        except (TypeError, ValueError):
            continue
    return sorted(ran & have if ran else have)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Acc_r, Acc_f, ZRF, RT, MIA, insertion/deletion per class",
                       description="Evaluate class unlearning (docs/evaluation.md). Give the original checkpoint and "
                                   "one of --gates (WF-Net), --baseline-dir (a `wfkern baseline` output) or "
                                   "--original. Per-class results are saved as they finish; rerunning the same "
                                   "command resumes.")
    p.add_argument("--checkpoint", required=True, help="the original model (from `wfkern train`)")
    what = p.add_mutually_exclusive_group(required=True)
    add_gates_arg(what, "WF-Net: the gates file (from `wfkern unlearn`)")
    what.add_argument("--baseline-dir", help="output folder of `wfkern baseline`")
    what.add_argument("--original", action="store_true", help="evaluate the original model itself")
    p.add_argument("--out", required=True, help="results folder (results.json, classes/)")
    p.add_argument("--method-name", default=None, help="name in the report (default: wfnet / the baseline's method / original)")
    add_class_args(p, all_means="all classes; with --baseline-dir, the classes the baseline ran")
    p.add_argument("--run-dir", default=None,
                   help="with --gates: the `wfkern unlearn` folder whose history.jsonl gives the untraining time "
                        "and the report's untraining curve (default: the folder of --gates)")
    add_settings_flags(p.add_argument_group("evaluation settings"), EvalSettings)
    p.add_argument("--relations-layer", default=None, help="WF layer of the filter-class figure (default: the deepest)")
    p.add_argument("--relations-top-k", type=int, default=_RELATIONS_TOP_K,
                   help="top filters per class in the filter-class figure")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a partial run")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_data_args(p, dataset_default=None)
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


def _run_dir(args) -> str | None:
    """The unlearn run folder of --gates: --run-dir (checked), else the gates file's folder when it holds a history."""
    if args.run_dir is not None:
        if not args.gates:
            raise UserError(f"--run-dir must go with --gates (it is the `wfkern unlearn` folder of that gates file), "
                            f"got {args.run_dir!r} without --gates")
        if not history_path(args.run_dir).is_file():
            raise UserError(f"--run-dir must be a `wfkern unlearn` folder with history.jsonl, got {args.run_dir!r}")
        return args.run_dir
    if args.gates:
        folder = os.path.dirname(os.path.abspath(args.gates))
        return folder if history_path(folder).is_file() else None
    return None


def _attach_unlearn_manifest(res: dict, run_dir: str) -> None:
    """The untraining run's manifest (``manifest.json`` of ``wfkern unlearn``), when it wrote one, into the results'
    manifest as ``unlearn`` (a damaged one is a one-line error naming it)."""
    man = read_run_manifest(run_dir)
    if man is not None:
        res["manifest"] = {**(res.get("manifest") or {}), "unlearn": man}


def _model_under_test(args, model, config, device):
    """(what to evaluate, method name, cost record or None, WF model or None, the classes available or None
    for all, how to name them)."""
    if args.original:
        return model, args.method_name or "original", None, None, None, ""
    if args.gates:
        if not os.path.isfile(args.gates):
            raise UserError(f"--gates must be an existing file, got {args.gates!r}")
        # Patched as the gates were learnt (with MLP gates or not); load_gates checks every layer.
        gate_mlp = gates_mlp(gates_layer_names(args.gates))
        wf = wfkern.patch(model, num_classes=config.num_classes, gate_mlp=gate_mlp)
        wfkern.load_gates(wf, args.gates)
        layers = list(wf.wf_layers())
        if args.relations_layer is not None and args.relations_layer not in layers:  # before the evaluation runs
            shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
            raise UserError(f"--relations-layer must be a WF layer of the model ({shown}), "
                            f"got {args.relations_layer!r}")
        seconds = wf_untrain_seconds(args.gates, _run_dir(args))
        cost = wf_cost(args.gates, seconds, config.num_classes) if seconds is not None else None
        return wf, args.method_name or "wfnet", cost, wf, None, ""
    if not os.path.isdir(args.baseline_dir):
        raise UserError(f"--baseline-dir must be a folder written by `wfkern baseline`, got {args.baseline_dir!r}")
    cost = read_cost(args.baseline_dir)
    if cost is None:
        raise UserError(f"--baseline-dir must hold cost.json (a finished `wfkern baseline` run), got none in "
                        f"{args.baseline_dir!r}")
    ran = baseline_classes(args.baseline_dir, cost)
    if not ran:
        raise UserError(f"--baseline-dir must hold a model for at least one class (models/class_<c>.safetensors "
                        f"recorded in cost.json), got none in {args.baseline_dir!r}")
    method = args.method_name or cost["method"]
    unlearned = PerClassModels(model, per_class_loader(args.baseline_dir, config.build),
                               num_classes=config.num_classes, method=method)
    return unlearned, method, cost, None, ran, f"the classes the baseline in {args.baseline_dir!r} ran"


def _relations(wf, layer: str | None, top_k: int, classes: list[int]) -> dict:
    """Filter-class relations for the report: --relations-layer, else the deepest WF layer where some filter is
    in the top-k of two classes (the deepest layer itself when none is; the figure then says so)."""
    if layer is not None:
        return filter_class_relations(wf, layer, top_k=top_k, classes=classes)
    deepest = filter_class_relations(wf, None, top_k=top_k, classes=classes)
    if deepest["filters"] or len(classes) < 2:
        return deepest
    for name in reversed(list(wf.wf_layers())[:-1]):
        rel = filter_class_relations(wf, name, top_k=top_k, classes=classes)
        if rel["filters"]:
            rel["layer_note"] = (f"The deepest WF layer, {deepest['layer']}, has no filter in the top {top_k} of two "
                                 f"classes; {name} is the deepest layer that has.")
            return rel
    deepest["layer_note"] = f"No WF layer has a filter in the top {top_k} of two classes."
    return deepest


class _PlainProgress:
    """Without a terminal: a plain line per finished class, at most every ``PLAIN_PROGRESS_INTERVAL_S`` (read from
    the per-class result files the evaluation writes as it goes), instead of bars with escape codes."""

    def __init__(self, out: str, classes: list[int], method: str) -> None:
        self.files = [os.path.join(out, "classes", f"class_{c:05d}.json") for c in classes]
        self.method, self.t0, self.last = method, time.monotonic(), -1.0
        self.which = f" (classes {format_classes(classes)})"  # said once, with the first line
        self.stop = threading.Event()
        self.done0 = self.shown = self._done()
        self.thread = threading.Thread(target=self._watch, name="wfkern-evaluate-progress", daemon=True)
        self.thread.start()

    def _done(self) -> int:
        return sum(os.path.isfile(f) for f in self.files)

    def _line(self, done: int) -> None:
        now = time.monotonic()
        self.shown, self.last = done, now
        elapsed, new, rest = now - self.t0, done - self.done0, len(self.files) - done
        left = f", ~{format_clock(elapsed / new * rest)} left" if new > 0 and rest > 0 else ""
        print(f"evaluate {self.method}: {done}/{len(self.files)} classes done{self.which}, {format_clock(elapsed)} "
              f"elapsed{left}", file=sys.stderr, flush=True)
        self.which = ""

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            done = self._done()
            if done != self.shown and time.monotonic() - self.last >= PLAIN_PROGRESS_INTERVAL_S:
                self._line(done)

    def close(self) -> None:
        """Stop watching; a last line when classes finished since the last one."""
        self.stop.set()
        self.thread.join(timeout=5)
        done = self._done()
        if done != self.shown:
            self._line(done)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _mia_line(summary: dict) -> str | None:
    """The console's words on membership inference: the attacker's accuracy, and whether MIA can be read."""
    if summary.get("mia") is None or summary.get("attack_acc") is None:
        return None
    mia_pct, attacker_pct = 100 * summary["mia"], 100 * summary["attack_acc"]
    if mia_at_chance(summary["attack_acc"]):
        return (f"MIA {mia_pct:.1f}% says nothing: the attacker is at chance ({attacker_pct:.1f}% accuracy; 50% is a "
                f"coin flip, at most {50 + 100 * MIA_CHANCE_MARGIN:.0f}% counts as chance), so it cannot tell "
                "members from non-members.")
    return f"MIA {mia_pct:.1f}% with the attacker at {attacker_pct:.1f}% accuracy (chance is 50%): MIA can be read."


def _depth_line(summary: dict) -> str | None:
    """The console's words on the depth metrics (linear probe, retain fine-tuning, MIA-efficacy), when computed."""
    parts = []
    if summary.get("probe_acc_f") is not None:
        parts.append(f"a linear probe on the features still finds {100 * summary['probe_acc_f']:.1f}% of the forgotten "
                     "class")
    if summary.get("rft_acc_f") is not None:
        parts.append(f"fine-tuning on the other classes brings it back to {100 * summary['rft_acc_f']:.1f}%")
    if summary.get("mia_eff") is not None:
        parts.append(f"MIA-efficacy {100 * summary['mia_eff']:.1f}% (forget samples called non-members)")
    return ("Depth: " + "; ".join(parts) + ".") if parts else None


def run(args: argparse.Namespace) -> int:
    device = start_command(args)
    if args.gates is not None and not os.path.isfile(args.gates):
        raise UserError(f"--gates must be an existing file, got {args.gates!r}")
    if args.classes is not None:  # the form of --classes, before any work (the bounds need the model)
        class_list_items(args.classes)
    if args.sample_classes is not None and args.sample_classes < 1:
        raise UserError(f"--sample-classes must be a count >= 1, got {args.sample_classes}")
    run_dir = _run_dir(args)
    check_output_dir(args.out, "--out", files=(RESULTS_FILE, "eval_config.json"), dirs=("classes",))
    model, config, (train, test) = checkpoint_and_splits(args, device, ("train", "test"))
    what, method, cost, wf, pool, pool_what = _model_under_test(args, model, config, device)
    fix = ("; run `wfkern baseline` for those classes first, or leave --classes out" if pool is not None else "")
    classes = resolve_classes(args, config.num_classes, pool=pool, pool_what=pool_what, pool_fix=fix)
    names = list(getattr(test, "info", None).class_names) if getattr(test, "info", None) else None
    bars = not args.no_progress and _isatty(sys.stderr)
    plain = _PlainProgress(args.out, classes, method) if not args.no_progress and not bars else None
    try:
        res = evaluate(what, test, train_data=train, num_classes=config.num_classes, classes=classes,
                       class_names=names, out_dir=args.out, resume=not args.no_resume, progress=bars,
                       settings=EvalSettings(**settings_given(args, EvalSettings)))
    finally:
        if plain is not None:
            plain.close()
    res["method"] = method
    res["dataset"], res["model"] = args.dataset or config.dataset, config.model
    if args.classes is None and args.sample_classes is None:
        res["classes_from"] = "baseline" if pool is not None else "all"
    else:
        res["classes_from"] = {"classes": args.classes, "sample_classes": args.sample_classes,
                               "sample_seed": args.sample_seed}
    if cost is not None:
        res["cost"] = cost
    if wf is not None:
        res["relations"] = _relations(wf, args.relations_layer, args.relations_top_k, res["classes"])
    if run_dir is not None:  # the untraining curve travels with the results (the report needs no other file)
        res["unlearn_run_dir"] = os.path.abspath(run_dir)
        res["unlearn_history"] = read_history(run_dir)
        _attach_unlearn_manifest(res, run_dir)
    atomic_write_json(os.path.join(args.out, RESULTS_FILE), res)
    summary = res["summary"]
    pct = lambda fraction: "-" if fraction is None else 100 * fraction  # noqa: E731
    rows = [[method, pct(summary["acc_r"]), pct(summary["acc_f"]), pct(summary["zrf"]),
             "-" if summary["rt"] is None else f"{summary['rt']:.1f} ({summary['rt_capped']})", pct(summary["mia"]),
             pct(summary["attack_acc"]),
             "-" if summary["insertion_auc"] is None else f"{summary['insertion_auc']:.2f}",
             "-" if summary["deletion_auc"] is None else f"{summary['deletion_auc']:.2f}"]]
    print(format_table(["method", "Acc_r %", "Acc_f %", "ZRF", "RT (capped)", "MIA %", "attack acc %", "Ins", "Del"],
                       rows, floatfmt="{:.1f}"))
    mia = _mia_line(summary)
    if mia:
        print(mia)
    depth = _depth_line(summary)
    if depth:
        print(depth)
    which = format_classes(res["classes"], names)
    if pool is not None and args.classes is None and args.sample_classes is None:
        which += "; the classes the baseline ran"
    elif args.sample_classes is not None:
        which += f"; {args.sample_classes} drawn at random with seed {args.sample_seed}"
    n = len(res["classes"])
    print(f"{n} class{'es' if n != 1 else ''} evaluated ({which}) -> {os.path.join(args.out, 'results.json')}",
          file=sys.stdout)
    return 0
