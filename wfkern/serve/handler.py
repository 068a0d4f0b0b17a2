"""The request handler every engine runs (LitServe's worker, Ray Serve's replica): decode one request, stack the
requests of a batching window into ONE forward of the patched model with one forget set per image, split the
answers again. Knows nothing of HTTP, keys or queues.

Three modes: ``wf`` (the patched model; a (B, K) forget tensor padded with -1), ``plain`` (the original model, no
forgetting: the benchmark's baseline) and ``baked`` (one ``wfkern.bake`` model per forget class, built on first use
and routed per request: the benchmark's alternative to per-sample forgetting).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from wfkern.serve.inputs import BadInput, InputSpec, Limits, class_names_for, decode_image, input_spec

__all__ = ["MODES", "ServedModel", "load_served", "Decoded", "decode_payload", "predict_batch", "file_sha256"]

MODES = ("wf", "plain", "baked")


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ServedModel:
    """A loaded model ready to serve.

    Attributes:
        model: the WFModel (modes wf and baked) or the original model (plain), eval mode.
        mode: one of ``MODES``.
        spec: input preprocessing.  class_names: one per class.  num_classes: Nc.
        model_fingerprint: sha256 of the base weights (``wfkern.patch.base_fingerprint``).
        gates_fingerprint: sha256 of the gates file's bytes (None without gates).
        device: where the forward runs.
    """

    model: nn.Module
    mode: str
    spec: InputSpec
    class_names: list[str]
    num_classes: int
    model_fingerprint: str
    gates_fingerprint: str | None
    device: torch.device
    _baked: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def baked(self, cls: int) -> nn.Module:
        """The plain model with class ``cls`` folded in (-1: the original), built once."""
        from wfkern.patch import bake

        with self._lock:
            if cls not in self._baked:
                self._baked[cls] = bake(self.model, cls).eval().requires_grad_(False)
            return self._baked[cls]


def load_served(checkpoint: str, gates: str | None = None, *, mode: str = "wf", device: str = "cpu",
                class_names: list[str] | None = None) -> ServedModel:
    """Load a checkpoint and its gates as ``wfkern evaluate`` does (patched as the gates were learnt).

    Args:
        checkpoint: a wfkern model checkpoint (``wfkern.save_model`` / ``wfkern train``).
        gates: a gates file (``wf.save_gates``); required for modes wf and baked.
        mode: "wf", "plain" or "baked".
        device: where to run.  class_names: one name per class (default: the dataset's).
    Raises:
        FileNotFoundError, ValueError: a missing or foreign file, gates of other weights, a bad mode.
    """
    from wfkern.patch import base_fingerprint, gates_layer_names, gates_mlp, load_gates, patch
    from wfkern.train import load_checkpoint

    if mode not in MODES:
        raise ValueError(f"wfkern.serve: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"wfkern.serve: checkpoint must be an existing file, got {checkpoint!r}")
    if mode != "plain" and gates is None:
        raise ValueError(f"wfkern.serve: gates must be given for mode {mode!r}, got none; pass --gates, or "
                         "serve the original model with mode 'plain'")
    if gates is not None and not os.path.isfile(gates):
        raise FileNotFoundError(f"wfkern.serve: gates must be an existing file, got {gates!r}")
    dev = torch.device(device)
    model, config = load_checkpoint(checkpoint, device=dev)
    gate_mlp = gates_mlp(gates_layer_names(gates)) if gates is not None else False
    wf = patch(model, num_classes=config.num_classes, gate_mlp=gate_mlp)
    if gates is not None:
        load_gates(wf, gates)
    fingerprint = base_fingerprint(wf)
    served = wf.eval()
    if mode == "plain":  # the original module itself, unpatched (the benchmark's baseline)
        served = load_checkpoint(checkpoint, device=dev)[0].eval().requires_grad_(False)
    return ServedModel(served, mode, input_spec(config), class_names_for(config, class_names), config.num_classes,
                       fingerprint, file_sha256(gates) if gates is not None else None, dev)


@dataclass
class Decoded:
    """One decoded request: its images and forget set, or the error that answers it."""

    images: torch.Tensor | None
    forget: list[int]
    top_k: int
    error: BadInput | None = None


def decode_payload(payload: dict, served: ServedModel, limits: Limits) -> Decoded:
    """A request payload ``{"images": [...], "forget": [ids], "top_k": k}`` (forget already resolved to ids by the
    front) as tensors; a bad image gives a Decoded carrying the error (a batch is never failed by one request)."""
    forget = list(payload.get("forget") or [])
    top_k = int(payload.get("top_k") or min(5, served.num_classes))
    try:
        if served.mode == "plain" and forget:
            raise BadInput("forget must be empty: this server runs the original model (mode 'plain'), got "
                           f"{forget}", 422)
        if served.mode == "baked" and len(forget) > 1:
            raise BadInput(f"forget must name at most one class in mode 'baked' (one baked model per class), got "
                           f"{forget}", 422)
        images = [decode_image(item, i, served.spec, limits) for i, item in enumerate(payload["images"])]
        return Decoded(torch.stack(images), forget, top_k)
    except BadInput as e:
        return Decoded(None, forget, top_k, e)


_batch_ids = itertools.count()


def _forward(served: ServedModel, x: torch.Tensor, sets: list[list[int]]) -> torch.Tensor:
    """Logits of the stacked images; ``sets[b]`` is image b's forget set."""
    if served.mode == "plain":
        return served.model(x)
    if served.mode == "wf":
        width = max(1, max(len(forget_set) for forget_set in sets))
        rows = torch.full((len(sets), width), -1, dtype=torch.long)
        for image, forget_set in enumerate(sets):
            rows[image, :len(forget_set)] = torch.tensor(forget_set, dtype=torch.long)
        return served.model(x, forget=rows.to(served.device))
    out = torch.empty(x.shape[0], served.num_classes, device=x.device)
    keys = [forget_set[0] if forget_set else -1 for forget_set in sets]
    for key in sorted(set(keys)):  # one forward per baked model, over the images routed to it
        idx = torch.tensor([image for image, image_key in enumerate(keys) if image_key == key], device=x.device)
        out[idx] = served.baked(key)(x[idx]).float()
    return out


@torch.inference_mode()
def predict_batch(items: list[Decoded], served: ServedModel) -> list[dict]:
    """Answer a batching window's requests with ONE forward (mode wf / plain) over all their images.

    Returns:
        One answer per item: ``{"predictions": [{"top_k": [{"class", "name", "probability"}]}], "batch": {...}}``,
        or ``{"error": {"status", "message"}}`` for an item that failed to decode.
    """
    good = [it for it in items if it.error is None]
    batch = {"id": f"{os.getpid()}-{next(_batch_ids)}", "requests": len(good), "images": 0}
    answers: dict[int, list] = {}
    if good:
        x = torch.cat([it.images for it in good]).to(served.device)
        sets = [it.forget for it in good for _ in range(it.images.shape[0])]
        probs = torch.softmax(_forward(served, x, sets).float(), dim=1).cpu()
        batch["images"] = int(x.shape[0])
        start = 0
        for it in good:
            n = it.images.shape[0]
            top_k = max(1, min(it.top_k, served.num_classes))
            values, classes = probs[start:start + n].topk(top_k, dim=1)
            answers[id(it)] = [{"top_k": [{"class": int(c), "name": served.class_names[int(c)], "probability": float(p)}
                                          for p, c in zip(vs, cs)]} for vs, cs in zip(values, classes)]
            start += n
    out = []
    for it in items:
        if it.error is not None:
            out.append({"error": {"status": it.error.status, "message": str(it.error)}})
        else:
            out.append({"predictions": answers[id(it)], "batch": batch})
    return out
