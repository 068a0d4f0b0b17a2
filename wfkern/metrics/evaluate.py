"""``wfkern.evaluate``: Table 1 and Table 2 metrics for every (or a subset of) class, resumable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern.data import dataset_targets, subset_of

from ._data import predict_logits
from .accuracy import accuracy
from .classes import select_classes
from .manifest import run_manifest
from .per_class import EvalContext, class_seed, evaluate_class
from .probe import resolve_layer
from .providers import as_unlearned
from .settings import ALL_METRICS, OPT_IN_METRICS, RETAIN_FT_PARTS, EvalSettings
from .store import atomic_write_json, read_json

__all__ = ["evaluate", "summarize", "per_class_subset", "RESULTS_FILE"]

RESULTS_FILE = "results.json"
_SUMMARY_KEYS = ("acc_r", "acc_f", "zrf", "mia", "mia_prob", "attack_acc", "rt", "insertion_auc", "deletion_auc",
                 "probe_acc_f", "probe_acc_r", "rft_acc_f", "rft_acc_r", "mia_eff", "mia_eff_entropy",
                 "mia_eff_m_entropy")


def _nanmean(values: list) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def summarize(per_class: dict) -> dict:
    """Means over the evaluated classes (NaN/None skipped), the count of RT-capped classes, the class count."""
    rows = list(per_class.values())
    out = {k: _nanmean([r.get(k) for r in rows]) for k in _SUMMARY_KEYS}
    out["rt_capped"] = sum(1 for r in rows if r.get("rt_capped"))
    layers = [spec for r in rows for spec in (r.get("probe") or {})]
    if layers:  # every probed layer's means, in the order first seen
        out["probe"] = {spec: {k: _nanmean([(r.get("probe") or {}).get(spec, {}).get(k) for r in rows])
                               for k in ("acc_f", "acc_r", "train_acc")} for spec in dict.fromkeys(layers)}
    out["n_classes"] = len(rows)
    return out


def _resolve_metrics(requested, um, has_train: bool) -> set:
    if requested is None:
        metrics = {"acc", "zrf"} | ({"mia", "rt"} if has_train else set()) | ({"insdel"} if um.wf is not None else set())
        return metrics
    metrics = set(requested) | {"acc"}
    bad = metrics - set(ALL_METRICS)
    if bad:
        raise ValueError(f"wfkern.evaluate: metrics must be drawn from {list(ALL_METRICS)}, got {sorted(bad)}")
    if metrics & {"mia", "rt"} and not has_train:
        raise ValueError("wfkern.evaluate: train_data must be given for the 'mia' and 'rt' metrics, got None")
    if "insdel" in metrics and um.wf is None:
        raise ValueError(f"wfkern.evaluate: model must be a WF model for 'insdel', got method {um.method!r}")
    if metrics & set(OPT_IN_METRICS) and not has_train:
        raise ValueError(f"wfkern.evaluate: train_data must be given for {sorted(metrics & set(OPT_IN_METRICS))}, "
                         "got None")
    return metrics


def _check_settings(s: EvalSettings, metrics: set) -> None:
    """The opt-in metrics' budgets, before any class runs."""
    checks = []
    if "probe" in metrics:
        checks += [("probe_max_samples", s.probe_max_samples >= 2), ("probe_max_iter", s.probe_max_iter >= 1),
                   ("probe_inv_reg", s.probe_inv_reg > 0), ("probe_layers", len(s.probe_layers) >= 1)]
    if "retain_ft" in metrics:
        checks += [("rft_epochs", s.rft_epochs >= 0), ("rft_samples", s.rft_samples >= 1), ("rft_lr", s.rft_lr > 0),
                   ("rft_batch_size", s.rft_batch_size >= 1), ("rft_part", s.rft_part in RETAIN_FT_PARTS)]
    for name, ok in checks:
        if not ok:
            raise ValueError(f"wfkern.evaluate: {name} must be {_RULE_WORDS[name]}, got {getattr(s, name)!r}")


_RULE_WORDS = {"probe_max_samples": ">= 2", "probe_max_iter": ">= 1", "probe_inv_reg": "> 0",
               "probe_layers": "at least one layer", "rft_epochs": ">= 0", "rft_samples": ">= 1", "rft_lr": "> 0",
               "rft_batch_size": ">= 1", "rft_part": f"one of {list(RETAIN_FT_PARTS)}"}


def _check_resume(out_dir: Path, header: dict, resume: bool) -> None:
    old = read_json(out_dir / "eval_config.json")
    if old is None or not resume:
        for f in (out_dir / "classes").glob("class_*.json") if (out_dir / "classes").exists() else []:
            f.unlink()
        return
    keys = ("method", "fingerprint", "settings", "num_test", "num_train")
    diff = [k for k in keys if old.get(k) != header.get(k)]
    if diff:
        raise ValueError(f"wfkern.evaluate: out_dir must hold results of this same evaluation to resume, got "
                         f"different {diff} in {out_dir / 'eval_config.json'}; use a new directory or resume=False")


def evaluate(model, test_data: Dataset, *, train_data: Optional[Dataset] = None, num_classes: Optional[int] = None,
             classes: Union[None, int, Sequence[int]] = None, classes_seed: int = 0,
             sample_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
             out_dir: Optional[str] = None, resume: bool = True, progress: bool = True,
             settings: Optional[EvalSettings] = None, **overrides) -> dict:
    """Evaluate class unlearning: Acc_f, Acc_r, ZRF, MIA, relearn time, insertion/deletion (docs/method.md §3).

    Args:
        model: a WF model (``wfkern.patch``; class ``c`` forgotten with ``forget=c``), a
            ``wfkern.metrics.Unlearned`` (e.g. ``PerClassModels`` for the single-class baselines), or a plain
            module (evaluated as the original model; needs ``num_classes``).
        test_data: test set yielding ``(x, y)``: accuracies, ZRF, RT's accuracy, insertion/deletion, MIA non-members.
        train_data: training set: MIA members/targets and the relearn samples; without it MIA and RT are skipped.
        num_classes: Nc, for a plain module.
        classes: None (all), one class index (``3`` = class 3), or a list of class indices.
        classes_seed: seed of the random subset drawn with ``sample_classes``.
        sample_classes: None, or a count n: a random subset of n of ``classes`` (default all), seeded.
        class_names: names for the report (default the indices).
        out_dir: where per-class results are written atomically (``classes/class_<c>.json``) and the final
            ``results.json``; with ``resume`` a rerun skips the classes already there.
        resume: continue an interrupted run in ``out_dir`` (False starts over).
        progress: tqdm bars over classes and relearn epochs.
        settings: an ``EvalSettings`` (default ``EvalSettings()``; each field's meaning and default are there).
        **overrides: fields of ``EvalSettings`` by name, replacing ``settings``' (e.g. ``rt_max_epochs=20``); an
            unknown name is a TypeError that lists the settings.
    Returns:
        ``{"method", "num_classes", "classes", "class_names", "settings", "fingerprint", "original":
        {"acc", "per_class_acc"}, "per_class": {c: {...}}, "summary": {...}, "manifest": {versions, seeds,
        settings, data hashes} (``manifest.run_manifest``)}``; fractions in [0, 1].
    """
    plan = _describe(model, test_data, train_data, num_classes, classes, classes_seed, sample_classes, class_names,
                     settings, overrides)
    _check(plan)
    return _run(plan, Path(out_dir) if out_dir is not None else None, resume, progress)


@dataclass
class _Plan:
    """What one evaluation is: the settings, the model as an ``Unlearned``, the data, metrics and classes."""

    s: EvalSettings
    um: object
    test_data: Dataset
    train_data: Optional[Dataset]
    metrics: set
    chosen: list
    names: list
    classes_seed: int


def _describe(model, test_data, train_data, num_classes, classes, classes_seed, sample_classes, class_names,
              settings, overrides) -> _Plan:
    """Resolve the arguments into a plan: settings with overrides, the unlearned view, the test subset, the metrics
    (each must exist and have its data) and the classes (each must be a class of the model)."""
    s = (settings if settings is not None else EvalSettings()).replace(**overrides)
    um = as_unlearned(model, num_classes)
    if s.test_per_class is not None:
        test_data = per_class_subset(test_data, s.test_per_class, s.seed)
    metrics = _resolve_metrics(s.metrics, um, train_data is not None)
    chosen = select_classes(um.num_classes, classes, classes_seed, sample=sample_classes)
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(um.num_classes)]
    return _Plan(s, um, test_data, train_data, metrics, chosen, names, classes_seed)


def _check(plan: _Plan) -> None:
    """Before any work: the opt-in metrics' budgets, and the probe's layer names on the model."""
    s, um, chosen = plan.s, plan.um, plan.chosen
    _check_settings(s, plan.metrics)
    if "probe" in plan.metrics and chosen and um.feature_root(chosen[0]) is not None:
        for spec in s.probe_layers:
            resolve_layer(um.feature_root(chosen[0]), spec, um.num_classes)


def _run(plan: _Plan, out: Optional[Path], resume: bool, progress: bool) -> dict:
    """Evaluate every planned class (skipping those ``out`` already holds when resuming), then the result."""
    s, um = plan.s, plan.um
    um.set_eval()
    ctx = _context(um, plan.test_data, plan.train_data, s, "zrf" in plan.metrics)
    if out is not None:
        header = {"method": um.method, "fingerprint": um.fingerprint(),
                  "settings": {**s.as_dict(), "metrics": sorted(plan.metrics)}, "num_test": len(plan.test_data),
                  "num_train": len(plan.train_data) if plan.train_data is not None else None}
        _check_resume(out, header, resume)
        atomic_write_json(out / "eval_config.json", header)
    per_class = {}
    bar = tqdm(plan.chosen, desc=f"evaluate {um.method}", disable=not progress)
    for c in bar:
        per_class[c] = _class_result(plan, ctx, c, out, progress)
        bar.set_postfix(acc_f=f"{per_class[c].get('acc_f') or 0:.3f}", acc_r=f"{per_class[c].get('acc_r') or 0:.3f}")
    result = _result(plan, ctx, per_class)
    if out is not None:
        atomic_write_json(out / RESULTS_FILE, result)
    return result


def _class_result(plan: _Plan, ctx: EvalContext, c: int, out: Optional[Path], progress: bool) -> dict:
    """Class ``c``'s metrics: read back from ``out`` when there, else computed (seeded per class) and stored."""
    path = out / "classes" / f"class_{c:05d}.json" if out is not None else None
    done = read_json(path) if path is not None else None
    if done is None:
        with torch.random.fork_rng(devices=_rng_devices(ctx.device)):
            torch.manual_seed(class_seed(plan.s.seed, c))
            done = evaluate_class(plan.um, c, ctx, plan.s, plan.metrics, progress=progress)
        if path is not None:
            atomic_write_json(path, done)
    return done


def _result(plan: _Plan, ctx: EvalContext, per_class: dict) -> dict:
    """The result dict (``evaluate``'s Returns) from the per-class results."""
    s, um, chosen = plan.s, plan.um, plan.chosen
    original = {"acc": accuracy(ctx.orig_logits.argmax(dim=1), ctx.test_labels),
                "per_class_acc": {c: per_class[c]["orig_acc"] for c in chosen}}
    return {"method": um.method, "num_classes": um.num_classes, "classes": chosen, "class_names": plan.names,
            "metrics": sorted(plan.metrics), "settings": s.as_dict(), "fingerprint": um.fingerprint(),
            "original": original, "per_class": per_class, "summary": summarize(per_class),
            "manifest": run_manifest(s.as_dict(), {"seed": s.seed, "zrf_seed": s.zrf_seed,
                                                   "classes_seed": plan.classes_seed},
                                     {"test": plan.test_data, "train": plan.train_data})}


def per_class_subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """At most ``n`` samples of every class, drawn with ``seed`` (kept in index order)."""
    if n < 1:
        raise ValueError(f"wfkern.evaluate: test_per_class must be >= 1, got {n}")
    labels = dataset_targets(dataset, single_label=True)
    gen = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=gen)[:n]])
    idx = torch.sort(torch.cat(keep)).values
    return subset_of(dataset, idx)


def _rng_devices(device: torch.device) -> list:
    return [device.index or 0] if device.type == "cuda" else []


def _context(um, test_data, train_data, s: EvalSettings, need_random: bool) -> EvalContext:
    test_labels = dataset_targets(test_data, single_label=True)
    train_labels = dataset_targets(train_data, single_label=True) if train_data is not None else None
    with torch.no_grad():
        orig, _ = predict_logits(um.original_logits, test_data, None, batch_size=s.batch_size, device=um.device)
        random_probs = None
        if need_random:
            rnd = um.random_model(s.zrf_seed)
            logits, _ = predict_logits(rnd, test_data, None, batch_size=s.batch_size, device=um.device)
            random_probs = torch.softmax(logits.double(), dim=1)
            del rnd
    return EvalContext(test_data, test_labels, train_data, train_labels, orig, random_probs, um.device)
