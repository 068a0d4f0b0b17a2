"""The untraining objective: Eq. 3 hand-computed, label expansion, multi-label rows, the regulariser."""

from __future__ import annotations

import math

import pytest
import torch

from wfkern.unlearn import alpha_regularizer, expand_labels, gate_regularizer, pick_forget_labels, untraining_loss
from wfkern.unlearn.objective import per_sample_losses


def test_eq3_hand_computed_on_a_tiny_example():
    # Two classes. Forget half: one sample of class 0 with logits (0, ln 3) -> p0 = 1/4, L_f = ln 4.
    # Retain half: one sample of class 1, chi = 2 copies with logits (0, 0) and (ln 3, 0):
    # L_r = ln 2 and ln 4 (p1 = 1/2, then 1/4).
    logits_f = torch.tensor([[0.0, math.log(3)]])
    logits_r = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    loss_f = per_sample_losses(logits_f, torch.tensor([0]))
    loss_r = per_sample_losses(logits_r, torch.tensor([1, 1])).view(2, 1)
    assert loss_f.item() == pytest.approx(math.log(4), abs=1e-6)
    assert loss_r.flatten().tolist() == pytest.approx([math.log(2), math.log(4)], abs=1e-6)
    # Gates: one (2, 2) matrix of logits 0 (sigmoid 1/2) and one (2, 1) matrix of ln 3 (sigmoid 3/4):
    # R = (4 * 1/2 + 2 * 1/4) / 6 = 2.5 / 6.
    alphas = [torch.zeros(2, 2), torch.full((2, 1), math.log(3))]
    parts = untraining_loss(loss_f, loss_r, alphas, lambda0=1.0, lambda1=10.0, lambda2=2.0, eps=1e-6)
    retain = (math.log(2) + math.log(4)) / 2
    recip = 1 / (math.log(4) + 1e-6)
    reg = 2.5 / 6
    assert parts.retain.item() == pytest.approx(retain, rel=1e-6)
    assert parts.forget_term.item() == pytest.approx(recip, rel=1e-6)
    assert parts.reg.item() == pytest.approx(reg, rel=1e-6)
    assert parts.total.item() == pytest.approx(retain + 10 * recip + 2 * reg, rel=1e-6)


def test_reciprocal_is_guarded_at_zero_forget_loss():
    parts = untraining_loss(torch.zeros(3), torch.zeros(1, 3), [torch.zeros(1, 1)], 1.0, 10.0, 1.0, eps=1e-6)
    assert math.isfinite(parts.total.item()) and parts.forget_term.item() == pytest.approx(1e6)


def test_gradient_flows_only_through_alphas_into_eq3():
    a = torch.zeros(2, 3, requires_grad=True)
    parts = untraining_loss(torch.tensor([1.0]), torch.tensor([[1.0]]), [a], 0.0, 0.0, 1.0)
    parts.total.backward()
    # d/da mean(1 - sigmoid(a)) = -sigmoid'(0) / 6 = -0.25 / 6
    assert torch.allclose(a.grad, torch.full((2, 3), -0.25 / 6))


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_expand_labels_never_returns_the_own_label(num_classes):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, num_classes, (64,), generator=g)
    rows = expand_labels(y, num_classes, chi=3, generator=g)
    assert rows.shape == (3, 64) and rows.dtype == torch.int64
    assert not (rows == y.unsqueeze(0)).any()
    assert rows.min() >= 0 and rows.max() < num_classes


def test_expand_labels_is_uniform_over_the_other_classes():
    g = torch.Generator().manual_seed(1)
    y = torch.zeros(30000, dtype=torch.long)
    rows = expand_labels(y, 4, chi=1, generator=g)
    freq = torch.bincount(rows.flatten(), minlength=4).float() / rows.numel()
    assert freq[0] == 0
    assert torch.allclose(freq[1:], torch.full((3,), 1 / 3), atol=0.01)


def test_expand_labels_two_classes_is_deterministic():
    rows = expand_labels(torch.tensor([0, 1, 1]), 2, chi=2, generator=torch.Generator().manual_seed(0))
    assert rows.tolist() == [[1, 0, 0], [1, 0, 0]]


def test_multi_label_rows_come_from_negatives_and_forget_rows_from_positives():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)
    rows = expand_labels(y, 4, chi=5, generator=g)
    assert rows.shape == (5, 3)
    assert all(y[b, rows[k, b]] == 0 for k in range(5) for b in range(3))
    picks = pick_forget_labels(y, g)
    assert y[0, picks[0]] == 1 and y[1, picks[1]] == 1 and picks[2] == -1
    with pytest.raises(ValueError, match="at least one class"):
        expand_labels(torch.ones(1, 3), 3, chi=1, generator=g)


def test_multi_label_losses():
    logits = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([[0.0, 1.0]])
    assert per_sample_losses(logits, y, torch.tensor([1])).item() == pytest.approx(math.log(1 + math.exp(-2)))
    bce = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert per_sample_losses(logits, y).item() == pytest.approx(bce, rel=1e-6)


def test_expand_labels_rejects_single_class_and_bad_chi():
    g = torch.Generator()
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        expand_labels(torch.zeros(2, dtype=torch.long), 1, 1, g)
    with pytest.raises(ValueError, match="chi >= 1"):
        expand_labels(torch.zeros(2, dtype=torch.long), 3, 0, g)


def test_regularizer_is_zero_for_open_and_one_for_closed_gates():
    assert gate_regularizer([torch.full((2, 2), 1e4)]).item() == pytest.approx(0.0)
    assert gate_regularizer([torch.full((2, 2), -1e4), torch.full((3, 1), -1e4)]).item() == pytest.approx(1.0)
    with pytest.warns(DeprecationWarning, match="alpha_regularizer is deprecated .* use wfkern.unlearn.gate_regularizer"):
        assert alpha_regularizer([torch.full((2, 2), -1e4)]).item() == pytest.approx(1.0)
