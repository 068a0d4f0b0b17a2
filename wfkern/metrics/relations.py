"""Filter-class relations (Figures 3 and 4 of the paper): filters in the top-k of at least two classes."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["filter_class_relations", "default_relations_layer"]


def default_relations_layer(wf: nn.Module) -> str:
    """The deepest WF layer (last in module order), the default layer of the relations figure."""
    names = list(wf.wf_layers().keys())
    if not names:
        raise ValueError("wfkern.filter_class_relations: wf must have at least one WF layer, got none")
    return names[-1]


@torch.no_grad()
def filter_class_relations(wf: nn.Module, layer: Optional[str] = None, *, top_k: int = 10, min_classes: int = 2,
                           classes: Optional[Sequence[int]] = None) -> dict:
    """Top-``top_k`` most relevant filters per class of one layer, and the filters shared by several classes.

    Relevance of filter j for class c is ``1 - sigmoid(alpha_w[c, j])``; ties break towards the lower index.

    Args:
        wf: a WF model (``wf.wf_layers()``).
        layer: dotted name of the WF layer; default the deepest one.
        top_k: filters kept per class (10 in the paper).
        min_classes: keep a filter only if it is in the top-k of at least this many classes (2 in the paper).
        classes: the classes considered (default all).
    Returns:
        ``{"layer": str, "top_k", "min_classes", "classes": [c...], "top": {c: [j...]}, "filters": [j...] (shared, ascending),
        "member": [[0/1 per shared filter] per class], "relevance": [[float per shared filter] per class]}``.
    """
    layers = wf.wf_layers()
    layer = default_relations_layer(wf) if layer is None else layer
    if layer not in layers:
        raise ValueError(f"wfkern.filter_class_relations: layer must be one of {sorted(layers)}, got {layer!r}")
    if top_k < 1 or min_classes < 1:
        raise ValueError(f"wfkern.filter_class_relations: top_k and min_classes must be >= 1, "
                         f"got {top_k} and {min_classes}")
    relevance = 1.0 - torch.sigmoid(layers[layer].alpha_w.detach().double().cpu())
    classes = list(range(relevance.shape[0])) if classes is None else [int(c) for c in classes]
    top = {}
    for c in classes:
        order = torch.sort(relevance[c], descending=True, stable=True).indices
        top[c] = order[: min(top_k, order.numel())].tolist()
    counts: dict[int, int] = {}
    for filters in top.values():
        for j in filters:
            counts[j] = counts.get(j, 0) + 1
    shared = sorted(j for j, n in counts.items() if n >= min_classes)
    member = [[int(j in top[c]) for j in shared] for c in classes]
    rel = [[float(relevance[c, j]) for j in shared] for c in classes]
    return {"layer": layer, "top_k": top_k, "min_classes": min_classes, "classes": classes, "top": top,
            "filters": shared, "member": member, "relevance": rel}
