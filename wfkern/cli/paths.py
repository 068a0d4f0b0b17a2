"""Output paths a command will write: probed before any work starts, with one-line errors."""

from __future__ import annotations

import os
import tempfile

from wfkern.cli.errors import UserError

__all__ = ["check_output_dir", "check_output_file", "ensure_dir", "ensure_parent"]

def _blocking_ancestor(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is not a directory (a file in the way), else None."""
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def _probe_writable(directory: str) -> str | None:
    """None when a file can be created in ``directory`` (the way atomic writes create theirs), else why not."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".wfkern-probe-", dir=directory)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    try:
        os.remove(probe)
    except OSError:
        pass
    return None


def _check_target_file(path: str, what: str, shown: str) -> None:
    """``path`` may be (re)placed by a file: nothing, or a regular file; not a directory or a device."""
    if os.path.isdir(path):
        raise UserError(f"{what} must be a file path, got a directory {shown!r}; remove it or choose another name")
    if os.path.lexists(path) and not (os.path.isfile(path) or os.path.islink(path)):
        raise UserError(f"{what} must be a regular file path, got {shown!r}, which is not a regular file")


def check_output_file(path: str, what: str) -> str:
    """Fail now, with one line, if the command could not write the file ``path`` when its work is done.

    Checks: not an existing directory or special file, a parent folder that exists (a file in its place
    is named) and in which a file can be created. Used by every command that writes a file.
    """
    if not path:
        raise UserError(f"{what} must be a file path, got an empty string")
    full = os.path.abspath(path)
    _check_target_file(full, what, path)
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        blocker = _blocking_ancestor(full)
        if blocker is not None:
            raise UserError(f"{what} must be in a directory, got {path!r}, but {blocker} is a file")
        raise UserError(f"{what} must be in an existing directory, got {path!r} (no {parent})")
    why = _probe_writable(parent)
    if why is not None:
        raise UserError(f"{what} must be in a writable directory, got {path!r} (creating a file in {parent} fails: {why})")
    return path


def check_output_dir(path: str, what: str, files: tuple[str, ...] = (), dirs: tuple[str, ...] = (), *,
                     create: bool = True) -> str:
    """Create the output folder ``path`` and fail now, with one line, if the command could not write in it.

    Args:
        path: the folder (created with its parents).
        what: the option's name for messages ("--out-dir").
        files: names of the files the command will write inside it (each may not be a directory).
        dirs: names of the sub-folders it will write into (each may not be a file).
        create: False checks the same without creating anything (a missing folder: its nearest existing
            ancestor must take new files), for a command that must leave no folder behind when it fails.
    Returns:
        ``path``.
    """
    if not path:
        raise UserError(f"{what} must be a directory path, got an empty string")
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise UserError(f"{what} must be a directory, got {path!r}, which is a file")
    blocker = _blocking_ancestor(full)
    if blocker is not None:
        raise UserError(f"{what} must be a writable directory, got {path!r}, but {blocker} is a file")
    if create:
        try:
            os.makedirs(full, exist_ok=True)
        except OSError as e:
            raise UserError(f"{what} must be a writable directory, got {path!r} ({e.strerror})") from e
        why = _probe_writable(full)
        if why is not None:
            raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in it fails: {why})")
    else:
        existing = full
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        why = _probe_writable(existing)
        if why is not None:
            raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in {existing} "
                            f"fails: {why})")
    for name in files:
        _check_target_file(os.path.join(full, name), what, os.path.join(path, name))
    for name in dirs:
        sub = os.path.join(full, name)
        if os.path.lexists(sub) and not os.path.isdir(sub):
            raise UserError(f"{what} must be a writable directory, got {path!r}, but {os.path.join(path, name)} "
                            "is a file where a folder goes")
        if os.path.isdir(sub):
            why = _probe_writable(sub)
            if why is not None:
                raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in "
                                f"{os.path.join(path, name)} fails: {why})")
    return path


def ensure_dir(path: str, what: str) -> str:
    """Create ``path`` (and parents) or raise a one-line error (``check_output_dir`` without file names)."""
    return check_output_dir(path, what)


def ensure_parent(path: str, what: str) -> str:
    """Check that the output file ``path`` can be written (``check_output_file``)."""
    return check_output_file(path, what)
