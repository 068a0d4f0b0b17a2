"""Save and load the gate logits ("filters") as safetensors with validating metadata.

Never unpickles anything: a filters file is tensors plus string metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from wfkern._atomic import atomic_write
from wfkern.patch.bake import bake
from wfkern.patch.model import WFModel

__all__ = ["base_fingerprint", "load_filters", "read_filters", "save_filters"]

FORMAT = "wfkern-filters"
FORMAT_VERSION = "1"


def base_fingerprint(wf: WFModel) -> str:
    """sha256 over the original model's state (names, shapes, dtypes, bytes), as un-patched.

    Independent of how the model was patched (wrapper names, folded BatchNorms).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(bake(wf, forget=-1).state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _layer_table(wf: WFModel) -> list:
    return [
        {"name": name, "kind": layer.kind, "channels": layer.channels, "bias_gates": layer.alpha_b is not None}
        for name, layer in wf.wf_layers().items()
    ]


def save_filters(wf: WFModel, path: str, extra_metadata: Optional[dict] = None) -> None:
    """Write ``wf``'s gate logits to ``path`` (safetensors, atomic rename).

    Metadata: format, class count, the layer table (names, kinds, channels), a fingerprint of the
    base weights, and ``extra_metadata`` (JSON-serialisable) for the caller's own use.
    """
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_classes": str(wf.num_classes),
        "layers": json.dumps(_layer_table(wf)),
        "base_fingerprint": base_fingerprint(wf),
        "extra": json.dumps(extra_metadata or {}),
    }
    tensors = {k: v.contiguous() for k, v in wf.filters_state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_filters(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, metadata) of a filters file, or a ValueError saying why it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"wfkern.load_filters: path must be an existing filters file, got {path!r}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises several types for truncated / foreign files
        raise ValueError(f"wfkern.load_filters: {path!r} must be a safetensors filters file, got unreadable data ({err})") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(f"wfkern.load_filters: {path!r} must be a wfkern filters file, got format {metadata.get('format')!r}")
    return tensors, metadata


def load_filters(wf: WFModel, path: str, *, check_fingerprint: bool = True) -> dict:
    """Load gate logits saved by :func:`save_filters` into ``wf``; all checks run before any copy.

    Args:
        wf: the patched model to load into.
        path: a filters file.
        check_fingerprint: refuse filters learnt on different base weights (default True).
    Returns:
        The file's ``extra`` metadata (dict).
    Raises:
        FileNotFoundError / ValueError: missing, corrupt or mismatched file; ``wf`` is unchanged.
    """
    tensors, metadata = read_filters(path)
    if metadata.get("num_classes") != str(wf.num_classes):
        raise ValueError(f"wfkern.load_filters: filters must be for {wf.num_classes} classes, got {metadata.get('num_classes')}")
    theirs = json.loads(metadata.get("layers", "[]"))
    ours = _layer_table(wf)
    if theirs != ours:
        diff = [(a, b) for a, b in zip(ours, theirs) if a != b][:2] or f"{len(ours)} vs {len(theirs)} layers"
        raise ValueError(f"wfkern.load_filters: filters must match the model's WF layers, got a different layer table ({diff})")
    if check_fingerprint and metadata.get("base_fingerprint") != base_fingerprint(wf):
        raise ValueError(
            "wfkern.load_filters: filters must be learnt on this model's base weights, got a different fingerprint; "
            "pass check_fingerprint=False to load them anyway"
        )
    wf.load_filters_state_dict(tensors)
    return json.loads(metadata.get("extra", "{}"))
