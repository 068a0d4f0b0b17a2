"""Which classes an evaluation covers: all, an explicit list, or a seeded random subset."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = ["select_classes"]


def select_classes(num_classes: int, classes: Optional[Union[int, Sequence[int]]] = None, seed: int = 0) -> list[int]:
    """Resolve the ``classes`` option of the evaluation.

    Args:
        num_classes: Nc, the model's class count.
        classes: None (all classes), an int n (a random subset of n classes drawn with ``seed``; the paper's
            "fixed random subset on large datasets"), or an explicit sequence of class indices.
        seed: seed of the random subset.
    Returns:
        Sorted, distinct class indices in ``[0, Nc)``.
    """
    if num_classes < 1:
        raise ValueError(f"wfkern.select_classes: num_classes must be >= 1, got {num_classes}")
    if classes is None:
        return list(range(num_classes))
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= num_classes:
            raise ValueError(f"wfkern.select_classes: classes must be in [1, {num_classes}] when it is a count, "
                             f"got {classes}")
        gen = torch.Generator().manual_seed(int(seed))
        return sorted(torch.randperm(num_classes, generator=gen)[:classes].tolist())
    out = sorted({int(c) for c in classes})
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad or not out:
        raise ValueError(f"wfkern.select_classes: classes must be a non-empty list of indices in [0, {num_classes}), "
                         f"got {list(classes)}")
    return out
