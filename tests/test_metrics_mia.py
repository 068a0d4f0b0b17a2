"""Membership inference: hand-computed features, separable groups (~1) and identical groups (~0.5)."""

import math

import pytest
import torch

from wfkern.metrics import mia_attack, mia_features


def test_mia_features_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = [.5, .5] and [.75, .25]
    f = mia_features(logits, torch.tensor([0, 1]))
    # Mentr = -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)
    assert f[0].tolist() == pytest.approx([0.5, 0.5 * math.log(2) + 0.5 * math.log(2)])
    assert f[1].tolist() == pytest.approx([0.25, -0.75 * math.log(0.25) - 0.75 * math.log(0.25)])
    # a confidently wrong prediction: tiny p_y, large Mentr, finite even for a logit gap of 1000
    f = mia_features(torch.tensor([[0.0, 1000.0]]), torch.tensor([0]))
    assert f[0, 0] == 0.0 and 900 < f[0, 1] < float("inf")


def _features(n, scale, shift, gen):
    logits = torch.randn(n, 10, generator=gen) * scale
    labels = torch.randint(0, 10, (n,), generator=gen)
    logits[torch.arange(n), labels] += shift
    return mia_features(logits, labels)


def test_mia_separable_members_are_found():
    g = torch.Generator().manual_seed(0)
    member = _features(1000, 0.5, 12.0, g)  # confident, near-zero entropy
    nonmember = _features(1000, 0.5, 0.0, g)  # near-uniform
    res = mia_attack(member, nonmember, _features(500, 0.5, 12.0, g), seed=0)
    assert res["mia"] >= 0.99 and res["mia_prob"] >= 0.95 and res["attack_acc"] >= 0.99
    res = mia_attack(member, nonmember, _features(500, 0.5, 0.0, g), seed=0)
    assert res["mia"] <= 0.01


def test_mia_identical_groups_is_chance():
    g = torch.Generator().manual_seed(1)
    member, nonmember, target = (_features(n, 1.0, 2.0, g) for n in (3000, 3000, 2000))
    res = mia_attack(member, nonmember, target, seed=0)
    # at chance the membership probability sits at 0.5 and the attacker's held-out accuracy too; the hard
    # fraction thresholds probabilities within ~0.01 of 0.5, a coin flip per run (0.16-0.90 over 5 seeds), which
    # is why reports print the attacker's accuracy beside it
    assert res["mia_prob"] == pytest.approx(0.5, abs=0.02)
    assert res["attack_acc"] == pytest.approx(0.5, abs=0.06)


def test_mia_needs_two_samples_per_group():
    with pytest.raises(ValueError, match="wfkern.mia_attack: member and nonmember must hold at least 2"):
        mia_attack(torch.zeros(1, 2), torch.zeros(5, 2), torch.zeros(3, 2))
