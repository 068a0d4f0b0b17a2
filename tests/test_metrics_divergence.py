"""JS divergence and ZRF against hand-computed values (natural log, docs/method.md §3)."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import (EvalSettings, OriginalModel, WFUnlearned, evaluate, js_divergence, random_init_like,
                            zrf_score)
from wfkern.patch import patch


def test_js_identical_is_zero_and_zrf_one():
    p = torch.softmax(torch.randn(7, 10, generator=torch.Generator().manual_seed(0)), dim=1)
    assert torch.equal(js_divergence(p, p), torch.zeros(7, dtype=torch.float64))
    assert zrf_score(p, p) == 1.0


def test_js_one_hot_vs_uniform_by_hand():
    # m = (e0 + u) / 2 = [0.55, 0.05 x 9]
    # KL(e0 || m) = ln(1 / 0.55) = 0.597837
    # KL(u || m)  = 0.1 ln(0.1 / 0.55) + 9 x 0.1 ln(0.1 / 0.05) = -0.170475 + 0.623832 = 0.453357
    # JS = (0.597837 + 0.453357) / 2 = 0.525597
    kl_pm = math.log(1 / 0.55)
    kl_qm = 0.1 * math.log(0.1 / 0.55) + 0.9 * math.log(2.0)
    by_hand = 0.5 * kl_pm + 0.5 * kl_qm
    assert by_hand == pytest.approx(0.525597, abs=1e-6)
    p = torch.zeros(1, 10)
    p[0, 0] = 1.0
    q = torch.full((1, 10), 0.1)
    assert float(js_divergence(p, q)[0]) == pytest.approx(by_hand, abs=1e-6)
    assert zrf_score(p, q) == pytest.approx(1 - by_hand, abs=1e-6)


def test_js_disjoint_is_ln2_and_symmetric():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.0, 1.0, 0.0], [0.6, 0.1, 0.3]])
    js = js_divergence(p, q)
    assert float(js[0]) == pytest.approx(math.log(2), abs=1e-12)
    assert torch.allclose(js, js_divergence(q, p))


def test_js_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="wfkern.js_divergence: q must have the shape"):
        js_divergence(torch.ones(2, 3) / 3, torch.ones(2, 4) / 4)


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def test_random_init_is_seeded_and_leaves_source_alone():
    torch.manual_seed(1)
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.get_rng_state()
    a, b, c = random_init_like(net, 5), random_init_like(net, 5), random_init_like(net, 6)
    assert torch.equal(torch.get_rng_state(), state)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
    assert not torch.equal(a[1].weight, c[1].weight)
    assert not torch.equal(a[1].weight, net[1].weight)


def test_unlearned_equal_to_random_model_gives_zrf_one():
    torch.manual_seed(0)
    x = torch.randn(40, 8)
    y = torch.arange(40) % 4
    data = TensorDataset(x, y)
    same_as_random = random_init_like(_net(), seed=3)
    res = evaluate(OriginalModel(same_as_random, 4), data, progress=False,
                   settings=EvalSettings(metrics=("acc", "zrf"), zrf_seed=3))
    for c in range(4):
        assert res["per_class"][c]["zrf"] == pytest.approx(1.0, abs=1e-12)
    res = evaluate(OriginalModel(same_as_random, 4), data, progress=False,
                   settings=EvalSettings(metrics=("acc", "zrf"), zrf_seed=4))
    assert res["summary"]["zrf"] < 1.0


def test_wf_random_reference_is_the_plain_random_model():
    # WF-Net and the single-class baselines are compared against the very same random network
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten(),
                        nn.Linear(128, 3))
    x = torch.randn(5, 1, 8, 8)
    wf_random = WFUnlearned(patch(net, num_classes=3)).random_model(3)
    assert torch.equal(wf_random(x), random_init_like(net, 3)(x))
