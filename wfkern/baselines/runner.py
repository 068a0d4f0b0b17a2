"""Run a single-class baseline once per class, recording wall time and checkpoint bytes (docs/method.md §4)."""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from torch import nn
from torch.utils.data import Dataset

from wfkern.metrics.manifest import run_manifest
from wfkern.metrics.store import atomic_write_json
from wfkern.models.weights import non_finite_weights

from .checkpoints import class_checkpoint, save_state
from .progress import ClassProgress
from .l1_sparse import l1_sparse
from .salun import salun
from .scrub import scrub
from .single_class import fine_tune, neg_grad, random_labels, retrain
from .ssd import ssd

__all__ = ["BASELINES", "run_baseline", "wf_cost", "read_cost", "COST_FILE", "baseline_setting_problem"]

BASELINES = ("retrain", "random-labels", "neg-grad", "ft", "ssd", "salun", "scrub", "l1-sparse")
COST_FILE = "cost.json"


_METHODS = {"random-labels": random_labels, "neg-grad": neg_grad, "ft": fine_tune, "ssd": ssd, "salun": salun,
            "scrub": scrub, "l1-sparse": l1_sparse}
_SET_BY_RUNNER = ("original", "train_data", "c", "num_classes", "seed", "device", "progress")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# option -> (test, what it must be); shared by run_baseline and `wfkern baseline` (which names the flag)
_RULES = {
    "epochs": (lambda v: _is_int(v) and v >= 1, "be an integer >= 1"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "be an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "be an integer >= 1"),
    "lr": (lambda v: _is_real(v) and v > 0, "be a finite number > 0"),
    "retain_ratio": (lambda v: v is None or (_is_real(v) and v >= 0), "be a finite number >= 0"),
    "alpha": (lambda v: v is None or (_is_real(v) and v >= 0), "be a finite number >= 0"),
    "lam": (lambda v: _is_real(v) and v >= 0, "be a finite number >= 0"),
    "fraction": (lambda v: _is_real(v) and 0 <= v <= 1, "be a number in [0, 1]"),
    "momentum": (lambda v: _is_real(v) and 0 <= v < 1, "be a number in [0, 1)"),
    "weight_decay": (lambda v: _is_real(v) and v >= 0, "be a finite number >= 0"),
    "stop_acc": (lambda v: _is_real(v) and 0 <= v <= 1, "be a number in [0, 1]"),
    "forget_epochs": (lambda v: _is_int(v) and v >= 0, "be an integer >= 0"),
    "forget_batch_size": (lambda v: _is_int(v) and v >= 1, "be an integer >= 1"),
    "temperature": (lambda v: _is_real(v) and v > 0, "be a finite number > 0"),
    "kl_weight": (lambda v: _is_real(v) and v >= 0, "be a finite number >= 0"),
    "ce_weight": (lambda v: _is_real(v) and v >= 0, "be a finite number >= 0"),
    "l1": (lambda v: _is_real(v) and v >= 0, "be a finite number >= 0"),
}


def baseline_setting_problem(name: str, value) -> Optional[str]:
    """What option ``name`` of a fine-tuning / dampening baseline must be when ``value`` is not valid, else None."""
    rule = _RULES.get(name)
    if rule is None or rule[0](value):
        return None
    return rule[1]


def _check_method_kwargs(method: str, kwargs: dict) -> None:
    if method == "retrain":  # train_model checks its own settings
        return
    accepted = [n for n in inspect.signature(_METHODS[method]).parameters if n not in _SET_BY_RUNNER]
    for name, value in kwargs.items():
        if name not in accepted:
            raise ValueError(f"wfkern.run_baseline: method_kwargs of {method!r} must be drawn from {accepted}, "
                             f"got {name!r}")
        problem = baseline_setting_problem(name, value)
        if problem is not None:
            raise ValueError(f"wfkern.run_baseline: {name} must {problem}, got {value!r}")


def _unlearn_one(method: str, c: int, original, model_fn, train_data, val_data, num_classes, seed, kwargs, progress,
                 device):
    if method == "retrain":
        if model_fn is None:
            raise ValueError("wfkern.run_baseline: model_fn must build an untrained model for 'retrain', got None")
        if device is not None:
            kwargs["device"] = device
        return retrain(model_fn, train_data, c, val_data=val_data, seed=seed, **kwargs)
    if method in ("random-labels", "salun"):
        kwargs["num_classes"] = num_classes
    if method != "ssd":  # SSD is deterministic: no seed
        kwargs["seed"] = seed
    return _METHODS[method](original, train_data, c, progress=progress, device=device, **kwargs)


def _summary(method: str, num_classes: int, per_class: dict, extra: dict) -> dict:
    n = len(per_class)
    seconds = sum(r["seconds"] for r in per_class.values())
    nbytes = sum(r["bytes"] for r in per_class.values())
    return {
        "method": method, "num_classes": num_classes, "n_runs": n, "n_files": n,
        "seconds_total": seconds, "bytes_total": nbytes,
        # what obtaining an unlearned model for *every* class costs (measured mean x Nc when a subset ran)
        "all_classes_seconds": seconds / n * num_classes if n else None,
        "all_classes_bytes": nbytes / n * num_classes if n else None,
        "all_classes_runs": num_classes, "per_class": {str(c): r for c, r in sorted(per_class.items())}, **extra,
    }


def run_baseline(method: str, *, original: Optional[nn.Module], train_data: Dataset, out_dir: str,
                 num_classes: int, classes: Optional[Sequence[int]] = None,
                 model_fn: Optional[Callable[[], nn.Module]] = None, val_data: Optional[Dataset] = None,
                 seed: int = 0, method_kwargs: Optional[dict] = None, resume: bool = True,
                 progress: bool = True, device=None) -> dict:
    """Unlearn each class separately with a single-class method; one checkpoint per class.

    Args:
        method: one of ``BASELINES``: "retrain" (from scratch without the class; needs ``model_fn``), "ft"
            (fine-tune ``original`` on the retain set), "random-labels", "neg-grad", "ssd" (selective synaptic
            dampening, no training), "salun" (saliency-masked random labels), "scrub" (teacher-student min-max) or
            "l1-sparse" (retain fine-tuning with a decaying l1 penalty); docs/evaluation.md.
        original: the trained model (unused by "retrain").
        train_data: the training set.
        out_dir: writes ``models/class_<c>.safetensors``, ``cost/class_<c>.json`` and ``cost.json``.
        num_classes: Nc.
        classes: the classes to unlearn (default all).
        model_fn: builds an untrained model of the original architecture.
        val_data: validation set for "retrain".
        seed: per-class seed base (class ``c`` uses ``seed + c``; "ssd" is deterministic and takes none).
        method_kwargs: passed to the method (e.g. ``{"epochs": 2}``, train_model's kwargs for "retrain").
        resume: skip classes whose checkpoint and cost record already exist.
        progress: show the progress on stderr: on a terminal (or in a notebook) a bar over the classes and the
            methods' per-epoch bars; otherwise (a log file, a pipe) a plain line as classes finish (at most every
            10 s, and after the last), never carriage returns (``ClassProgress``).
        device: where to train (default the original's device; "retrain": train_model's default).
    Returns:
        The cost record (also in ``out_dir/cost.json``): wall seconds and checkpoint bytes per class and in total,
        and the extrapolation to all ``num_classes`` classes.
    """
    if method not in BASELINES:
        raise ValueError(f"wfkern.run_baseline: method must be one of {list(BASELINES)}, got {method!r}")
    if method != "retrain" and original is None:
        raise ValueError(f"wfkern.run_baseline: original must be the trained model for {method!r}, got None")
    _check_method_kwargs(method, dict(method_kwargs or {}))
    out = Path(out_dir)
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    per_class = {}
    with ClassProgress(f"baseline {method}", len(classes), progress) as shown:
        for c in classes:
            ckpt, rec_path = class_checkpoint(out, c), out / "cost" / f"class_{c:05d}.json"
            if resume and ckpt.exists() and rec_path.exists():
                per_class[c] = json.loads(rec_path.read_text())
                shown.class_done(c, ran=False)
                continue
            t0 = time.perf_counter()
            model = _unlearn_one(method, c, original, model_fn, train_data, val_data, num_classes, seed + c,
                                 dict(method_kwargs or {}), shown.bars, device)
            seconds = time.perf_counter() - t0
            problem = non_finite_weights(model.state_dict())
            if problem is not None:  # a diverged run is an error, never a saved model whose outputs are NaN
                raise FloatingPointError(f"wfkern.run_baseline: {method} diverged on class {c}: its weights are not "
                                         f"finite ({problem}); nothing saved for that class (the classes before it "
                                         f"are kept). Lower the method's lr or epochs")
            nbytes = save_state(ckpt, model, {"method": method, "class": c, "num_classes": num_classes})
            per_class[c] = {"seconds": seconds, "bytes": nbytes}
            atomic_write_json(rec_path, per_class[c])
            shown.class_done(c, ran=True)
    manifest = run_manifest(method_kwargs or {}, {"seed": seed}, {"train": train_data, "val": val_data})
    record = _summary(method, num_classes, per_class, {"classes": classes, "method_kwargs": method_kwargs or {},
                                                       "manifest": manifest})
    atomic_write_json(out / COST_FILE, record)
    return record


def wf_cost(gates_path: str, seconds: float, num_classes: int, out_dir: Optional[str] = None) -> dict:
    """WF-Net's cost recorded the baselines' way: one untraining round, one gates file for all classes.

    Args:
        gates_path: the saved gates (``wf.save_gates``).
        seconds: wall time of the untraining round.
        num_classes: Nc.
        out_dir: when given, the record is written to ``out_dir/cost.json``.
    """
    nbytes = Path(gates_path).stat().st_size
    record = {"method": "wfnet", "num_classes": num_classes, "n_runs": 1, "n_files": 1, "seconds_total": seconds,
              "bytes_total": nbytes, "all_classes_seconds": seconds, "all_classes_bytes": nbytes,
              "all_classes_runs": 1, "gates": str(gates_path)}
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / COST_FILE, record)
    return record


def read_cost(out_dir: str) -> Optional[dict]:
    """The cost record in ``out_dir`` (None when there is none)."""
    path = Path(out_dir) / COST_FILE
    return json.loads(path.read_text()) if path.exists() else None
