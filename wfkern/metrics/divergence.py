"""Jensen-Shannon divergence (natural log) and the Zero Retrain Forgetting (ZRF) score."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["js_divergence", "zrf_score"]


def _check_probs(name: str, p: Tensor) -> None:
    if p.dim() != 2:
        raise ValueError(f"wfkern.js_divergence: {name} must be a (N, Nc) probability tensor, got shape {tuple(p.shape)}")


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Textbook Jensen-Shannon divergence with natural logarithms, per sample.

    ``JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m)`` with ``m = (p + q) / 2`` and ``0 log 0 = 0``; it lies in
    ``[0, ln 2]``. Computed in float64.

    Args:
        p: (N, Nc) probabilities (rows sum to 1).
        q: (N, Nc) probabilities, same shape as ``p``.
    Returns:
        (N,) float64 divergences.
    """
    _check_probs("p", p)
    _check_probs("q", q)
    if p.shape != q.shape:
        raise ValueError(f"wfkern.js_divergence: q must have the shape of p {tuple(p.shape)}, got {tuple(q.shape)}")
    p = p.double()
    q = q.to(p.device).double()
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return 0.5 * kl_pm + 0.5 * kl_qm


def zrf_score(p: Tensor, q: Tensor) -> float:
    """ZRF = 1 - mean_i JS(p_i, q_i) (docs/method.md §3); multiply by 100 to report it as the paper does.

    Args:
        p: (N, Nc) softmax of the unlearned model on the forget-class samples.
        q: (N, Nc) softmax of the randomly initialised model on the same samples.
    Returns:
        The score in ``[1 - ln 2, 1]``; NaN when N == 0.
    """
    if p.shape[0] == 0:
        return float("nan")
    return float(1.0 - js_divergence(p, q).mean())
