"""Linear-probe recovery (docs/evaluation.md, "Depth of forgetting"): the probe by hand, a class hidden only at the
head is recovered, features without class information give chance, WF features are taken with the class forgotten."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import PerClassModels, evaluate, head_name, probe_accuracy, probe_features
from wfkern.patch import bake, patch

from _toy_wf import known_filter_model, one_hot_images


def test_probe_accuracy_by_hand_on_separable_features():
    # symmetric training features: the fitted boundary is x = 0
    train_x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    train_y = torch.tensor([0, 0, 1, 1])
    test_x = torch.tensor([[-1.5], [0.5], [1.5], [-0.2], [3.0]])
    test_y = torch.tensor([0, 0, 1, 1, 1])
    res = probe_accuracy(train_x, train_y, test_x, test_y, 1)
    assert res["acc_f"] == pytest.approx(2 / 3)  # class 1: 1.5 and 3.0 right, -0.2 wrong
    assert res["acc_r"] == pytest.approx(1 / 2)  # class 0: -1.5 right, 0.5 wrong
    assert res["train_acc"] == 1.0


def _blobs(n_per_class: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat(n_per_class)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return TensorDataset(centers[y] + 0.6 * torch.randn(y.numel(), 2, generator=g), y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net, data = Net(), _blobs(60, 0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = data.tensors
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    test = _blobs(40, 1)
    assert float((net(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()) > 0.95
    return net.eval(), data, test


def _hidden_at_head(net: nn.Module, c: int) -> nn.Module:
    """The class suppressed at the output only: head row c zeroed, its bias -1e4 (features untouched)."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        out.fc.weight[c].zero_()
        out.fc.bias[c] = -1e4
    return out


def test_a_class_hidden_only_at_the_head_is_recovered(trained):
    net, train, test = trained
    um = PerClassModels(net, {c: _hidden_at_head(net, c) for c in range(3)}, num_classes=3, method="hidden")
    res = evaluate(um, test, train_data=train, progress=False, metrics=("probe",))
    for c in range(3):
        row = res["per_class"][c]
        assert row["acc_f"] == 0.0  # the head never predicts c ...
        assert row["probe_acc_f"] >= 0.95  # ... but its input still separates it (measured 1.0)
        assert row["probe"]["head"]["layer"] == "fc:input"
    assert res["summary"]["probe_acc_f"] >= 0.95 and res["summary"]["probe"]["head"]["acc_f"] >= 0.95


class NoInfo(nn.Module):
    """Features that carry no class information: seeded noise, whatever the input."""

    def __init__(self):
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)
        self.body = nn.Identity()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(torch.randn(x.shape[0], 8, generator=self.gen)))


def test_features_without_class_information_give_chance():
    train, test = _blobs(100, 0), _blobs(100, 1)
    model = NoInfo()
    res = evaluate(model, test, train_data=train, num_classes=3, progress=False, metrics=("probe",))
    accs = [res["per_class"][c]["probe_acc_f"] for c in range(3)]
    assert all(a <= 0.6 for a in accs), accs
    assert 0.2 <= sum(accs) / 3 <= 0.47, accs  # chance is 1/3 (measured 0.27, 0.27, 0.39)


def test_wf_features_are_taken_with_the_class_forgotten():
    model, alpha = known_filter_model(3, 4)
    wf = patch(model, num_classes=3)
    with torch.no_grad():
        wf.wf_layers()["0"].alpha_w.copy_(alpha)
    x, y = one_hot_images(3, 5)
    data = TensorDataset(x, y)
    for c in range(3):
        got = probe_features(lambda t: wf(t, forget=c), wf.model, ["1", "0:in"], 3, data, None)
        want = bake(wf, forget=c)[1](bake(wf, forget=c)[0](x))  # the baked model's conv -> flatten
        torch.testing.assert_close(got["1"], want.reshape(len(x), -1), rtol=1e-5, atol=1e-6)
        assert torch.equal(got["0:in"], x.reshape(len(x), -1))
        assert got["1"][y == c].abs().max() < 1e-6 < got["1"][y != c].abs().max()  # c's filter closed, others open


def test_probe_through_evaluate_on_a_wf_model_matches_the_probe_on_its_features():
    model, alpha = known_filter_model(3, 4)
    wf = patch(model, num_classes=3)
    with torch.no_grad():
        wf.wf_layers()["0"].alpha_w.copy_(alpha)
    x, y = one_hot_images(3, 6)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(x + 0.05 * torch.randn(x.shape, generator=g), y)
    res = evaluate(wf, data, train_data=data, progress=False, metrics=("probe",), probe_layers=("1",))
    for c in range(3):
        feats = probe_features(lambda t: wf(t, forget=c), wf.model, ["1"], 3, data, None)["1"]
        seed = res["settings"]["seed"] * 1_000_003 + 7919 * (c + 1)
        want = probe_accuracy(feats, y, feats, y, c, seed=seed)
        assert res["per_class"][c]["probe_acc_f"] == pytest.approx(want["acc_f"])
        assert res["per_class"][c]["probe"]["1"]["layer"] == "1:output"


def test_head_resolution_and_errors(trained):
    net, train, test = trained
    assert head_name(net, 3) == "fc"
    assert head_name(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 3)), 3) == "1"
    with pytest.raises(ValueError, match="nn.Linear head with 5 outputs"):
        head_name(net, 5)
    with pytest.raises(ValueError, match="probe_layers must name modules of the model"):
        evaluate(net, test, train_data=train, num_classes=3, progress=False, metrics=("probe",),
                 probe_layers=("nope",))
    with pytest.raises(ValueError, match="train_data must be given for \\['probe'\\]"):
        evaluate(net, test, num_classes=3, progress=False, metrics=("probe",))
    with pytest.raises(ValueError, match="probe_max_iter must be >= 1, got 0"):
        evaluate(net, test, train_data=train, num_classes=3, progress=False, metrics=("probe",), probe_max_iter=0)
