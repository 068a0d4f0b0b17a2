"""Save and load the learnt gates (their logits) as a safetensors gates file with validating metadata.

Never unpickles anything: a gates file is tensors plus string metadata. Files written by wfkern 0.1
(format ``wfkern-filters``, keys ``<layer>.alpha_w`` / ``<layer>.alpha_b``) keep loading: their keys are
read under today's names (``<layer>.gates`` / ``<layer>.bias_gates``).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from wfkern._atomic import atomic_write
from wfkern._utils import renamed
from wfkern.layers import FoldedBatchNorm2d, WFLayer

if TYPE_CHECKING:  # the type only: model.py imports this module
    from wfkern.patch.model import WFModel

__all__ = ["GATE_KEYS", "base_fingerprint", "current_gate_keys", "gates_layer_names", "load_gates", "read_gates",
           "save_gates", "filters_layer_names", "load_filters", "read_filters", "save_filters"]

FORMAT = "wfkern-gates"
FORMAT_VERSION = "1"
LEGACY_FORMAT = "wfkern-filters"  # wfkern 0.1's name for the same file
# Key suffix of a layer's weight gates and bias gates in a gates file and in WFModel.gates_state_dict().
GATE_KEYS = ("gates", "bias_gates")
_LEGACY_GATE_KEYS = {"alpha_w": "gates", "alpha_b": "bias_gates"}


def current_gate_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with wfkern 0.1's gate keys (``<layer>.alpha_w`` / ``.alpha_b``) renamed to today's."""
    renamed = {}
    for key, value in state.items():
        layer, _, suffix = key.rpartition(".")
        renamed[f"{layer}.{_LEGACY_GATE_KEYS[suffix]}" if suffix in _LEGACY_GATE_KEYS else key] = value
    return renamed


def base_fingerprint(wf: "WFModel") -> str:
    """sha256 over the original model's state (names, shapes, dtypes, bytes), as un-patched.

    Independent of how the model was patched (wrapper names, folded BatchNorms).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(original_state(wf).items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def original_state(wf: "WFModel") -> Dict[str, torch.Tensor]:
    """The base model's state dict under its un-patched names (no copy of the model).

    A WF layer's ``<name>.base.<key>`` is the original ``<name>.<key>`` and its gates are dropped;
    a folded BatchNorm's ``<name>.bn.<key>`` is ``<name>.<key>``.
    """
    renames, gates = [], set()
    for name, module in wf.model.named_modules():
        if isinstance(module, WFLayer):
            renames.append((_dotted(name, "base."), _dotted(name, "")))
            gates.update(_dotted(name, key) for key in ("alpha_w", "alpha_b"))
        elif isinstance(module, FoldedBatchNorm2d):
            renames.append((_dotted(name, "bn."), _dotted(name, "")))
    state = {}
    for key, tensor in wf.model.state_dict().items():
        if key in gates:
            continue
        for patched, original in renames:
            if key.startswith(patched):
                key = original + key[len(patched):]
                break
        state[key] = tensor
    return state


def _layer_table(wf: "WFModel") -> list:
    return [
        {"name": name, "kind": layer.kind, "channels": layer.channels, "bias_gates": layer.alpha_b is not None}
        for name, layer in wf.wf_layers().items()
    ]


def _non_finite(tensors: Dict[str, torch.Tensor]) -> Optional[Tuple[str, int]]:
    """(key, count) of the first tensor holding NaN/inf values as float32 gates, or None."""
    for key, value in tensors.items():
        if value.is_floating_point():
            bad = int((~torch.isfinite(value.float())).sum())
            if bad:
                return key, bad
    return None


def save_gates(wf: "WFModel", path: str, extra_metadata: Optional[dict] = None) -> None:
    """Write ``wf``'s gates (their logits) to the gates file ``path`` (safetensors, atomic rename).

    Metadata: format, class count, the layer table (names, kinds, channels), a fingerprint of the
    base weights, and ``extra_metadata`` (a JSON-serialisable dict) for the caller's own use.

    Raises:
        TypeError: ``extra_metadata`` is not a JSON-serialisable dict.
        ValueError: a gate is NaN or infinite (such a file would not load).
    """
    if extra_metadata is not None and not isinstance(extra_metadata, dict):
        raise TypeError("wfkern.save_gates: extra_metadata must be a dict or None, got "
                        f"{type(extra_metadata).__name__}")
    try:
        extra = json.dumps(extra_metadata or {})
    except (TypeError, ValueError) as err:
        raise TypeError(f"wfkern.save_gates: extra_metadata must be JSON-serialisable, got {err}") from None
    tensors = {k: v.contiguous() for k, v in wf.gates_state_dict().items()}
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"wfkern.save_gates: gates must be finite, got {bad[1]} NaN/inf values in {bad[0]!r}; "
                         f"a logit of +-1e4 opens / closes a gate exactly (sigmoid is 1.0 / 0.0 in float32)")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_classes": str(wf.num_classes),
        "layers": json.dumps(_layer_table(wf)),
        "base_fingerprint": base_fingerprint(wf),
        "extra": extra,
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_gates(path: str, tensors: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors under today's key names, metadata) of a gates file, or a ValueError saying why it is not one.

    ``tensors=False`` reads the metadata only (the tensors dict is empty)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"wfkern.load_gates: path must be an existing gates file, got {path!r}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            gates = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
    except Exception as err:  # safetensors raises several types for truncated / foreign files
        raise ValueError(f"wfkern.load_gates: {path!r} must be a safetensors gates file, got unreadable data ({err})") from err
    if metadata.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(f"wfkern.load_gates: {path!r} must be a wfkern gates file, got format {metadata.get('format')!r}")
    return current_gate_keys(gates), metadata


_LAYER_KEYS = {"name": str, "kind": str, "channels": int, "bias_gates": bool}


def _bad_metadata(path: str, key: str, expectation: str, value) -> ValueError:
    shown = value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."
    return ValueError(f"wfkern.load_gates: {path!r} metadata {key!r} must be {expectation}, got {shown!r}")


def _parse_json(path: str, metadata: Dict[str, str], key: str, expectation: str):
    raw = metadata.get(key)
    if not isinstance(raw, str):
        raise _bad_metadata(path, key, expectation, raw)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, an over-long integer, absurd nesting
        raise _bad_metadata(path, key, expectation, raw) from None


def _check_metadata(path: str, metadata: Dict[str, str]) -> Tuple[int, list, str, dict]:
    """(num_classes, layer table, base fingerprint, extra) of a gates file, each checked for form."""
    if metadata.get("format_version") != FORMAT_VERSION:
        raise _bad_metadata(path, "format_version", f"{FORMAT_VERSION!r} (the version this wfkern reads)",
                            metadata.get("format_version"))
    num_classes = metadata.get("num_classes")
    if not (isinstance(num_classes, str) and num_classes.isascii() and num_classes.isdigit() and int(num_classes) >= 1):
        raise _bad_metadata(path, "num_classes", "a positive integer", num_classes)
    expectation = "a JSON list of {name, kind, channels, bias_gates} layer records"
    layers = _parse_json(path, metadata, "layers", expectation)
    if not isinstance(layers, list) or not all(
            isinstance(r, dict) and set(r) == set(_LAYER_KEYS)
            and all(isinstance(r[k], t) and (t is bool or not isinstance(r[k], bool)) for k, t in _LAYER_KEYS.items())
            for r in layers):
        raise _bad_metadata(path, "layers", expectation, metadata["layers"])
    fingerprint = metadata.get("base_fingerprint")
    if not (isinstance(fingerprint, str) and len(fingerprint) == 64 and set(fingerprint) <= set("0123456789abcdef")):
        raise _bad_metadata(path, "base_fingerprint", "a sha256 hex digest (64 hex digits)", fingerprint)
    extra = {} if "extra" not in metadata else _parse_json(path, metadata, "extra", "a JSON object")
    if not isinstance(extra, dict):
        raise _bad_metadata(path, "extra", "a JSON object", metadata["extra"])
    return int(num_classes), layers, fingerprint, extra


def gates_layer_names(path: str) -> list:
    """The names of the WF layers a gates file was saved from, in order (its metadata checked for form)."""
    path = os.fspath(path)
    _, metadata = read_gates(path, tensors=False)
    return [record["name"] for record in _check_metadata(path, metadata)[1]]


def load_gates(wf: "WFModel", path: str, *, check_fingerprint: bool = True) -> dict:
    """Load the gates saved by :func:`save_gates` into ``wf``; all checks run before any copy.

    Args:
        wf: the patched model to load into.
        path: a gates file (wfkern 0.1's filters files load too).
        check_fingerprint: refuse gates learnt on different base weights (default True).
    Returns:
        The file's ``extra`` metadata (dict).
    Raises:
        FileNotFoundError / ValueError: missing, corrupt, malformed (metadata, NaN/inf gates) or
        mismatched file; ``wf`` is unchanged.
    """
    path = os.fspath(path)
    tensors, metadata = read_gates(path)
    num_classes, theirs, fingerprint, extra = _check_metadata(path, metadata)
    if num_classes != wf.num_classes:
        raise ValueError(f"wfkern.load_gates: gates must be for {wf.num_classes} classes, got {num_classes}")
    ours = _layer_table(wf)
    if theirs != ours:
        diff = [(a, b) for a, b in zip(ours, theirs) if a != b][:2] or f"{len(ours)} vs {len(theirs)} layers"
        raise ValueError(f"wfkern.load_gates: gates must match the model's WF layers, got a different layer table ({diff})")
    expected = {k: tuple(v.shape) for k, v in wf.gates_state_dict().items()}
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(f"wfkern.load_gates: {path!r} must hold exactly the gates of its layer table, got "
                         f"{len(missing)} missing (e.g. {missing[:2]}) and {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:2]})")
    for key, shape in expected.items():
        value = tensors[key]
        if not value.is_floating_point():
            raise ValueError(f"wfkern.load_gates: {path!r} gate {key!r} must be floating point, got {value.dtype}")
        if tuple(value.shape) != shape:
            raise ValueError(f"wfkern.load_gates: {path!r} gate {key!r} must have shape {shape}, "
                             f"got {tuple(value.shape)}")
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"wfkern.load_gates: {path!r} gates must be finite, got {bad[1]} NaN/inf values "
                         f"in {bad[0]!r}")
    if check_fingerprint and fingerprint != base_fingerprint(wf):
        raise ValueError(
            "wfkern.load_gates: gates must be learnt on this model's base weights, got a different fingerprint; "
            "pass check_fingerprint=False to load them anyway"
        )
    wf.load_gates_state_dict(tensors)
    return extra


# wfkern 0.1's names, kept for one release.
save_filters = renamed(save_gates, "wfkern.patch.save_filters", "wfkern.save_gates")
load_filters = renamed(load_gates, "wfkern.load_filters", "wfkern.load_gates")
read_filters = renamed(read_gates, "wfkern.patch.read_filters", "wfkern.patch.read_gates")
filters_layer_names = renamed(gates_layer_names, "wfkern.patch.filters_layer_names", "wfkern.patch.gates_layer_names")
