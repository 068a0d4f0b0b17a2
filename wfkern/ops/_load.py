"""Load the compiled core (wfkern._C) once and record which backend runs the ops, and why.

A missing build is not an error: the pure-PyTorch reference runs instead, and
``wfkern.backend()`` / ``wfkern info`` say so. A build that exists but fails to load warns once.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import warnings
from typing import Iterator

import torch

__all__ = [
    "backend",
    "describe_backend",
    "is_reference_forced",
    "kernel_for",
    "loaded",
    "set_force_reference",
    "use_reference",
]

_log = logging.getLogger("wfkern")
_REBUILD_HINT = "rebuild with: pip install --no-build-isolation -e . (see README)"
_OPS = ("mask_epilogue", "mask_epilogue_backward")

_loaded = False
_reason = ""
_kernel_devices: frozenset = frozenset()
_force_reference = os.environ.get("WFKERN_FORCE_REFERENCE", "0") == "1"


def _library_files() -> list:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return sorted(glob.glob(os.path.join(here, "_C*.so")) + glob.glob(os.path.join(here, "_C*.pyd")))


def _load() -> None:
    global _loaded, _reason, _kernel_devices
    if not _library_files():
        _reason = "wfkern._C is not built (installed without a compiler, or with WFKERN_CPP=0)"
        _log.info("%s; using the pure-PyTorch reference", _reason)
        return
    try:
        importlib.import_module("wfkern._C")
    except (ImportError, OSError) as err:
        _reason = f"wfkern._C failed to load: {err}"
        warnings.warn(f"{_reason}; using the pure-PyTorch reference. Fix: {_REBUILD_HINT}", RuntimeWarning)
        return
    _loaded = True
    op = torch.ops.wfkern.mask_epilogue.default
    _kernel_devices = frozenset(d for d in ("cpu", "cuda") if op.has_kernel_for_dispatch_key(d.upper()))
    _reason = "wfkern._C loaded with kernels for " + ", ".join(sorted(_kernel_devices))


def loaded() -> bool:
    """True when wfkern._C loaded and its op schemas are registered."""
    return _loaded


def kernel_for(device_type: str) -> bool:
    """True when a compiled kernel should run for tensors on ``device_type`` ("cpu", "cuda")."""
    return not _force_reference and device_type in _kernel_devices


def is_reference_forced() -> bool:
    return _force_reference


def set_force_reference(enabled: bool) -> None:
    """Route every op to the pure-PyTorch reference (e.g. to let inductor fuse it), or back."""
    global _force_reference
    if not enabled and not _loaded:
        warnings.warn(f"wfkern: cannot use compiled kernels: {_reason}; {_REBUILD_HINT}", RuntimeWarning)
    _force_reference = bool(enabled)


@contextlib.contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Context manager form of :func:`set_force_reference`; restores the previous setting."""
    previous = _force_reference
    set_force_reference(enabled)
    try:
        yield
    finally:
        set_force_reference(previous)


def backend() -> str:
    """What runs the ops for this process's default device: "cuda", "cpp" or "reference"."""
    if kernel_for("cuda") and torch.cuda.is_available():
        return "cuda"
    if kernel_for("cpu"):
        return "cpp"
    return "reference"


def describe_backend() -> str:
    """Multi-line, human-readable account of the active backend (used by ``wfkern info``)."""
    lines = [f"backend: {backend()}"]
    if _force_reference:
        lines.append("reason: the pure-PyTorch reference is forced (WFKERN_FORCE_REFERENCE=1 or use_reference())")
    lines.append(f"compiled core: {_reason}")
    lines.append(f"library files: {', '.join(_library_files()) or 'none'}")
    lines.append(f"torch: {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")
    lines.append(f"CUDA device visible: {torch.cuda.is_available()}")
    if "cuda" in _kernel_devices and not torch.cuda.is_available():
        lines.append("note: CUDA kernels are compiled but no GPU is visible; CPU tensors use the C++ kernels")
    return "\n".join(lines)


_load()
