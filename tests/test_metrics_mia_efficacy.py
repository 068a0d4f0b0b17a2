"""MIA-efficacy (SalUn / l1-sparse): the features by hand, a separable toy case, and its wiring through evaluate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import PerClassModels, efficacy_features, evaluate, mia_efficacy, prob_entropy


def test_entropy_and_modified_entropy_by_hand():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.1, 0.6, 0.3]])
    y = torch.tensor([0, 1, 0, 2])
    f = efficacy_features(p.log(), y)  # logits = log p: softmax gives p back
    ln = math.log
    entropy = [1.5 * ln(2), 1.5 * ln(2), 0.0, -(0.1 * ln(0.1) + 0.6 * ln(0.6) + 0.3 * ln(0.3))]
    m_entropy = [
        -0.5 * ln(0.5) - 2 * 0.25 * ln(0.75),  # -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)
        -0.75 * ln(0.25) - 0.5 * ln(0.5) - 0.25 * ln(0.75),
        0.0,
        -0.7 * ln(0.3) - 0.1 * ln(0.9) - 0.6 * ln(0.4),
    ]
    torch.testing.assert_close(f["confidence"], torch.tensor([0.5, 0.25, 1.0, 0.3], dtype=torch.float64))
    torch.testing.assert_close(f["entropy"], torch.tensor(entropy, dtype=torch.float64))
    torch.testing.assert_close(f["m_entropy"], torch.tensor(m_entropy, dtype=torch.float64))
    torch.testing.assert_close(prob_entropy(p.log()), f["entropy"])
    assert f["m_entropy"][0] == pytest.approx(0.490415, abs=1e-6) and f["entropy"][0] == pytest.approx(1.0397208)


def _feats(conf: torch.Tensor) -> dict:
    """Features whose confidence is ``conf`` (entropy and modified entropy of a 2-class softmax with p_y = conf)."""
    conf = conf.double()
    logits = torch.stack([torch.log(conf), torch.log1p(-conf)], dim=1)
    return efficacy_features(logits, torch.zeros(len(conf), dtype=torch.long))


def test_separable_members_and_non_members():
    g = torch.Generator().manual_seed(0)
    member = _feats(0.9 + 0.09 * torch.rand(200, generator=g))  # confident: trained on
    nonmember = _feats(0.55 + 0.1 * torch.rand(150, generator=g))  # less so: never seen
    forgotten = _feats(0.56 + 0.08 * torch.rand(40, generator=g))
    remembered = _feats(0.91 + 0.07 * torch.rand(40, generator=g))
    res = mia_efficacy(member, nonmember, forgotten)
    assert res == {"mia_eff": 1.0, "mia_eff_entropy": 1.0, "mia_eff_m_entropy": 1.0}  # all called non-members
    assert mia_efficacy(member, nonmember, remembered) == {"mia_eff": 0.0, "mia_eff_entropy": 0.0,
                                                           "mia_eff_m_entropy": 0.0}
    half = {k: torch.cat([forgotten[k][:10], remembered[k][:30]]) for k in forgotten}
    assert mia_efficacy(member, nonmember, half)["mia_eff"] == 0.25
    empty = {k: v[:0] for k, v in forgotten.items()}
    assert all(math.isnan(v) for v in mia_efficacy(member, nonmember, empty).values())
    with pytest.raises(ValueError, match="member and nonmember must hold at least 1 sample"):
        mia_efficacy({k: v[:0] for k, v in member.items()}, nonmember, forgotten)


def test_evaluate_wires_mia_efficacy_with_the_groups_of_the_attack():
    g = torch.Generator().manual_seed(0)
    y_tr, y_te = torch.arange(3).repeat(40), torch.arange(3).repeat(20)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    train = TensorDataset(centers[y_tr] + torch.randn(len(y_tr), 2, generator=g), y_tr)
    test = TensorDataset(centers[y_te] + torch.randn(len(y_te), 2, generator=g), y_te)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3)).eval()
    res = evaluate(PerClassModels(net, {1: net}, num_classes=3, method="toy"), test, train_data=train, classes=[1],
                   progress=False, metrics=("mia_eff",))
    row = res["per_class"][1]
    with torch.no_grad():  # every group whole (fewer samples than mia_max_samples), in index order
        member = efficacy_features(net(train.tensors[0][y_tr != 1]), y_tr[y_tr != 1])
        target = efficacy_features(net(train.tensors[0][y_tr == 1]), y_tr[y_tr == 1])
        nonmember = efficacy_features(net(test.tensors[0][y_te != 1]), y_te[y_te != 1])
    want = mia_efficacy(member, nonmember, target, seed=7919 * 2)  # class_seed(0, 1)
    assert {k: row[k] for k in want} == pytest.approx(want)
    assert "mia" not in row and res["summary"]["mia_eff"] == pytest.approx(want["mia_eff"])


def test_a_diverged_model_gets_its_accuracies_only(caplog):
    """A baseline whose weights went NaN for one class: its answers are counted (argmax of NaN rows is class 0),
    nothing else is measured for that class (an attacker or probe cannot be fitted on NaN), the others are."""
    g = torch.Generator().manual_seed(0)
    y_tr, y_te = torch.arange(3).repeat(40), torch.arange(3).repeat(20)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    train = TensorDataset(centers[y_tr] + torch.randn(len(y_tr), 2, generator=g), y_tr)
    test = TensorDataset(centers[y_te] + torch.randn(len(y_te), 2, generator=g), y_te)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3)).eval()
    broken = nn.Sequential(nn.Linear(2, 3)).eval()
    with torch.no_grad():
        broken[0].weight.fill_(float("nan"))
    res = evaluate(PerClassModels(net, {0: net, 2: broken}, num_classes=3, method="toy"), test, train_data=train,
                   classes=[0, 2], progress=False, metrics=("acc", "mia", "mia_eff", "probe", "retain_ft"))
    bad, good = res["per_class"][2], res["per_class"][0]
    assert bad["non_finite_outputs"] == 60 and bad["acc_f"] == 0.0 and bad["acc_r"] == pytest.approx(0.5)
    assert not {"mia", "mia_eff", "probe_acc_f", "rft_acc_f"} & set(bad)
    assert "non_finite_outputs" not in good and {"mia", "mia_eff", "probe_acc_f", "rft_acc_f"} <= set(good)
    assert res["summary"]["mia_eff"] == pytest.approx(good["mia_eff"])  # the mean over the class that has one
    assert "the toy model of class 2 gives non-finite outputs on 60 of 60 test samples" in caplog.text
