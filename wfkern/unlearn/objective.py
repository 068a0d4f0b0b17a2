"""The untraining objective: label expansion, the paper's Eq. 3 (docs/method.md §2), the default distillation +
margin losses (docs/untraining.md), the alpha regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wfkern._utils import renamed

__all__ = ["expand_labels", "pick_forget_labels", "gate_regularizer", "alpha_regularizer", "untraining_loss", "combine_losses",
           "LossParts", "per_sample_losses", "distill_losses", "margin_losses", "forget_terms", "retain_terms",
           "original_logits", "RETAIN_LOSSES", "FORGET_LOSSES"]


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


def gate_regularizer(gate_logits: Sequence[Tensor]) -> Tensor:
    """R = mean of (1 - sigmoid(logit)) over every element of every gate matrix (the paper's R(α)).

    Args:
        gate_logits: the gate logit matrices (each (Nc, C)).
    Returns:
        Scalar tensor in [0, 1]: 0 when every gate is open.
    """
    total = sum((1 - torch.sigmoid(logits)).sum() for logits in gate_logits)
    count = sum(logits.numel() for logits in gate_logits)
    return total / max(count, 1)


alpha_regularizer = renamed(gate_regularizer, "wfkern.unlearn.alpha_regularizer", "wfkern.unlearn.gate_regularizer")


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
    """The terms of the untraining loss (each a scalar tensor) and their weighted sum ``total``."""

    total: Tensor
    retain: Tensor       # mean retain loss (distillation or L_r)
    forget_term: Tensor  # mean forget loss as optimised: the margin loss, or 1/(L_f + ε)
    forget: Tensor       # mean(L_f), the forget rows' own cross-entropy, for logs
    reg: Tensor          # R(alpha)


def _mean(t: Tensor) -> Tensor:
    return t.mean() if t.numel() else t.new_zeros(())


def combine_losses(forget_term: Tensor, loss_f: Tensor, loss_r: Tensor, gate_logits: Sequence[Tensor], lambda0: float,
                   lambda1: float, lambda2: float) -> LossParts:
    """``λ0·mean(retain) + λ1·mean(forget_term) + λ2·R``; ``loss_f`` (L_f) is only reported."""
    retain, term, reg = _mean(loss_r), _mean(forget_term), gate_regularizer(gate_logits)
    return LossParts(lambda0 * retain + lambda1 * term + lambda2 * reg, retain, term, _mean(loss_f), reg)


def untraining_loss(loss_f: Tensor, loss_r: Tensor, alphas: Sequence[Tensor], lambda0: float, lambda1: float,
                    lambda2: float, eps: float = 1e-6) -> LossParts:
    """The paper's Eq. 3, averaged: ``λ0·mean(L_r) + λ1·mean(1/(L_f + ε)) + λ2·R(alpha)``.

    Args:
        loss_f: (B/2,) per-sample forget losses (CE of the sample's own class under its own mask).
        loss_r: (χ, B/2) per-sample retain losses (CE under another class's mask).
        alphas: every gate logit matrix (for R).
        lambda0, lambda1, lambda2: term weights.  eps: guard of the reciprocal.
    Returns:
        LossParts with the total and each term (``forget_term`` is mean(1/(L_f + ε))).
    """
    return combine_losses(1.0 / (loss_f + eps), loss_f, loss_r, alphas, lambda0, lambda1, lambda2)

# The two objectives each half can use (docs/untraining.md: "The objective"). The paper's are "ce" (retain:
# cross-entropy on the labels) and "reciprocal" (forget: 1/(L_f + ε)); the default pair is "distill" + "margin".
RETAIN_LOSSES = ("distill", "ce")
FORGET_LOSSES = ("margin", "reciprocal")


def distill_losses(logits: Tensor, teacher: Tensor, temperature: float, multilabel: bool = False) -> Tensor:
    """Per-sample ``T²·KL(teacher ‖ masked)`` at temperature T: 0 where the masked model matches the original.

    Single-label: the KL of the softmax over classes. Multi-label: a Bernoulli KL per class (its sigmoid),
    averaged over classes. The T² factor keeps the gradient scale independent of T (Hinton et al., 2015).

    Args:
        logits: (N, Nc) masked-model logits.  teacher: (N, Nc) the original model's logits (no gradient).
        temperature: T > 0.  multilabel: use the multi-label form.
    Returns:
        (N,) float losses, >= 0.
    """
    z, t = logits.float() / temperature, teacher.float().detach() / temperature
    if multilabel:
        q = torch.sigmoid(t)
        kl = (F.binary_cross_entropy_with_logits(z, q, reduction="none")
              - F.binary_cross_entropy_with_logits(t, q, reduction="none")).mean(1)
    else:
        kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(z, 1))).sum(1)
    return temperature * temperature * kl


def margin_losses(logits: Tensor, rows: Tensor, margin: float, multilabel: bool = False) -> Tensor:
    """Per-sample forget loss that stops once the class is forgotten by ``margin`` logits.

    Single-label: ``relu(z_c − max_{j≠c} z_j + margin)`` (class c must lose to the best other class by the
    margin). Multi-label: ``relu(z_c + margin)`` (class c must be predicted absent by the margin). Unlike the
    reciprocal 1/(L_f + ε) it is bounded: its gradient does not explode while L_f is small, and it vanishes once
    the sample is forgotten, so the gates close only as far as forgetting needs.

    Args:
        logits: (N, Nc).  rows: (N,) int64 the class each sample forgets.  margin: >= 0.
        multilabel: use the multi-label form.
    Returns:
        (N,) float losses, >= 0.
    """
    z = logits.float()
    zc = z.gather(1, rows.unsqueeze(1)).squeeze(1)
    if multilabel:
        return F.relu(zc + margin)
    others = z.scatter(1, rows.unsqueeze(1), float("-inf")).amax(1)
    return F.relu(zc - others + margin)


def forget_terms(logits: Tensor, y: Tensor, rows: Tensor, kind: str, margin: float,
                 eps: float) -> tuple[Tensor, Tensor]:
    """The forget rows' loss as optimised and their L_f (cross-entropy of the forgotten class), per sample.

    Args:
        logits: (N, Nc) under each sample's own forget row.  y: (N,) labels or (N, Nc) multi-hot.
        rows: (N,) the class each sample forgets.  kind: "margin" or "reciprocal" (``FORGET_LOSSES``).
        margin: of the margin loss.  eps: guard of the reciprocal.
    Returns:
        (term, loss_f), each (N,).
    """
    multilabel = y.dim() > 1
    loss_f = per_sample_losses(logits, y, rows if multilabel else None)
    if kind == "reciprocal":
        return 1.0 / (loss_f + eps), loss_f
    return margin_losses(logits, rows, margin, multilabel), loss_f


def retain_terms(logits: Tensor, y: Tensor, teacher: Tensor | None, kind: str, temperature: float) -> Tensor:
    """The retain rows' loss per sample: distillation to the original model's ``teacher`` logits, or "ce".

    Args:
        logits: (N, Nc) under other classes' forget rows.  y: (N,) labels or (N, Nc) multi-hot.
        teacher: (N, Nc) the original model's logits for the same images (``kind == "distill"``), else None.
        kind: "distill" or "ce" (``RETAIN_LOSSES``).  temperature: of the distillation.
    Returns:
        (N,) losses.
    """
    if kind == "ce":
        return per_sample_losses(logits, y)
    return distill_losses(logits, teacher, temperature, multilabel=y.dim() > 1)


@torch.no_grad()
def original_logits(wf, x: Tensor, kind: str, copies: int = 1) -> Tensor | None:
    """The original model's logits for ``x`` (``wf`` with no class forgotten), stacked ``copies`` times like the
    retain rows; None unless ``kind`` is "distill" (only distillation needs them)."""
    if kind != "distill":
        return None
    return wf(x).repeat(copies, 1)
