"""Membership inference attack (MIA) on per-sample confidence and entropy features.

Not in the paper; what users of unlearning toolkits expect. An attacker (gradient-boosted trees, monotone in
both features) is trained to tell members (retain-class training samples) from non-members (test samples); it is
then applied to the forget-class training samples. A model that has truly forgotten them should make them look
like non-members. The reading only means something when the attacker beats chance on its own held-out
members/non-members (``attack_acc`` > 0.5). The trees are monotone (more confidence, less modified entropy =>
never less of a member) so that samples far from the data get the verdict of its nearest region rather than a
logistic regression's arbitrary extrapolation; docs/evaluation.md says why, with the measurements.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["mia_features", "mia_attack"]


def mia_features(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample attack features: true-class confidence and modified entropy (Song & Mittal, 2021).

    The modified entropy ``Mentr = -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)`` is the entropy feature that
    knows the label: low for a confident correct prediction (member-like), high for a confident wrong one (the
    plain entropy would call a confidently *mis*-classified forget sample a member). Computed in float64 from
    log-probabilities, so it stays finite for any finite logits.

    Args:
        logits: (N, Nc) float logits.
        labels: (N,) int64 true classes.
    Returns:
        (N, 2) float64: ``[p_y, Mentr]`` with ``p = softmax(logits)``.
    """
    logp = torch.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    y = labels.reshape(-1, 1).long()
    logp_y = logp.gather(1, y).reshape(-1)
    p_y = logp_y.exp()
    log_1mp = torch.log(-torch.expm1(logp)).clamp_min(-745.0)  # ln(1 - p_i), finite where p_i == 1
    others = (p * log_1mp).scatter(1, y, 0.0).sum(dim=1)
    mentr = -(1.0 - p_y) * logp_y - others
    return torch.stack([p_y, mentr], dim=1)


def _balanced(a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return a[rng.permutation(len(a))[:n]]


def mia_attack(member: Tensor, nonmember: Tensor, target: Tensor, *, seed: int = 0,
               holdout: float = 0.3) -> dict[str, float]:
    """Train the attacker on members vs non-members and apply it to ``target``.

    The two groups are subsampled to the same size (so chance is 0.5), standardised, and split into a
    training part and a ``holdout`` part that measures the attacker itself.

    Args:
        member: (Nm, F) features of samples the model was trained on (label 1).
        nonmember: (Nn, F) features of samples it never saw (label 0).
        target: (Nt, F) features of the forget-class training samples.
        seed: subsampling and split seed.
        holdout: fraction of the balanced set kept out of the attacker's training.
    Returns:
        ``mia``: fraction of ``target`` predicted member; ``mia_prob``: their mean membership probability;
        ``attack_acc``: the attacker's accuracy on the balanced held-out part (0.5 = chance).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    if member.shape[0] < 2 or nonmember.shape[0] < 2:
        raise ValueError(f"wfkern.mia_attack: member and nonmember must hold at least 2 samples each, "
                         f"got {member.shape[0]} and {nonmember.shape[0]}")
    rng = np.random.default_rng(seed)
    n = min(member.shape[0], nonmember.shape[0])
    xm = _balanced(member.double().cpu().numpy(), n, rng)
    xn = _balanced(nonmember.double().cpu().numpy(), n, rng)
    n_test = max(1, int(round(n * holdout))) if n > 2 else 0
    x_train = np.concatenate([xm[n_test:], xn[n_test:]])
    y_train = np.concatenate([np.ones(n - n_test), np.zeros(n - n_test)])
    # monotone: more confidence / less modified entropy never makes a sample *less* of a member; binned
    # features do not extrapolate, so far-away samples get the verdict of the nearest region of the data
    mono = [1, -1] + [0] * (x_train.shape[1] - 2) if x_train.shape[1] >= 2 else [1]
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                         min_samples_leaf=20, monotonic_cst=mono, random_state=seed)
    clf.fit(x_train, y_train)
    attack_acc = float("nan")
    if n_test > 0:
        x_test = np.concatenate([xm[:n_test], xn[:n_test]])
        y_test = np.concatenate([np.ones(n_test), np.zeros(n_test)])
        attack_acc = float((clf.predict(x_test) == y_test).mean())
    if target.shape[0] == 0:
        return {"mia": float("nan"), "mia_prob": float("nan"), "attack_acc": attack_acc}
    prob = clf.predict_proba(target.double().cpu().numpy())[:, 1]
    return {"mia": float((prob > 0.5).mean()), "mia_prob": float(prob.mean()), "attack_acc": attack_acc}
