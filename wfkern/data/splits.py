"""Deterministic, seeded, class-stratified splits."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stratified_split", "SPLITS"]

SPLITS = ("train", "val", "test")


def stratified_split(targets: Tensor, fractions: tuple[float, ...], seed: int) -> list[Tensor]:
    """Split sample indices into parts with the given fractions, per class, reproducibly.

    Each class is shuffled with ``torch.Generator().manual_seed(seed)`` and cut by the fractions,
    so every part holds about the same share of every class. Multi-label targets (N, Nc) are
    split without stratification.

    Args:
        targets: (N,) int64 labels or (N, Nc) multi-hot.
        fractions: one fraction per part; must be positive and sum to at most 1 (the last part
            takes the rest when they sum to 1).
        seed: the split's seed; the same seed gives the same indices on every machine.
    Returns:
        One sorted (n_i,) int64 index tensor per part.
    """
    if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"wfkern.stratified_split: fractions must be positive and sum to <= 1, got {fractions}")
    generator = torch.Generator().manual_seed(int(seed))
    groups = [torch.arange(targets.shape[0])] if targets.dim() > 1 else \
        [torch.nonzero(targets == c).flatten() for c in torch.unique(targets)]
    parts: list[list[Tensor]] = [[] for _ in fractions]
    for idx in groups:
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        start = 0
        for i, f in enumerate(fractions):
            last = i == len(fractions) - 1 and abs(sum(fractions) - 1) < 1e-9
            stop = idx.numel() if last else start + int(round(f * idx.numel()))
            parts[i].append(idx[start:stop])
            start = stop
    return [torch.sort(torch.cat(p)).values for p in parts]
