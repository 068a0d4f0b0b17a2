"""Host label checks that also run inside a ``torch.compile`` graph."""
from __future__ import annotations

import torch
from torch import Tensor

from wfkern.ops.reference import check_label_values

__all__ = ["checked_labels"]


@torch.library.custom_op("wfkern::checked_labels", mutates_args=())
def checked_labels(labels: Tensor, num_classes: int, name: str) -> Tensor:
    """A copy of CPU ``labels`` after :func:`check_label_values` (a ValueError naming the first bad label).

    An opaque op, so a compiled graph (where a Python check would be traced away and inductor's
    own assert aborts the process) runs the same check, with the same message, before any kernel.
    The copy gives the op a user, so it is never removed as dead code.
    """
    check_label_values(labels, num_classes, name=name)
    return labels.clone()


@checked_labels.register_fake
def _checked_labels_fake(labels: Tensor, num_classes: int, name: str) -> Tensor:
    return torch.empty_like(labels)
