"""What a results file records about how it was made: versions, seeds, settings, and a hash of each data split."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from typing import Mapping, Optional

import torch
from torch.utils.data import Dataset, TensorDataset

from wfkern.data import dataset_targets
from wfkern.metrics.store import atomic_write_json

__all__ = ["versions", "dataset_fingerprint", "run_manifest", "MANIFEST_FILE", "write_run_manifest",
           "read_run_manifest"]

# The manifest of a run folder (``wfkern unlearn --out-dir``).
MANIFEST_FILE = "manifest.json"

_PACKAGES = ("wfkern", "torch", "numpy", "scikit-learn")
_HASH_BATCH = 4096


def versions() -> dict[str, str]:
    """Installed versions of wfkern, torch, numpy, scikit-learn and Python ("not installed" where absent)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["torch"] = torch.__version__  # with the build's tag (e.g. +cu130), which the package metadata leaves out
    out["python"] = platform.python_version()
    return out


def dataset_fingerprint(dataset: Dataset) -> dict:
    """``{"n", "sha256", "covers"}`` of a split: a SHA-256 (first 16 hex digits) over its labels and, where they
    can be read cheaply, its inputs.

    ``covers`` says what was hashed: "inputs+labels" for in-memory datasets (``get_batch``: every input tensor,
    in index order; a ``TensorDataset``: its tensors), "paths+labels" for folder datasets (a ``samples`` list of
    (path, label)), else "labels"
    (reading every image of a large folder only to hash it would cost a full pass).
    """
    digest = hashlib.sha256()
    labels = dataset_targets(dataset)
    digest.update(str(tuple(labels.shape)).encode())
    digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    covers = "labels"
    if callable(getattr(dataset, "get_batch", None)):
        for idx in torch.arange(len(dataset)).split(_HASH_BATCH):
            x, _ = dataset.get_batch(idx)
            digest.update(x.detach().cpu().contiguous().numpy().tobytes())
        covers = "inputs+labels"
    elif isinstance(dataset, TensorDataset):
        for t in dataset.tensors[:-1]:
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        covers = "inputs+labels"
    elif isinstance(getattr(dataset, "samples", None), list):
        for path, _ in dataset.samples:
            digest.update(str(path).encode() + b"\0")
        covers = "paths+labels"
    return {"n": len(dataset), "sha256": digest.hexdigest()[:16], "covers": covers}


def run_manifest(settings: Mapping, seeds: Mapping[str, Optional[int]], data: Mapping[str, Optional[Dataset]]) -> dict:
    """``{"versions", "seeds", "settings", "data": {split: dataset_fingerprint}}`` for a results file.

    Args:
        settings: the run's settings (JSON-able).
        seeds: every seed the run used, by name.
        data: the splits the run read, by name (None entries are left out).
    """
    return {"versions": versions(), "seeds": dict(seeds), "settings": dict(settings),
            "data": {name: dataset_fingerprint(ds) for name, ds in data.items() if ds is not None}}


def write_run_manifest(folder: str | os.PathLike, manifest: Mapping) -> str:
    """Write ``manifest`` (``run_manifest``) atomically to ``folder/manifest.json``; returns the path."""
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    atomic_write_json(path, dict(manifest))
    return path


def read_run_manifest(folder: str | os.PathLike) -> Optional[dict]:
    """The manifest of a run folder (``folder/manifest.json``), or None when the run wrote none (older runs).

    Raises:
        ValueError: the file is not a JSON object (the path named).
    """
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except (ValueError, RecursionError, OSError) as e:
        raise ValueError(f"wfkern.read_run_manifest: {path} must be a JSON manifest, got unreadable data "
                         f"({type(e).__name__})") from None
    if not isinstance(man, dict):
        raise ValueError(f"wfkern.read_run_manifest: {path} must hold a JSON object, got a JSON {type(man).__name__}")
    return man
