"""Model checkpoints: safetensors weights + JSON metadata in the header; atomic writes, no pickle."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from wfkern._atomic import atomic_write
from wfkern.models import create_model

__all__ = ["ModelConfig", "save_checkpoint", "load_checkpoint", "read_checkpoint_config", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "wfkern.model/1"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from the registry.

    Attributes:
        model: registry name (``wfkern.models.create_model``).
        num_classes: Nc.  in_chans: C.  image_size: input side S.
        model_kwargs: architecture options passed to ``create_model``.
        dataset: name of the dataset it was trained on (informational).
        split_seed: the seed of that dataset's train/val/test split.
        extra: free-form JSON-serialisable facts (accuracy, epochs, ...).
    """

    model: str
    num_classes: int
    in_chans: int
    image_size: int
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = ""
    split_seed: int = 0
    extra: dict = field(default_factory=dict)


def save_checkpoint(path: str, model: nn.Module, config: ModelConfig) -> None:
    """Write ``model``'s state dict and ``config`` to a safetensors file atomically.

    Args:
        path: destination; its directory must exist.
        model: the trained network.
        config: how to rebuild it (stored as JSON under the "wfkern" metadata key).
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": CHECKPOINT_FORMAT, "wfkern": json.dumps(asdict(config), sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_checkpoint_config(path: str) -> ModelConfig:
    """Read only the metadata of a checkpoint written by ``save_checkpoint``.

    Raises:
        FileNotFoundError: no such file.  ValueError: not a wfkern model checkpoint.
    """
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"wfkern.load_checkpoint: path must be an existing file, got {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ValueError(f"wfkern.load_checkpoint: path must be a safetensors file, got {path!r} ({e})") from e
    if meta.get("format") != CHECKPOINT_FORMAT or "wfkern" not in meta:
        raise ValueError(f"wfkern.load_checkpoint: path must be a wfkern model checkpoint ({CHECKPOINT_FORMAT}), "
                         f"got format {meta.get('format')!r} in {path!r}")
    try:
        return ModelConfig(**json.loads(meta["wfkern"]))
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"wfkern.load_checkpoint: metadata must describe a model, got {meta['wfkern'][:80]!r}") from e


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model from the registry and load its weights (strict; never unpickles).

    Args:
        path: a file written by ``save_checkpoint``.
        device: where to put the weights.
    Returns:
        (the model in eval mode, its ModelConfig).
    Raises:
        FileNotFoundError, ValueError: missing file, foreign file, or weights that do not fit the model.
    """
    from safetensors.torch import load_file

    config = read_checkpoint_config(path)
    model = create_model(config.model, config.num_classes, config.in_chans, config.image_size, **config.model_kwargs)
    state = load_file(path, device=str(device))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"wfkern.load_checkpoint: weights must match model {config.model!r}, got a mismatch: {first}") from e
    return model.to(device).eval(), config
