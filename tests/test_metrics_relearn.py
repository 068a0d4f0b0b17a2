"""Relearn time: a toy whose answer is known from the step count, the cap, and a real linear model."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import relearn_time


class StepCounter(nn.Module):
    """Predicts class 1 once it has taken ``threshold`` training forward passes (one per optimiser step)."""

    def __init__(self, threshold: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.threshold = threshold
        self.steps = 0
        self.seen: list[list[int]] = []

    def forward(self, x):
        if self.training:
            self.steps += 1
            self.seen.append(x[:, 0].long().tolist())
        logits = torch.zeros(x.shape[0], 2) + 0 * self.w
        logits[:, 1 if self.steps >= self.threshold else 0] = 1.0
        return logits


def _data(n=2000):
    x = torch.arange(n).float().reshape(n, 1)
    return TensorDataset(x, torch.ones(n, dtype=torch.long))


def test_relearn_known_answer_counts_epochs_of_500_samples():
    # 500 samples / batch 128 -> 4 steps an epoch; correct after 10 steps -> during epoch 3.
    data = _data()
    res = relearn_time(StepCounter(10), data, data, torch.arange(5), 1, 0.95, progress=False)
    assert res == {"rt": 3, "capped": False, "acc_history": [0.0, 0.0, 0.0, 1.0]}
    # 256 samples / batch 128 -> 2 steps an epoch -> epoch 5.
    res = relearn_time(StepCounter(10), data, data, torch.arange(5), 1, 0.95, samples_per_epoch=256,
                       progress=False)
    assert res["rt"] == 5


def test_relearn_draws_fresh_samples_each_epoch():
    model = StepCounter(10**9)
    seen: list[list[int]] = []

    class Spy(StepCounter):
        def forward(self, x):
            if self.training:
                seen.append(x[:, 0].long().tolist())
            return super().forward(x)

    relearn_time(model, _data(), _data(), torch.arange(5), 1, 0.95, max_epochs=2, progress=False)
    assert model.steps == 0  # the caller's model is untouched: a copy is trained
    relearn_time(Spy(10**9), _data(), _data(), torch.arange(5), 1, 0.95, max_epochs=2, progress=False)
    assert [len(b) for b in seen] == [128, 128, 128, 116] * 2
    epochs = [sum(seen[0:4], []), sum(seen[4:8], [])]
    assert all(len(set(e)) == 500 for e in epochs)  # without replacement within an epoch
    assert set(epochs[0]) != set(epochs[1])  # a fresh draw each epoch


def test_relearn_cap_and_already_there():
    data = _data()
    res = relearn_time(StepCounter(10**9), data, data, torch.arange(5), 1, 0.95, max_epochs=6, progress=False)
    assert res["rt"] == 6 and res["capped"] is True and len(res["acc_history"]) == 7
    res = relearn_time(StepCounter(0), data, data, torch.arange(5), 1, 0.95, progress=False)
    assert res == {"rt": 0, "capped": False, "acc_history": [1.0]}


def test_relearn_real_linear_model():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 2, generator=g) + 3, torch.randn(300, 2, generator=g) - 3])
    y = torch.cat([torch.zeros(300), torch.ones(300)]).long()
    data = TensorDataset(x, y)
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.0, -40.0]))  # class 1 "unlearned": never predicted
    forget = torch.arange(300, 600)
    res = relearn_time(model, data, data, forget, 1, 0.95, lr=0.5, progress=False)
    assert res["acc_history"][0] == 0.0 and 1 <= res["rt"] <= 20 and not res["capped"]
    assert res["acc_history"][-1] >= 0.95
    res = relearn_time(model, data, data, forget, 1, 0.95, lr=0.0, max_epochs=4, progress=False)
    assert res["rt"] == 4 and res["capped"]
