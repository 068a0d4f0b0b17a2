"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A crash or interruption leaves either the old file or the new one, never a torn file.
Imports nothing from wfkern, so every layer may use it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` atomically.

    Raises:
        FileNotFoundError: the directory of ``path`` does not exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"wfkern: the directory of {path!r} must exist, got a missing {directory!r}")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)
