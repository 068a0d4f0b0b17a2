"""Insertion and deletion scores over the alpha masks (Table 2 of the paper, docs/method.md §3).

Relevance of a mask element for class ``c`` is ``1 - sigmoid(alpha[c])``: the most closed gate is the most
relevant. Each mask tensor (``alpha_w`` and, where the layer has one, ``alpha_b``) is ranked on its own, so the
top-k% is taken within every layer. Gates are opened with ``alpha = +inf`` (sigmoid exactly 1) and closed with
``alpha = -inf`` (exactly 0); every row is restored afterwards, also on error.

Insertion starts from the model unlearned on ``c`` and re-opens the top-k% most relevant gates; deletion starts
from the un-masked model (every gate of row ``c`` open) and closes the top-k% most relevant. At each k the score
is the mean softmax probability of class ``c`` on class-``c`` images, divided by the original model's (forget
nothing). The AUC is the trapezoid over k in [0, 1]. ``n_k = floor(k * C + 0.5)`` elements of a C-element mask.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

__all__ = ["alpha_masks", "relevance_order", "insertion_deletion"]


def alpha_masks(wf: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every alpha tensor of a WF model as ``(name, (Nc, C) Parameter)``, weight masks and bias masks."""
    out = []
    for name, layer in wf.wf_layers().items():
        out.append((f"{name}.alpha_w", layer.alpha_w))
        if getattr(layer, "alpha_b", None) is not None:
            out.append((f"{name}.alpha_b", layer.alpha_b))
    return out


def relevance_order(row: Tensor, order: str = "relevance", generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices of a (C,) alpha row from most to least relevant (``"relevance"``, stable) or shuffled (``"random"``)."""
    if order == "relevance":
        relevance = 1.0 - torch.sigmoid(row.detach().double().cpu())
        return torch.sort(relevance, descending=True, stable=True).indices
    if order == "random":
        return torch.randperm(row.numel(), generator=generator)
    raise ValueError(f"wfkern.insertion_deletion: order must be 'relevance' or 'random', got {order!r}")


@contextmanager
def _restored(masks: list[tuple[str, nn.Parameter]], c: int) -> Iterator[list[Tensor]]:
    saved = [alpha.data[c].clone() for _, alpha in masks]
    try:
        yield saved
    finally:
        for (_, alpha), row in zip(masks, saved):
            alpha.data[c].copy_(row)


@torch.no_grad()
def _confidence(wf: nn.Module, x: Tensor, c: int, batch_size: int, forget: Optional[int]) -> float:
    probs = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        logits = wf(xb) if forget is None else wf(xb, forget=forget)
        probs.append(torch.softmax(logits.double(), dim=1)[:, c].cpu())
    return float(torch.cat(probs).mean())


@torch.no_grad()
def insertion_deletion(wf: nn.Module, x: Tensor, c: int, *, steps: int = 20, order: str = "relevance",
                       seed: int = 0, batch_size: int = 256, original_conf: Optional[float] = None) -> dict:
    """Insertion and deletion curves and AUCs of class ``c`` (docs/method.md §3).

    Args:
        wf: a WF model (``wf(x, forget=c)``, ``wf.wf_layers()`` with ``alpha_w``/``alpha_b`` of shape (Nc, C)).
        x: (Nf, ...) class-``c`` test images, already on the model's device.
        c: the class.
        steps: the curve has ``steps + 1`` points, k = 0, 1/steps, ..., 1.
        order: ``"relevance"`` (the metric) or ``"random"`` (a shuffled ranking, the control).
        seed: seed of the shuffled ranking.
        batch_size: inference batch size.
        original_conf: the original model's mean class-``c`` probability on ``x``; computed when None.
    Returns:
        ``{"k": [...], "insertion_curve": [...], "deletion_curve": [...], "insertion_auc": float,
        "deletion_auc": float, "original_conf": float}``; curves are normalised confidences.
    """
    if steps < 1:
        raise ValueError(f"wfkern.insertion_deletion: steps must be >= 1, got {steps}")
    was_training = wf.training
    wf.eval()
    try:
        if original_conf is None:
            original_conf = _confidence(wf, x, c, batch_size, None)
        masks = alpha_masks(wf)
        gen = torch.Generator().manual_seed(int(seed))
        ks = [i / steps for i in range(steps + 1)]
        curves = {"insertion": [], "deletion": []}
        with _restored(masks, c) as saved:
            orders = [relevance_order(row, order, gen) for row in saved]
            for mode in ("insertion", "deletion"):
                for k in ks:
                    for (_, alpha), row, idx in zip(masks, saved, orders):
                        n = int(math.floor(k * row.numel() + 0.5))
                        new = row.clone() if mode == "insertion" else torch.full_like(row, math.inf)
                        new[idx[:n].to(row.device)] = math.inf if mode == "insertion" else -math.inf
                        alpha.data[c].copy_(new)
                    conf = _confidence(wf, x, c, batch_size, c)
                    curves[mode].append(conf / original_conf if original_conf > 0 else float("nan"))
    finally:
        wf.train(was_training)
    kt = torch.tensor(ks, dtype=torch.float64)
    return {
        "k": ks,
        "insertion_curve": curves["insertion"],
        "deletion_curve": curves["deletion"],
        "insertion_auc": float(torch.trapezoid(torch.tensor(curves["insertion"], dtype=torch.float64), kt)),
        "deletion_auc": float(torch.trapezoid(torch.tensor(curves["deletion"], dtype=torch.float64), kt)),
        "original_conf": float(original_conf),
    }
