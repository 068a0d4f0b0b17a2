"""Model checkpoints: safetensors weights + JSON metadata in the header; atomic writes, no pickle."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from wfkern._atomic import atomic_write
from wfkern.data.preprocess import preprocess_problem
from wfkern.models import create_model
from wfkern.models.weights import non_finite_weights

__all__ = ["ModelConfig", "save_checkpoint", "load_checkpoint", "read_checkpoint_config", "load_model",
           "CHECKPOINT_FORMAT"]

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
        preprocess: the input preprocessing the model expects beyond size and channels (mean, std,
            crop_pct, interpolation; ``wfkern.data.Preprocess``); empty = the dataset's own. Commands that
            rebuild the data from the checkpoint apply it.
    """

    model: str
    num_classes: int
    in_chans: int
    image_size: int
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = ""
    split_seed: int = 0
    extra: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture: ``create_model`` with these sizes and options."""
        return create_model(self.model, self.num_classes, self.in_chans, self.image_size, **self.model_kwargs)


# The metadata keys a checkpoint may carry, with their JSON types (checked on save and on load).
_FIELDS = {"model": str, "num_classes": int, "in_chans": int, "image_size": int, "model_kwargs": dict,
           "dataset": str, "split_seed": int, "extra": dict, "preprocess": dict}
_REQUIRED = ("model", "num_classes", "in_chans", "image_size")
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "a JSON object"}
_MAX_SEED = 2**63 - 1


class _Said(str):
    """A description standing in for a value in an error message (printed without quotes)."""

    def __repr__(self) -> str:
        return str(self)


class _BadKey(ValueError):
    def __init__(self, key: str, expectation: str, got):
        self.key, self.expectation, self.got = key, expectation, got
        super().__init__(f"{key} must {expectation}, got {got!r}")


def _check_config(meta) -> ModelConfig:
    """The ModelConfig that JSON metadata describes; _BadKey naming the first bad key otherwise.

    Nothing here builds a model or opens a file: names, sizes and ``model_kwargs`` go through the
    model registry's declarations (``check_model_args``), so metadata cannot name a path for a builder.
    """
    from wfkern.models.registry import ModelArgError, check_model_args

    if not isinstance(meta, dict):
        raise _BadKey("metadata", "be a JSON object", _Said(f"a JSON {type(meta).__name__}"))
    for key in meta:
        if key not in _FIELDS:
            raise _BadKey(str(key), f"be a known key ({', '.join(_FIELDS)})", _Said("an unknown key"))
    for key in _REQUIRED:
        if key not in meta:
            raise _BadKey(key, "be present", _Said("nothing"))
    for key, value in meta.items():
        typ = _FIELDS[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise _BadKey(key, f"be {_TYPE_NAMES[typ]}", value)
    if not -_MAX_SEED <= meta.get("split_seed", 0) <= _MAX_SEED:
        raise _BadKey("split_seed", "be an integer of at most 63 bits", meta["split_seed"])
    if len(meta.get("dataset", "")) > 200:
        raise _BadKey("dataset", "be a dataset name of at most 200 characters", meta["dataset"][:40] + "...")
    epochs = meta.get("extra", {}).get("epochs")
    if epochs is not None and not (isinstance(epochs, int) and not isinstance(epochs, bool) and 1 <= epochs <= 100_000):
        raise _BadKey("extra.epochs", "be an integer >= 1 and <= 100000", epochs)
    problem = preprocess_problem(meta.get("preprocess", {}), meta["in_chans"])
    if problem is not None:
        raise _BadKey(f"preprocess.{problem[0]}" if problem[0] != "preprocess" else "preprocess", problem[1],
                      problem[2])
    try:
        check_model_args(meta["model"], meta["num_classes"], meta["in_chans"], meta["image_size"],
                         meta.get("model_kwargs", {}))
    except ModelArgError as e:
        key = {"name": "model"}.get(e.key, e.key)
        raise _BadKey(f"model_kwargs.{key}" if e.is_option else key, e.expectation,
                      _Said("an undeclared option") if e.unknown else e.got) from None
    return ModelConfig(**meta)


def save_checkpoint(path: str, model: nn.Module, config: ModelConfig) -> None:
    """Write ``model``'s state dict and ``config`` to a safetensors file atomically.

    Args:
        path: destination; its directory must exist.
        model: the trained network.
        config: how to rebuild it (stored as JSON under the "wfkern" metadata key); checked like a
            loaded checkpoint's, so a file that would not load is never written.
    Raises:
        ValueError: a config that ``load_checkpoint`` would refuse (the key is named).
        FileNotFoundError: the directory of ``path`` does not exist.
    """
    from safetensors.torch import save_file

    try:
        text = json.dumps(asdict(config), sort_keys=True)
        _check_config(json.loads(text))
    except (TypeError, ValueError) as e:  # _BadKey, or a value JSON cannot hold
        raise ValueError(f"wfkern.save_checkpoint: config.{e}" if isinstance(e, _BadKey)
                         else f"wfkern.save_checkpoint: config must be JSON-serialisable, got {e}") from e
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": CHECKPOINT_FORMAT, "wfkern": text}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def _read_header(path: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """(string metadata, {tensor name: shape}) from a safetensors header; reads no tensor data."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"wfkern.load_checkpoint: path must be an existing file, got {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ValueError(f"wfkern.load_checkpoint: path must be a safetensors file, got {path!r} ({e})") from e
    return meta, shapes


def _config_from_meta(path: str, meta: dict) -> ModelConfig:
    if meta.get("format") != CHECKPOINT_FORMAT or "wfkern" not in meta:
        raise ValueError(f"wfkern.load_checkpoint: path must be a wfkern model checkpoint ({CHECKPOINT_FORMAT}), "
                         f"got format {meta.get('format')!r} in {path!r}")
    try:
        raw = json.loads(meta["wfkern"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"wfkern.load_checkpoint: metadata of {path!r} must be JSON, got {meta['wfkern'][:80]!r}") from e
    try:
        return _check_config(raw)
    except _BadKey as e:
        where = f"metadata of {path!r}" if e.key == "metadata" else f"metadata key {e.key!r} of {path!r}"
        raise ValueError(f"wfkern.load_checkpoint: {where} must {e.expectation}, got {_short(e.got)}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_checkpoint_config(path: str) -> ModelConfig:
    """Read only the metadata of a checkpoint written by ``save_checkpoint`` (checked key by key).

    Raises:
        FileNotFoundError: no such file.  ValueError: not a wfkern model checkpoint, or metadata
            outside what the model registry declares (the message names the file and the key).
    """
    meta, _ = _read_header(path)
    return _config_from_meta(path, meta)


def _build(config: ModelConfig, path: str) -> nn.Module:
    try:
        return config.build()
    except ValueError as e:
        raise ValueError(f"wfkern.load_checkpoint: metadata of {path!r} must describe a model that builds, "
                         f"got: {str(e).strip().splitlines()[0]}") from e


def _shape_mismatch(config: ModelConfig, path: str, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The first difference between the file's tensors and the model's, found on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in _build(config, path).state_dict().items()}
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on "meta": the real load checks
        return None
    for key, shape in expected.items():
        if key not in shapes:
            return f"missing key {key!r} in the file"
        if shapes[key] != shape:
            return f"size mismatch for {key}: file {list(shapes[key])}, model {list(shape)}"
    extra = sorted(set(shapes) - set(expected))
    return f"unexpected key {extra[0]!r} in the file" if extra else None


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model from the registry and load its weights (strict; never unpickles).

    The metadata is checked key by key first, and the model is built on the meta device and compared
    with the file's tensor shapes before any memory is allocated for it.

    Args:
        path: a file written by ``save_checkpoint``.
        device: where to put the weights.
    Returns:
        (the model in eval mode, its ModelConfig).
    Raises:
        FileNotFoundError, ValueError: missing file, foreign file, bad metadata (file and key named), weights
            that do not fit the model, or NaN / inf weights (the key named).
    """
    from safetensors.torch import load_file

    meta, shapes = _read_header(path)
    config = _config_from_meta(path, meta)
    mismatch = _shape_mismatch(config, path, shapes)
    if mismatch is not None:
        raise ValueError(f"wfkern.load_checkpoint: weights must match model {config.model!r}, got a mismatch: "
                         f"{mismatch} ({path!r})")
    model = _build(config, path)
    state = load_file(path, device=str(device))
    problem = non_finite_weights(state)
    if problem is not None:
        raise ValueError(f"wfkern.load_checkpoint: weights must be finite (no NaN or inf), got {problem} in "
                         f"{path!r}; the file is damaged or was saved from a run that diverged")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"wfkern.load_checkpoint: weights must match model {config.model!r}, got a mismatch: {first}") from e
    return model.to(device).eval(), config


def load_model(path: str, device: str | torch.device = "cpu") -> nn.Module:
    """The model of a wfkern checkpoint (``save_model``, ``wfkern train`` or ``wfkern import``), in eval mode.

    Never unpickles; the metadata is checked key by key (``load_checkpoint``). The rest of the description
    (dataset, sizes, preprocessing) is ``read_checkpoint_config(path)``.
    """
    return load_checkpoint(path, device=device)[0]
