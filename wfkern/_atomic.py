"""Atomic file writes: write into a private temporary folder beside the target, fsync, then rename over it.

A crash or interruption leaves either the old file or the new one, never a torn file. The written file
gets the mode a plain ``open(path, "w")`` would give it: the existing target's mode, or ``0o666`` less
the umask for a new file. A write killed outright (``kill -9``, power loss) leaves its temporary folder
``.<name>.tmp-<hex>`` behind; the next write of the same target removes it (and anything a writer put
inside it, e.g. the ``.tmpXXXX`` files of safetensors' own atomic save).
Imports nothing from wfkern, so every layer may use it.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from typing import Callable, Optional

try:  # POSIX: a live writer holds an exclusive flock on its temporary folder
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "atomic_write_text", "stale_temp_paths", "TEMP_MARK"]

TEMP_MARK = ".tmp-"
# Where liveness cannot be told from a lock (no flock, or a filesystem refusing it), a temporary
# folder counts as stale once it is this old: no single write takes an hour.
STALE_AFTER_S = 3600.0


def _tag(name: str) -> str:
    """The target's name as it appears in its temporary folders (hashed when too long for NAME_MAX)."""
    return name if len(os.fsencode(name)) <= 200 else hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _temp_pattern(name: str) -> "re.Pattern[str]":
    # Ours: ".<name>.tmp-<16 hex>". Earlier versions: mkstemp files ".tmp-<name>-<8 chars>". Both
    # end in a fixed-form random part, so the temporaries of "a" never match those of "a-b" or "a.tmp-x".
    return re.compile(rf"\A(?:\.{re.escape(_tag(name))}{re.escape(TEMP_MARK)}[0-9a-f]{{16}}"
                      rf"|{re.escape(TEMP_MARK)}{re.escape(name)}-[a-z0-9_]{{8}})\Z")


def stale_temp_paths(path: str) -> list:
    """Temporary files / folders of ``path``'s atomic writes that exist now (live or abandoned)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(os.path.basename(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if pattern.match(n))


def _lock(fd: int, blocking: bool) -> Optional[bool]:
    """flock ``fd``: True locked, False held by someone else, None when locks are unavailable here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:  # e.g. a filesystem without flock support
        return None


def _remove(p: str) -> None:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.remove(p)
    except FileNotFoundError:
        pass


def _remove_stale(path: str) -> None:
    """Remove the temporaries of earlier writes of ``path`` whose writer is gone.

    A live writer holds an exclusive flock on its temporary folder until it is done, so a
    temporary we can lock belongs to a killed process. Without locks, age decides.
    """
    for p in stale_temp_paths(path):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            stale = _lock(fd, blocking=False)  # True: its writer is gone; False: a live writer holds it
            if stale is None:
                try:
                    stale = time.time() - os.fstat(fd).st_mtime > STALE_AFTER_S
                except OSError:
                    stale = False
            if stale:
                _remove(p)
        finally:
            os.close(fd)  # releases our lock (after the removal)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems that refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _make_temp_dir(directory: str, name: str) -> tuple:
    """(folder, fd holding its lock) for one write, created empty and locked beside the target."""
    while True:
        tmp_dir = os.path.join(directory, f".{_tag(name)}{TEMP_MARK}{secrets.token_hex(8)}")
        try:
            os.mkdir(tmp_dir, 0o700)
        except FileExistsError:
            continue
        try:
            fd = os.open(tmp_dir, os.O_RDONLY)
        except FileNotFoundError:  # another writer's clean-up took it before we could lock it
            continue
        except OSError:  # pragma: no cover - platforms that cannot open a directory (no lock there)
            return tmp_dir, None
        _lock(fd, blocking=True)
        try:  # another writer's clean-up may have taken it between mkdir and flock: start again
            alive = os.path.samestat(os.fstat(fd), os.stat(tmp_dir))
        except FileNotFoundError:
            alive = False
        if alive:
            return tmp_dir, fd
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` atomically.

    ``tmp_path`` exists (empty) when ``write`` is called, in a private folder on the same filesystem;
    ``write`` may overwrite or replace it. Temporaries left by killed earlier writes of ``path`` are
    removed first.

    Raises:
        FileNotFoundError: the directory of ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory (nothing is written).
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not name or os.path.isdir(path):
        raise IsADirectoryError(f"wfkern: {path!r} must be a file path, got a directory; name a file (inside it, if you like)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"wfkern: the directory of {path!r} must exist, got a missing {directory!r}")
    _remove_stale(path)
    tmp_dir, lock_fd = _make_temp_dir(directory, name)
    tmp = os.path.join(tmp_dir, name)
    try:
        # The kernel applies the umask (and any default ACL) to 0o666, as for a plain open().
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)  # open("w") on an existing file keeps its mode
        except FileNotFoundError:
            mode = stat.S_IMODE(os.stat(tmp).st_mode)
        write(tmp)
        os.chmod(tmp, mode)  # ``write`` may have replaced the file (safetensors creates it 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)
