"""What an export starts from: a wfkern checkpoint, its gates, and the record every artifact carries."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import List, Optional

from wfkern.data.torchvision_sets import TV_SPECS
from wfkern.patch import WFModel, base_fingerprint, gates_layer_names, gates_mlp, load_gates, patch, read_gates
from wfkern.train.checkpoint import ModelConfig, load_checkpoint

__all__ = ["EXPORT_FORMAT", "ExportSource", "class_names", "file_sha256", "load_source"]

EXPORT_FORMAT = "wfkern.export/1"


@dataclass
class ExportSource:
    """A patched model with its gates loaded, and what the artifacts record about it.

    Attributes:
        wf: the WF model (eval mode, CPU), patched as the gates were learnt.
        config: the checkpoint's ModelConfig (architecture, sizes, preprocessing).
        base_fingerprint: sha256 of the base weights (``wfkern.patch.base_fingerprint``).
        gates_fingerprint: sha256 of the gates file's bytes (``sha256sum`` gives the same).
        class_names: one name per class, or None when neither the checkpoint nor its dataset names them.
    """

    wf: WFModel
    config: ModelConfig
    base_fingerprint: str
    gates_fingerprint: str
    class_names: Optional[List[str]] = None

    def record(self, artifact: str, forgotten: Optional[List[int]] = None) -> dict:
        """The JSON record an artifact carries: what it is, which model and gates it came from, what it forgets."""
        cfg = self.config
        record = {"format": EXPORT_FORMAT, "artifact": artifact, "arch": cfg.model, "model_kwargs": cfg.model_kwargs,
                  "num_classes": cfg.num_classes, "in_chans": cfg.in_chans, "image_size": cfg.image_size,
                  "preprocess": cfg.preprocess, "dataset": cfg.dataset, "base_fingerprint": self.base_fingerprint,
                  "gates_fingerprint": self.gates_fingerprint, "gate_mlp": gates_mlp(self.wf.wf_layers()),
                  "wfkern_version": _version()}
        if forgotten is not None:
            record["forgotten"] = list(forgotten)
            if self.class_names is not None:
                record["forgotten_names"] = [self.class_names[c] for c in forgotten]
        if self.class_names is not None:
            record["class_names"] = list(self.class_names)
        return record


def _version() -> str:
    try:
        return importlib.metadata.version("wfkern")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def class_names(config: ModelConfig) -> Optional[List[str]]:
    """The names of the model's classes: the checkpoint's own (``extra["class_names"]``), else its dataset's
    (digits, mnist, fashion_mnist, cifar10) when the class counts agree; None when nothing names them."""
    own = config.extra.get("class_names")
    if isinstance(own, list) and len(own) == config.num_classes and all(isinstance(n, str) for n in own):
        return list(own)
    names = None
    if config.dataset in TV_SPECS:
        names = TV_SPECS[config.dataset][6]
    elif config.dataset == "digits":
        names = tuple(str(i) for i in range(10))
    return list(names) if names is not None and len(names) == config.num_classes else None


def load_source(checkpoint: str, gates: str) -> ExportSource:
    """Load ``checkpoint`` (a wfkern model checkpoint), patch it as ``gates`` were learnt and load them.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a file that is not a checkpoint / gates file, an architecture the registry cannot rebuild,
            or gates learnt on another base model (both fingerprints are named).
    """
    for what, path in (("checkpoint", checkpoint), ("gates", gates)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"wfkern.export: {what} must be an existing file, got {path!r}")
    layer_names = gates_layer_names(gates)  # the gates file's form, before the model is built
    _, meta = read_gates(gates, tensors=False)
    model, config = load_checkpoint(checkpoint, device="cpu")
    wf = patch(model, num_classes=config.num_classes, gate_mlp=gates_mlp(layer_names)).eval()
    base = base_fingerprint(wf)
    theirs = meta.get("base_fingerprint", "")
    if theirs != base:
        raise ValueError(f"wfkern.export: gates must be learnt on the checkpoint's base model (fingerprint "
                         f"{base[:12]}...), got gates of another base model ({str(theirs)[:12]}...) in {gates!r}")
    load_gates(wf, gates)
    return ExportSource(wf, config, base, file_sha256(gates), class_names(config))
