"""Atomic JSON persistence of evaluation results (``wfkern._atomic``: temp file + fsync + rename), so a run can resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from wfkern._atomic import atomic_write_text

__all__ = ["atomic_write_json", "read_json", "clean_json"]


def clean_json(obj: Any) -> Any:
    """Convert to JSON-safe values: NaN/inf become None, tuples lists, dict keys strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (parents created): a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(path), json.dumps(clean_json(obj), indent=1))


def read_json(path: str | os.PathLike) -> Optional[Any]:
    """Read a JSON file; None when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
