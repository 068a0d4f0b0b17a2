"""Acc_f / Acc_r splits on a fixed toy model whose predictions are known."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import EvalSettings, PerClassModels, accuracy_split, evaluate, select_classes

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
# predictions of the model unlearned on class c, per test sample
PREDS = {
    0: torch.tensor([1, 2, 0, 1, 0, 2, 2, 1]),  # Acc_f 1/3, Acc_r 3/5
    1: torch.tensor([0, 0, 0, 0, 2, 2, 2, 2]),  # Acc_f 0/2, Acc_r 6/6
    2: torch.tensor([0, 1, 0, 1, 1, 2, 0, 0]),  # Acc_f 1/3, Acc_r 4/5
}
ORIGINAL = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])  # 7/8; per class 2/3, 2/2, 3/3


class Lookup(nn.Module):
    """Predicts ``table[id]`` for an input holding the sample id."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x):
        return nn.functional.one_hot(self.table[x[:, 0].long()], 3).float() * 5.0


def _data():
    return TensorDataset(torch.arange(8).float().reshape(8, 1), LABELS)


def test_accuracy_split_by_hand():
    assert accuracy_split(PREDS[0], LABELS, 0) == (pytest.approx(1 / 3), pytest.approx(3 / 5))
    assert accuracy_split(PREDS[1], LABELS, 1) == (0.0, 1.0)


def test_evaluate_accuracy_per_class_and_mean():
    um = PerClassModels(Lookup(ORIGINAL), {c: Lookup(p) for c, p in PREDS.items()}, method="toy")
    res = evaluate(um, _data(), progress=False, settings=EvalSettings(metrics=("acc",)))
    expected = {0: (1 / 3, 3 / 5), 1: (0.0, 1.0), 2: (1 / 3, 4 / 5)}
    for c, (acc_f, acc_r) in expected.items():
        assert res["per_class"][c]["acc_f"] == pytest.approx(acc_f)
        assert res["per_class"][c]["acc_r"] == pytest.approx(acc_r)
    assert res["summary"]["acc_f"] == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    assert res["summary"]["acc_r"] == pytest.approx((3 / 5 + 1 + 4 / 5) / 3)
    assert res["original"]["acc"] == pytest.approx(7 / 8)
    assert [res["per_class"][c]["orig_acc"] for c in range(3)] == pytest.approx([2 / 3, 1.0, 1.0])
    assert [res["per_class"][c]["orig_acc_r"] for c in range(3)] == pytest.approx([5 / 5, 5 / 6, 4 / 5])  # the one original error (sample 2) falls outside class 0
    assert "zrf" not in res["per_class"][0]


def test_evaluate_class_subset():
    um = PerClassModels(Lookup(ORIGINAL), {c: Lookup(p) for c, p in PREDS.items()}, method="toy")
    res = evaluate(um, _data(), classes=[2, 0], progress=False, settings=EvalSettings(metrics=("acc",)))
    assert res["classes"] == [0, 2]
    assert sorted(res["per_class"]) == [0, 2]
    assert res["summary"]["acc_f"] == pytest.approx(1 / 3)


def test_select_classes():
    assert select_classes(4) == [0, 1, 2, 3]
    assert select_classes(1000, 10) == [10]  # an int names a class; a count is sample=
    sub = select_classes(1000, sample=10, seed=7)
    assert sub == select_classes(1000, sample=10, seed=7) and len(set(sub)) == 10 and sub == sorted(sub)
    assert sub != select_classes(1000, sample=10, seed=8)
    assert select_classes(5, [3, 1, 3]) == [1, 3]
    with pytest.raises(ValueError, match=r"wfkern.select_classes: classes must be a non-empty list"):
        select_classes(5, [5])
    with pytest.raises(ValueError, match=r"sample must be a count in \[1, 5\]"):
        select_classes(5, sample=6)


def test_per_class_subset_keeps_n_per_class():
    from wfkern.metrics.evaluate import per_class_subset

    sub = per_class_subset(_data(), 2, seed=0)
    labels = torch.stack([sub[i][1] for i in range(len(sub))])
    assert torch.bincount(labels).tolist() == [2, 2, 2]
    assert [int(sub[i][0]) for i in range(len(sub))] == \
        [int(per_class_subset(_data(), 2, seed=0)[i][0]) for i in range(len(sub))]  # seeded
    with pytest.raises(ValueError, match="test_per_class must be >= 1"):
        per_class_subset(_data(), 0)
