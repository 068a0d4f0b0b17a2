"""Retain-set fine-tuning recovery (docs/evaluation.md, "Depth of forgetting"): the training data holds no class-c
sample, the recovered accuracy is measured on class c, head-only touches only the head, and evaluate wires it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from wfkern.metrics import PerClassModels, evaluate, retain_finetune, retain_recovery


class Recording(Dataset):
    """A map-style dataset that records every index read (``targets`` are labels, not reads)."""

    def __init__(self, base: TensorDataset):
        self.base, self.targets, self.read = base, base.tensors[1], []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.base[i]


def _blobs(n_per_class: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat(n_per_class)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return TensorDataset(centers[y] + 0.6 * torch.randn(y.numel(), 2, generator=g), y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net, train = Net(), _blobs(50, 0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = train.tensors
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    unlearned = copy.deepcopy(net).eval()
    with torch.no_grad():  # class 2 suppressed at the output by a bias the retain gradients can move
        unlearned.fc.bias[2] -= 40.0
    return net.eval(), unlearned, train, _blobs(30, 1)


def _acc_on(model, data, c):
    x, y = data.tensors
    with torch.no_grad():
        return float((model(x[y == c]).argmax(1) == c).double().mean())


def test_retain_finetuning_never_reads_a_class_c_sample_and_measures_class_c(setup):
    _, unlearned, train, test = setup
    data = Recording(train)
    labels = train.tensors[1]
    res = retain_recovery(unlearned, data, labels, test, test.tensors[1], 2, 3, epochs=3, samples_per_epoch=60,
                          lr=1e-2, seed=0)
    assert data.read and not {i for i in data.read if labels[i] == 2}  # not one class-2 sample was read
    assert len(data.read) == 3 * 60  # 60 fresh retain samples an epoch
    assert res["history"][0] == _acc_on(unlearned, test, 2) and len(res["history"]) == 4
    again = retain_finetune(unlearned, train, labels, 2, 3, epochs=3, samples_per_epoch=60, lr=1e-2, seed=0)
    assert res["acc_f"] == _acc_on(again, test, 2) == res["history"][-1]  # seeded: the same run twice
    x, y = test.tensors
    with torch.no_grad():
        pred = again(x).argmax(1)
    assert res["acc_r"] == pytest.approx(float((pred[y != 2] == y[y != 2]).float().mean()))


def test_zero_epochs_is_the_unlearned_models_accuracy(setup):
    net, unlearned, train, test = setup
    assert _acc_on(net, test, 2) > 0.9 and _acc_on(unlearned, test, 2) < 0.1
    res = retain_recovery(unlearned, train, train.tensors[1], test, test.tensors[1], 2, 3, epochs=0)
    assert res["acc_f"] == _acc_on(unlearned, test, 2) and res["history"] == [res["acc_f"]]


def test_head_only_changes_only_the_head(setup):
    _, unlearned, train, _ = setup
    before = {k: v.clone() for k, v in unlearned.state_dict().items()}
    head = retain_finetune(unlearned, train, train.tensors[1], 2, 3, part="head", epochs=2, lr=1e-2, seed=0)
    full = retain_finetune(unlearned, train, train.tensors[1], 2, 3, part="all", epochs=2, lr=1e-2, seed=0)
    for k, v in head.state_dict().items():
        if k.startswith("fc."):
            assert not torch.equal(v, before[k])
        else:
            assert torch.equal(v, before[k]), k  # weights and BatchNorm statistics bit for bit
    assert not torch.equal(full.state_dict()["body.0.weight"], before["body.0.weight"])
    assert not torch.equal(full.state_dict()["body.1.running_mean"], before["body.1.running_mean"])
    assert all(torch.equal(v, before[k]) for k, v in unlearned.state_dict().items())  # the input model untouched


def test_evaluate_reports_the_recovery_of_each_class(setup):
    net, unlearned, train, test = setup
    um = PerClassModels(net, {0: net, 2: unlearned}, num_classes=3, method="toy")
    res = evaluate(um, test, train_data=train, classes=[0, 2], progress=False, metrics=("retain_ft",),
                   rft_epochs=2, rft_lr=1e-2, rft_part="head")
    row = res["per_class"][2]
    seed = 7919 * 3  # class_seed(0, 2)
    want = retain_recovery(unlearned, train, train.tensors[1], test, test.tensors[1], 2, 3, part="head", epochs=2,
                           lr=1e-2, seed=seed)
    assert row["rft_acc_f"] == want["acc_f"] and row["rft_history"] == want["history"]
    assert row["rft_history"][0] == row["acc_f"]
    assert res["summary"]["rft_acc_f"] == pytest.approx((res["per_class"][0]["rft_acc_f"] + row["rft_acc_f"]) / 2)
    with pytest.raises(ValueError, match="rft_part must be one of"):
        evaluate(um, test, train_data=train, progress=False, metrics=("retain_ft",), rft_part="body")
    with pytest.raises(ValueError, match="part must be one of"):
        retain_finetune(net, train, train.tensors[1], 2, 3, part="body")
