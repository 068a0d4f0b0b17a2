"""The untraining objective (docs/method.md §2, Eq. 3): label expansion, forget/retain losses, alpha regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["expand_labels", "pick_forget_labels", "alpha_regularizer", "untraining_loss", "LossParts",
           "per_sample_losses"]


def expand_labels(y: Tensor, num_classes: int, chi: int, generator: torch.Generator) -> Tensor:
    """Draw ``chi`` forget rows per retain sample, uniformly among the classes it does not belong to.

    Args:
        y: (B,) int64 labels, or (B, Nc) multi-hot targets (rows drawn among the sample's negatives).
        num_classes: Nc (>= 2).
        chi: copies per sample (χ).
        generator: CPU generator (the draws are reproducible and device-independent).
    Returns:
        (chi, B) int64 rows; ``rows[k, b] != y[b]`` (multi-label: ``y[b, rows[k, b]] == 0``).
    Raises:
        ValueError: fewer than 2 classes, chi < 1, or a multi-label sample with no negative class.
    """
    if num_classes < 2 or chi < 1:
        raise ValueError(f"wfkern.expand_labels: num_classes must be >= 2 and chi >= 1, got {num_classes}, {chi}")
    y = y.cpu()
    if y.dim() == 1:
        offset = torch.randint(1, num_classes, (chi, y.shape[0]), generator=generator)
        return (y.long().unsqueeze(0) + offset) % num_classes
    negatives = (y <= 0).float()
    if bool((negatives.sum(1) == 0).any()):
        raise ValueError("wfkern.expand_labels: every multi-label sample must miss at least one class, got a sample "
                         "with all classes positive")
    rows = torch.multinomial(negatives, chi, replacement=True, generator=generator)  # (B, chi)
    return rows.t().contiguous()


def pick_forget_labels(y: Tensor, generator: torch.Generator) -> Tensor:
    """The class each forget-half sample forgets: its label, or a random positive label (multi-label).

    Args:
        y: (B,) int64 labels or (B, Nc) multi-hot.
        generator: CPU generator.
    Returns:
        (B,) int64; -1 for a multi-label sample without positives (it then adds no forget loss).
    """
    y = y.cpu()
    if y.dim() == 1:
        return y.long()
    pos = (y > 0).float()
    has = pos.sum(1) > 0
    pos[~has] = 1.0  # placeholder row so multinomial is defined; masked to -1 below
    picks = torch.multinomial(pos, 1, generator=generator).squeeze(1)
    return torch.where(has, picks, torch.full_like(picks, -1))


def alpha_regularizer(alphas: Sequence[Tensor]) -> Tensor:
    """R(alpha) = mean of (1 - sigmoid(alpha)) over every element of every gate matrix.

    Args:
        alphas: the gate logit matrices (each (Nc, C)).
    Returns:
        Scalar tensor in [0, 1]: 0 when every gate is open.
    """
    total = sum((1 - torch.sigmoid(a)).sum() for a in alphas)
    count = sum(a.numel() for a in alphas)
    return total / max(count, 1)


def per_sample_losses(logits: Tensor, y: Tensor, forget: Tensor | None = None) -> Tensor:
    """Per-sample classification loss: cross-entropy, or for multi-label targets either BCE over all
    classes (``forget`` None) or ``-log sigmoid(z[forget])`` (the forgotten class's positive term).

    Args:
        logits: (N, Nc).  y: (N,) int64 or (N, Nc) multi-hot.
        forget: (N,) int64 forget rows for the multi-label forget loss, else None.
    Returns:
        (N,) float losses.
    """
    if y.dim() == 1:
        return F.cross_entropy(logits.float(), y, reduction="none")
    if forget is None:
        return F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none").mean(1)
    z = logits.float().gather(1, forget.clamp(min=0).unsqueeze(1)).squeeze(1)
    return F.softplus(-z)


@dataclass
class LossParts:
    """The terms of Eq. 3 (each a scalar tensor) and their weighted sum ``total``."""

    total: Tensor
    retain: Tensor      # mean(L_r)
    recip: Tensor       # mean(1 / (L_f + eps))
    forget: Tensor      # mean(L_f), for logs
    reg: Tensor         # R(alpha)


def untraining_loss(loss_f: Tensor, loss_r: Tensor, alphas: Sequence[Tensor], lambda0: float, lambda1: float,
                    lambda2: float, eps: float = 1e-6) -> LossParts:
    """Eq. 3, averaged: ``λ0·mean(L_r) + λ1·mean(1/(L_f + ε)) + λ2·R(alpha)``.

    Args:
        loss_f: (B/2,) per-sample forget losses (CE of the sample's own class under its own mask).
        loss_r: (χ, B/2) per-sample retain losses (CE under another class's mask).
        alphas: every gate logit matrix (for R).
        lambda0, lambda1, lambda2: term weights.  eps: guard of the reciprocal.
    Returns:
        LossParts with the total and each term.
    """
    recip = (1.0 / (loss_f + eps)).mean() if loss_f.numel() else loss_f.new_zeros(())
    retain = loss_r.mean() if loss_r.numel() else loss_r.new_zeros(())
    reg = alpha_regularizer(alphas)
    total = lambda0 * retain + lambda1 * recip + lambda2 * reg
    forget = loss_f.mean() if loss_f.numel() else loss_f.new_zeros(())
    return LossParts(total, retain, recip, forget, reg)
