"""The untraining history of a ``wfkern unlearn`` run (``history.jsonl``), for the report's untraining curve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from wfkern.unlearn.state import HISTORY_FILE, read_history_records

__all__ = ["read_history", "history_path", "HISTORY_KEYS"]

# What the report keeps of each validation record (history.jsonl holds a few more).
HISTORY_KEYS = ("eval", "step", "epoch", "seconds", "train_loss", "val_objective", "val_acc_r", "val_acc_f", "best")


def history_path(run: str | os.PathLike) -> Path:
    """``run``'s history file: ``run`` itself when it is a file, else ``run/history.jsonl``."""
    p = Path(run)
    return p if p.is_file() else p / HISTORY_FILE


def read_history(run: str | os.PathLike, *, keys: Optional[tuple] = HISTORY_KEYS) -> list[dict]:
    """The validation records of an untraining run, in order.

    Args:
        run: the run folder (``wfkern unlearn --out-dir``) or its ``history.jsonl``.
        keys: the fields kept of each record (None: all).
    Returns:
        One dict per validation. A torn last line (a run killed mid-append) is left out.
    Raises:
        FileNotFoundError: no history file there.
        ValueError: a line other than a torn last one is not a JSON record (file and line named).
    """
    path = history_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"wfkern.read_history: run must be a `wfkern unlearn` folder with {HISTORY_FILE} "
                                f"(or that file), got none at {path}")
    records = read_history_records(path, "wfkern.read_history")
    return [{k: record[k] for k in keys if k in record} for record in records] if keys is not None else records
