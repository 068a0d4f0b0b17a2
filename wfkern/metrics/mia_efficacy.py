"""MIA-efficacy: the membership-inference metric of the unlearning literature (Jia et al. 2023, "Model sparsity can
simplify machine unlearning"; SalUn, Fan et al. 2024).

An SVC attacker (scikit-learn ``SVC(C=3, gamma="auto", kernel="rbf")``, the reference code's) is fitted on one
per-sample feature of the model's softmax output: members = retain-class training samples, non-members = test
samples, as many of each. It is applied to the forget-class training samples; MIA-efficacy is the fraction it
calls *non-members* (higher = more forgotten; retraining from scratch scores near 100 % for a class it never saw).
One attacker per feature: ``confidence`` p_y (the number the papers report), ``entropy`` H(p) and ``m_entropy``, the
modified entropy of Song & Mittal 2021.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .mia import mia_features

__all__ = ["EFFICACY_FEATURES", "efficacy_features", "mia_efficacy", "prob_entropy"]

EFFICACY_FEATURES = ("confidence", "entropy", "m_entropy")


def prob_entropy(logits: Tensor) -> Tensor:
    """Shannon entropy ``H(p) = -sum_i p_i ln p_i`` of ``p = softmax(logits)`` per row (0 ln 0 = 0), float64."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).nan_to_num(nan=0.0).sum(dim=1)


def efficacy_features(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """``{"confidence": p_y, "entropy": H(p), "m_entropy": Mentr(p, y)}``, each (N,) float64.

    ``Mentr = -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)`` (``mia.mia_features``).
    """
    conf_mentr = mia_features(logits, labels)
    return {"confidence": conf_mentr[:, 0], "entropy": prob_entropy(logits), "m_entropy": conf_mentr[:, 1]}


def _svc_nonmember_rate(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray) -> float:
    from sklearn.svm import SVC

    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(1.0 - clf.predict(target.reshape(-1, 1)).mean())


def mia_efficacy(member: dict[str, Tensor], nonmember: dict[str, Tensor], target: dict[str, Tensor], *,
                 seed: int = 0) -> dict[str, float]:
    """Fit one SVC per feature on members vs non-members and return the fraction of ``target`` called non-member.

    The larger group is subsampled (seeded) to the size of the smaller, as the reference code takes as many
    retain samples as there are test samples.

    Args:
        member / nonmember / target: ``efficacy_features`` of the members (retain-class training samples), the
            non-members (test samples) and the forget-class training samples.
        seed: subsampling seed.
    Returns:
        ``mia_eff`` (confidence), ``mia_eff_entropy``, ``mia_eff_m_entropy``: fractions in [0, 1]; NaN when
        ``target`` is empty.
    """
    nm, nn_ = len(member["confidence"]), len(nonmember["confidence"])
    if min(nm, nn_) < 1:
        raise ValueError(f"wfkern.mia_efficacy: member and nonmember must hold at least 1 sample each, got {nm} and "
                         f"{nn_}")
    rng = np.random.default_rng(seed)
    n = min(nm, nn_)
    pick_m, pick_n = rng.permutation(nm)[:n], rng.permutation(nn_)[:n]
    out = {}
    for name in EFFICACY_FEATURES:
        key = "mia_eff" if name == "confidence" else f"mia_eff_{name}"
        t = target[name].double().cpu().numpy()
        if len(t) == 0:
            out[key] = float("nan")
            continue
        out[key] = _svc_nonmember_rate(member[name].double().cpu().numpy()[pick_m],
                                       nonmember[name].double().cpu().numpy()[pick_n], t)
    return out
