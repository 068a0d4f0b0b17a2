"""What ``unlearn`` checks before any gate changes: the arguments, the labels, one batch through the model."""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from wfkern.data import dataset_targets, iter_batches

__all__ = ["check_inputs", "check_targets", "check_data"]


def check_inputs(wf, train_data: Dataset, val_data: Dataset, out_dir: str | None, resume: bool) -> None:
    if not hasattr(wf, "gate_parameters") or not hasattr(wf, "wf_layers"):
        raise TypeError(f"wfkern.unlearn: wf must be a wfkern.WFModel (from wfkern.patch), got {type(wf).__name__}")
    if not wf.gate_parameters():
        raise ValueError("wfkern.unlearn: wf must have at least one WF layer, got none (nothing was patched)")
    if wf.num_classes < 2:
        raise ValueError(f"wfkern.unlearn: wf.num_classes must be >= 2, got {wf.num_classes}")
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if len(data) < 2:
            raise ValueError(f"wfkern.unlearn: {name} must hold at least 2 samples, got {len(data)}")
    if resume and out_dir is None:
        raise ValueError("wfkern.unlearn: out_dir must be set to resume, got None")
    if out_dir is not None and not os.path.isdir(out_dir):
        raise FileNotFoundError(f"wfkern.unlearn: out_dir must be an existing directory, got {out_dir!r}")


def check_targets(name: str, targets: torch.Tensor, num_classes: int) -> None:
    """Labels the objective can use: (N,) class indices in [0, Nc), or (N, Nc) multi-hot in [0, 1]."""
    where = f"wfkern.unlearn: {name} labels"
    shape_rule = f"must be class indices (N,) or multi-hot targets (N, {num_classes})"
    if targets.is_complex() or targets.dim() not in (1, 2) or (targets.dim() == 2 and targets.shape[1] != num_classes):
        raise ValueError(f"{where} {shape_rule}, got {targets.dtype} of shape {tuple(targets.shape)}")
    if targets.dim() == 1:
        if targets.is_floating_point():
            fraction = ((targets != targets.round()) | targets.isinf()).nonzero().flatten()  # NaN included
            if fraction.numel():
                i = int(fraction[0])
                raise ValueError(f"{where} must be integer class indices, got {targets[i].item()} (sample {i})")
        labels = targets.long()
        bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"{where} must be in [0, {num_classes}) (the model's classes), got {int(labels[i])} "
                             f"(sample {i}; {bad.numel()} such samples)")
        return
    for start in range(0, targets.shape[0], 65536):  # bounded temporaries for large (N, Nc) targets
        rows = targets[start:start + 65536]
        outside = (rows < 0) | (rows > 1)
        if rows.is_floating_point():
            outside |= rows.isnan()
        bad = outside.nonzero()
        if bad.numel():
            i, j = (int(v) for v in bad[0])
            raise ValueError(f"{where} must be multi-hot targets in [0, 1], got {rows[i, j].item()} "
                             f"(sample {start + i}, class {j})")
        full = (rows > 0).all(1).nonzero().flatten()
        if full.numel():
            raise ValueError(f"{where} must leave at least one class negative in every sample (each is retained "
                             f"under another class's mask), got sample {start + int(full[0])} with all {num_classes} "
                             "classes positive")


def check_data(wf, train_data: Dataset, val_data: Dataset) -> torch.Tensor:
    """Labels in range and one small batch of each split through the model, before any gate changes.

    Returns the training targets (read once: some datasets decode every sample to list them).

    The probe runs without grad in eval mode on the model's current device; every module's train /
    eval flag is restored afterwards, and the gates are never written.
    """
    train_targets = dataset_targets(train_data)
    check_targets("train_data", train_targets, wf.num_classes)
    check_targets("val_data", dataset_targets(val_data), wf.num_classes)
    device = wf.gate_parameters()[0].device
    first = next(iter(wf.wf_layers().values())).base
    modes = {m: m.training for m in wf.modules()}
    try:
        wf.eval()
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            idx = torch.arange(min(2, len(data)))
            x, _ = next(iter_batches(data, [idx]))
            try:
                with torch.no_grad():
                    out = wf(x.to(device), forget=torch.zeros(idx.numel(), dtype=torch.long))
            except torch.cuda.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                hint = ""
                if isinstance(first, torch.nn.Conv2d) and x.dim() == 4 and x.shape[1] != first.in_channels:
                    hint = f" (its first conv takes {first.in_channels}-channel images)"
                raise ValueError(f"wfkern.unlearn: {name} must yield images the model can run{hint}, got a batch of "
                                 f"shape {tuple(x.shape)} that fails in the model: {why}") from e
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (idx.numel(), wf.num_classes):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"wfkern.unlearn: wf must return ({idx.numel()}, {wf.num_classes}) logits for a batch "
                                 f"of {idx.numel()} {name} images, got {got}")
    finally:
        for m, mode in modes.items():
            m.training = mode
    return train_targets
