"""Baseline checkpoints: one safetensors file per forgotten class, written atomically; never a pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from wfkern._atomic import atomic_write

__all__ = ["save_state", "load_state", "class_checkpoint", "per_class_loader"]


def class_checkpoint(out_dir: str | os.PathLike, c: int) -> Path:
    """Path of the checkpoint of the model unlearned on class ``c`` inside a baseline's ``out_dir``."""
    return Path(out_dir) / "models" / f"class_{int(c):05d}.safetensors"


def save_state(path: str | os.PathLike, model: nn.Module, metadata: Optional[dict] = None) -> int:
    """Write ``model.state_dict()`` to ``path`` (safetensors, atomic; parents created); returns its bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(str(path), lambda tmp: save_file(state, tmp, metadata=meta))
    return path.stat().st_size


def load_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint written by ``save_state``: ``(state_dict of CPU tensors, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wfkern.load_state: path must be a checkpoint file, got missing {path}")
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        for key in f.keys():
            state[key] = f.get_tensor(key)
    return state, meta


def per_class_loader(out_dir: str | os.PathLike, model_fn: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """A ``class -> model`` callable over a baseline's checkpoints (for ``wfkern.metrics.PerClassModels``).

    Args:
        out_dir: the baseline's output folder (``models/class_<c>.safetensors``).
        model_fn: builds a model of the original architecture to load each state into.
    """

    def load(c: int) -> nn.Module:
        state, _ = load_state(class_checkpoint(out_dir, c))
        model = model_fn()
        model.load_state_dict(state)
        return model.eval()

    return load
