"""Which classes an evaluation covers: all, exactly the classes named, or a seeded random subset.

Two separate options, never one overloaded number: ``classes`` names classes (``3`` is class 3, ``[3, 5]``
classes 3 and 5); ``sample`` is a *count* of classes drawn at random (with ``seed``) from ``classes`` (default
all). ``classes=3`` never means "three random classes".
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch

__all__ = ["select_classes", "format_classes"]


def _index(c, num_classes: int) -> int:
    if isinstance(c, bool) or not isinstance(c, numbers.Integral):
        raise ValueError(f"wfkern.select_classes: classes must be class indices in [0, {num_classes}), got {c!r}")
    return int(c)


def select_classes(num_classes: int, classes: Optional[Union[int, Sequence[int]]] = None, seed: int = 0, *,
                   sample: Optional[int] = None) -> list[int]:
    """Resolve the classes an evaluation (or a baseline) covers.

    Args:
        num_classes: Nc, the model's class count.
        classes: None (all classes), one class index (``3`` = class 3), or a sequence of class indices.
        seed: seed of the random subset drawn with ``sample``.
        sample: None, or a count n: a random subset of n classes drawn with ``seed`` from ``classes`` (the
            paper's "fixed random subset on large datasets"). With all Nc classes as the pool, the subset is
            the one earlier versions drew for ``classes=n``.
    Returns:
        Sorted, distinct class indices in ``[0, Nc)``.
    Raises:
        ValueError: ``wfkern.select_classes: classes must be ... in [0, Nc), got ...`` or a bad ``sample``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"wfkern.select_classes: num_classes must be >= 1, got {num_classes}")
    if classes is None:
        pool = list(range(num_classes))
    elif isinstance(classes, range) and classes and not (0 <= min(classes[0], classes[-1])
                                                             and max(classes[0], classes[-1]) < num_classes):
        # a range is checked by its ends, before it is expanded (range(10**12) is no list to build)
        raise ValueError(f"wfkern.select_classes: classes must be a non-empty list of indices in "
                         f"[0, {num_classes}) or one index, got {classes!r}")
    else:
        given = [classes] if isinstance(classes, numbers.Integral) or isinstance(classes, bool) else list(classes)
        pool = sorted({_index(c, num_classes) for c in given})
        bad = [c for c in pool if not 0 <= c < num_classes]
        if bad or not pool:
            shown = given[0] if len(given) == 1 else given
            raise ValueError(f"wfkern.select_classes: classes must be a non-empty list of indices in "
                             f"[0, {num_classes}) or one index, got {shown!r}")
    if sample is None:
        return pool
    if isinstance(sample, bool) or not isinstance(sample, numbers.Integral) or not 1 <= sample <= len(pool):
        where = "the model's classes" if classes is None else "the classes given"
        raise ValueError(f"wfkern.select_classes: sample must be a count in [1, {len(pool)}] ({where}), got {sample!r}")
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(pool[i] for i in torch.randperm(len(pool), generator=gen)[:int(sample)].tolist())


def format_classes(classes: Sequence[int], names: Optional[Sequence[str]] = None, limit: int = 40) -> str:
    """A short, readable list of classes: runs of 3+ consecutive indices as ranges (``"0-3, 5, 7"``).

    Args:
        classes: class indices (any order; duplicates ignored).
        names: when given (and every listed class has a name that is not just its index), ``"3 (cat)"``
            style entries are used for lists of at most 10 classes.
        limit: at most this many entries are shown; the rest is summarised as ``"… (N in all)"``.
    """
    cs = sorted({int(c) for c in classes})
    if names is not None and len(cs) <= 10 and all(c < len(names) for c in cs) \
            and any(str(names[c]) != str(c) for c in cs):
        return ", ".join(f"{c} ({names[c]})" for c in cs)
    parts: list[str] = []
    i = 0
    while i < len(cs):
        j = i
        while j + 1 < len(cs) and cs[j + 1] == cs[j] + 1:
            j += 1
        parts += [f"{cs[i]}-{cs[j]}"] if j - i >= 2 else [str(c) for c in cs[i:j + 1]]
        i = j + 1
    if len(parts) > limit:
        return ", ".join(parts[:limit]) + f", … ({len(cs)} in all)"
    return ", ".join(parts)
