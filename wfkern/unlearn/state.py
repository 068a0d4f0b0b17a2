"""Untraining checkpoints (current + best filters, optimiser state, progress) and the JSON-lines history."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from wfkern._atomic import atomic_write, atomic_write_text

__all__ = ["Progress", "ResumeMismatch", "resume_differences", "format_differences", "save_state", "load_state",
           "HistoryLog", "read_history_records", "history_record_problem",
           "STATE_FILE", "HISTORY_FILE", "GATES_FILE", "STATE_FORMAT"]

log = logging.getLogger("wfkern.unlearn")

STATE_FILE = "unlearn_state.safetensors"
HISTORY_FILE = "history.jsonl"
GATES_FILE = "gates.safetensors"
STATE_FORMAT = "wfkern.unlearn_state/1"


@dataclass
class Progress:
    """Where a run stands; everything random is derived from (seed, epoch, step), so this is all resume needs.

    Attributes:
        step: optimiser steps done.  evals: validations done.
        best_objective: lowest validation objective so far.  best_step: the step it was reached at.
        bad_evals: validations since the last improvement.  done: early-stopped or finished.
        seconds: untraining wall time spent so far.
        running: exponential moving averages of (loss, L_r, L_f, R) for the bar and the history.
        config: the run's UnlearnConfig as a dict (checked on resume).
        run: what the run started from besides its settings (checked on resume, ``resume_differences``): the base
            model's fingerprint (``wfkern.patch.base_fingerprint``, as in the filters file), the precision, the
            data's sample counts and the caller's ``data_settings`` (the CLI's dataset, split seed, image size and
            data root). Empty in checkpoints of older versions.
    """

    step: int = 0
    evals: int = 0
    best_objective: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    done: bool = False
    seconds: float = 0.0
    running: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)


class ResumeMismatch(ValueError):
    """A resume that would continue a run from another base model, data or precision than the run's own.

    Attributes:
        differences: (name, now, the run's) for each difference, in the order of the run's record.
    """

    def __init__(self, differences: list[tuple[str, object, object]]) -> None:
        self.differences = differences
        super().__init__("wfkern.unlearn: resume must use the run's base model, data and precision, got "
                         f"{format_differences(differences)}; start a new run (resume=False or another out_dir)")


def _shown_value(name: str, value) -> str:
    if name == "base_fingerprint" and isinstance(value, str):
        return value[:12] + ".."
    return "none" if value is None else str(value)


def format_differences(differences: list[tuple[str, object, object]], labels: dict | None = None) -> str:
    """``"split_seed 1 (run: 0), base_fingerprint 1f2e3d4c5b6a.. (run: 9a8b7c6d5e4f..)"``; ``labels`` renames."""
    labels = labels or {}
    return ", ".join(f"{labels.get(name, name)} {_shown_value(name, now)} (run: {_shown_value(name, then)})"
                     for name, now, then in differences)


def resume_differences(run: dict, now: dict) -> list[tuple[str, object, object]]:
    """(name, now, the run's) for every entry both records hold that differs (an entry only one holds, e.g. the
    CLI's data settings when the library resumes a CLI run, cannot be compared and is not)."""
    return [(name, now[name], then) for name, then in run.items() if name in now and now[name] != then]


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state_dict = opt.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{param_id}/{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{param_id}/{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, param_id, name = key.split("/", 2)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in meta["scalars"].items():
        param_id, name = key.split("/", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(path: str, current: dict[str, Tensor], best: dict[str, Tensor], opt: torch.optim.Optimizer,
               progress: Progress) -> None:
    """Write one atomic checkpoint: current filters, best filters, optimiser state and progress.

    Args:
        path: destination file (its directory must exist).
        current: filters now (``wf.gates_state_dict()``).  best: the best filters so far.
        opt: the optimiser.  progress: counters, best objective and the run's config.
    """
    from safetensors.torch import save_file

    tensors = {f"current/{k}": v for k, v in current.items()}
    tensors.update({f"best/{k}": v for k, v in best.items()})
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    meta = {"format": STATE_FORMAT, "progress": json.dumps(asdict(progress)), "optimizer": json.dumps(opt_meta)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str) -> tuple[dict[str, Tensor], dict[str, Tensor], dict, Progress]:
    """Read a checkpoint written by ``save_state``.

    Returns:
        (current filters, best filters, optimiser state dict, Progress).
    Raises:
        FileNotFoundError: no checkpoint.  ValueError: a file that is not an untraining checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"wfkern.unlearn: resume must find a checkpoint, got no file at {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"wfkern.unlearn: resume must read an untraining checkpoint, got an unreadable {path!r} ({e})") from e
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"wfkern.unlearn: resume must read a {STATE_FORMAT} file, got {meta.get('format')!r} in {path!r}")
    current = {k[len("current/"):]: v for k, v in tensors.items() if k.startswith("current/")}
    best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
    opt_state = _unflatten_optimizer(tensors, json.loads(meta["optimizer"]))
    return current, best, opt_state, Progress(**json.loads(meta["progress"]))


class HistoryLog:
    """Append-only JSON-lines history; on resume, lines past the checkpoint's step are dropped.

    Every rewrite of the file (a fresh run's empty file, the trimmed file on resume) is atomic; each
    record is appended with one write and fsynced. A run killed during an append leaves at most a torn
    last line, which belongs to a validation after the last checkpoint: resume drops it with the rest of
    the lost tail.

    Args:
        path: the .jsonl file, or None to keep the records in memory only.
        keep_until_step: when resuming, the checkpoint's step (later lines are from a lost tail).
    Raises:
        ValueError: on resume, a line other than a torn last one is not a valid record (``read_history_records``).
    """

    def __init__(self, path: str | None, keep_until_step: int | None = None) -> None:
        self.path = path
        self.records: list[dict] = []
        if path and keep_until_step is not None and os.path.isfile(path):
            kept = read_history_records(path, "wfkern.unlearn", "; delete the file to resume without it")
            self.records = [r for r in kept if r["step"] <= keep_until_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif path:
            atomic_write_text(path, "")

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.path:
            data = (json.dumps(record) + "\n").encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                while data:  # one write for a line in practice; loop on a short write
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)


# The fields of a validation record (``loop._validate``) whose form the readers check; others are kept as they are.
_COUNTS = ("eval", "step", "epoch")     # integers >= 0; "step" is required
_FLAGS = ("best",)                      # true / false


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def history_record_problem(record, previous_step: int | None = None) -> tuple[str | None, str, object] | None:
    """What is wrong with one validation record of a ``history.jsonl``, or None when nothing is.

    A record is a JSON object with a ``step`` (an integer >= 0, never below ``previous_step``, the step of the
    record before it); ``eval`` and ``epoch`` are integers >= 0, ``best`` is true or false, and ``seconds``,
    ``lambda1`` and every ``train_*`` / ``val_*`` value is a number (NaN and inf included) or null. Other fields
    are not checked. The one rule for every reader: resume, ``read_history`` (the report's curve, ``wfkern
    evaluate``'s untraining time) and the results check of ``wfkern.load_results``.

    Returns:
        (field or None for the record as a whole, what it must be, what it is) for the first problem.
    """
    if not isinstance(record, dict):
        return None, "be a JSON object (a validation record)", record
    if "step" not in record:
        return None, "hold a 'step' (the optimiser step of the validation)", \
            _Said(f"a record without one ({', '.join(map(str, record)) or 'no fields'})")
    for key in _COUNTS:
        value = record.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return key, "be an integer >= 0", record[key]
    if previous_step is not None and record["step"] < previous_step:
        return "step", f"not go back (the record before it is at step {previous_step})", record["step"]
    for key in _FLAGS:
        if key in record and not isinstance(record[key], bool):
            return key, "be true or false", record[key]
    for key, value in record.items():
        if (key in ("seconds", "lambda1") or key.startswith(("train_", "val_"))) and value is not None \
                and not _is_number(value):
            return key, "be a number or null", value
    return None


class _Said(str):
    """A description standing in for a value in an error message (shown without quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_history_records(path, who: str, hint: str = "") -> list[dict]:
    """The validation records of a ``history.jsonl`` file, each checked (``history_record_problem``).

    A last line without its newline is a record cut short by a kill during its append: it is dropped with a
    warning (logged), since a resumed run rewrites the history from its checkpoint's step and the cut record
    belongs to a validation after that checkpoint. Blank lines are skipped. Any other line that is not a
    valid record is an error, which stops the reader.

    Args:
        path: the file.  who: the function named in errors and the warning ("wfkern.unlearn").
        hint: appended to an error (what to do about it).
    Raises:
        ValueError: one line, ``<who>: <path>:<line> ... must ..., got ...<hint>``.
    """
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    torn = lines.pop()  # the text after the last newline: b"" unless the last append was cut short
    if torn.strip():
        log.warning(f"{who}: dropped line {path}:{len(lines) + 1}, a record cut short (the run was killed while "
                    f"writing it): {torn[:60].decode('utf-8', 'replace')!r}")
    records: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, an integer past int()'s limit
            raise ValueError(f"{who}: {path}:{number} must be a JSON record, got "
                             f"{line[:60].decode('utf-8', 'replace')!r}{hint}") from None
        problem = history_record_problem(record, records[-1]["step"] if records else None)
        if problem is not None:
            key, expectation, value = problem
            field = f" field {key!r}" if key else ""
            raise ValueError(f"{who}: {path}:{number}{field} must {expectation}, got {_shown(value)}{hint}")
        records.append(record)
    return records
