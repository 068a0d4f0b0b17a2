"""Insertion / deletion on a toy WF model whose relevant filters are known, and on a shuffled ranking."""

import pytest
import torch

from torch.utils.data import TensorDataset

from wfkern.metrics import EvalSettings, evaluate, filter_class_relations, insertion_deletion
from wfkern.patch import patch

from _toy_wf import known_filter_model, known_ratio, one_hot_images


def _toy():
    model, alpha = known_filter_model(3, 4)
    wf = patch(model, num_classes=3)
    with torch.no_grad():
        wf.wf_layers()["0"].alpha_w.copy_(alpha)
    return wf


def test_insertion_deletion_known_filters_by_hand():
    wf = _toy()
    before = wf.wf_layers()["0"].alpha_w.detach().clone()
    x, _ = one_hot_images(3, 5)
    r = known_ratio(3)  # ~0.0067: confidence with the class filter closed / open
    # 12 elements, steps 12 -> k = i/12 moves exactly i elements; the relevant one goes first
    res = insertion_deletion(wf, x[:5], 0, steps=12)
    assert res["insertion_curve"] == pytest.approx([r] + [1.0] * 12, abs=1e-6)
    assert res["deletion_curve"] == pytest.approx([1.0] + [r] * 12, abs=1e-6)
    assert res["insertion_auc"] == pytest.approx((r + 1) / 24 + 11 / 12, abs=1e-6)  # 0.9586
    assert res["deletion_auc"] == pytest.approx((1 + r) / 24 + 11 * r / 12, abs=1e-6)  # 0.0481
    assert res["insertion_auc"] > 0.95 and res["deletion_auc"] < 0.05
    assert torch.equal(wf.wf_layers()["0"].alpha_w.detach(), before)  # restored


def test_shuffled_ranking_is_worse_on_both():
    wf = _toy()
    x, _ = one_hot_images(3, 5)
    for c in range(3):
        rel = insertion_deletion(wf, x[5 * c:5 * c + 5], c, steps=12)
        rnd = [insertion_deletion(wf, x[5 * c:5 * c + 5], c, steps=12, order="random", seed=s) for s in range(4)]
        ins = sum(r["insertion_auc"] for r in rnd) / 4
        dele = sum(r["deletion_auc"] for r in rnd) / 4
        assert ins < rel["insertion_auc"] - 0.2
        assert dele > rel["deletion_auc"] + 0.2


def test_evaluate_reports_insdel_for_wf_models():
    wf = _toy()
    x, y = one_hot_images(3, 5)
    res = evaluate(wf, TensorDataset(x, y), progress=False,
                   settings=EvalSettings(metrics=("acc", "insdel"), insdel_steps=12))
    r = known_ratio(3)
    for c in range(3):
        row = res["per_class"][c]
        assert row["acc_f"] == 0.0 and row["acc_r"] == 1.0
        assert row["insertion_auc"] == pytest.approx((r + 1) / 24 + 11 / 12, abs=1e-6)
        assert row["deletion_auc"] == pytest.approx((1 + r) / 24 + 11 * r / 12, abs=1e-6)


def test_filter_class_relations_by_hand():
    wf = patch(known_filter_model(4, 3)[0], num_classes=4)
    alpha = torch.full((4, 12), 5.0)
    # top-2 (most closed) per class: c0 {0, 1}, c1 {1, 2}, c2 {3, 4}, c3 {1, 5}
    for c, (a, b) in enumerate([(0, 1), (1, 2), (3, 4), (1, 5)]):
        alpha[c, a], alpha[c, b] = -4.0, -3.0
    with torch.no_grad():
        wf.wf_layers()["0"].alpha_w.copy_(alpha)
    rel = filter_class_relations(wf, top_k=2)
    assert rel["layer"] == "0"
    assert rel["top"] == {0: [0, 1], 1: [1, 2], 2: [3, 4], 3: [1, 5]}
    assert rel["filters"] == [1]
    assert rel["member"] == [[1], [1], [0], [1]]
    rel = filter_class_relations(wf, top_k=2, min_classes=1)
    assert rel["filters"] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="wfkern.filter_class_relations: layer must be one of"):
        filter_class_relations(wf, "nope")
