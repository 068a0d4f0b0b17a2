"""The default untraining objective: distillation on the retain rows and the margin forget loss, hand-computed."""

from __future__ import annotations

import math

import pytest
import torch

from wfkern.unlearn.objective import distill_losses, margin_losses


def test_distill_is_the_kl_to_the_original_at_temperature_one():
    # Teacher (0, 0): q = (1/2, 1/2). Masked logits (0, ln 3): p = (1/4, 3/4).
    # KL(q || p) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3).
    loss = distill_losses(torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2), temperature=1.0)
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_distill_at_temperature_two_is_scaled_by_t_squared():
    # At T = 2 the masked logits become (0, ln 3 / 2): p1 = √3 / (1 + √3); the loss is 4 · KL.
    p0, p1 = 1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))
    expected = 4 * (0.5 * math.log(0.5 / p0) + 0.5 * math.log(0.5 / p1))
    loss = distill_losses(torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2), temperature=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_distill_is_zero_on_a_match_and_never_moves_the_teacher():
    teacher = torch.randn(5, 7, requires_grad=True)
    logits = teacher.detach().clone().requires_grad_(True)
    loss = distill_losses(logits, teacher, temperature=2.0)
    assert torch.allclose(loss, torch.zeros(5), atol=1e-6)
    (distill_losses(logits + 1.0 * torch.eye(5, 7), teacher, 2.0)).sum().backward()
    assert teacher.grad is None and logits.grad is not None


def test_distill_multilabel_is_a_bernoulli_kl_per_class():
    # One class, teacher logit 0 (q = 1/2), masked logit ln 3 (p = 3/4), T = 1:
    # KL = 1/2 ln(1/2 / 3/4) + 1/2 ln(1/2 / 1/4) = 1/2 ln(4/3); averaged over the classes (here two, the other a match).
    loss = distill_losses(torch.tensor([[math.log(3), 1.0]]), torch.tensor([[0.0, 1.0]]), 1.0, multilabel=True)
    assert loss.item() == pytest.approx(0.5 * 0.5 * math.log(4 / 3), rel=1e-5)


def test_margin_loss_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.5]] * 3)
    got = margin_losses(logits, torch.tensor([0, 2, 1]), margin=3.0)
    # row 0: 2 - 1 + 3 = 4; row 2: 0.5 - 2 + 3 = 1.5; row 1: 1 - 2 + 3 = 2
    assert got.tolist() == pytest.approx([4.0, 1.5, 2.0])
    assert margin_losses(logits[:1], torch.tensor([1]), margin=0.0).item() == 0.0  # already forgotten


def test_margin_loss_multilabel_wants_the_class_absent():
    logits = torch.tensor([[-4.0, 1.0], [-4.0, 1.0]])
    assert margin_losses(logits, torch.tensor([0, 1]), margin=3.0, multilabel=True).tolist() == [0.0, 4.0]


def test_margin_gradient_stops_once_the_class_is_forgotten_by_the_margin():
    logits = torch.tensor([[0.0, 5.0], [1.0, 0.0]], requires_grad=True)
    margin_losses(logits, torch.tensor([0, 0]), margin=3.0).sum().backward()
    # Sample 0 loses by 5 > 3: no gradient. Sample 1 wins by 1: pushed down on its class, up on the runner-up.
    assert logits.grad.tolist() == [[0.0, 0.0], [1.0, -1.0]]
