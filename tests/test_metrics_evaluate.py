"""The evaluation loop: resuming an interrupted run, result files, MIA and RT wired through ``evaluate``."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.metrics import EvalSettings, PerClassModels, evaluate

from test_metrics_accuracy import LABELS, ORIGINAL, PREDS, Lookup, _data


class Flaky:
    """Class -> model; raises once on ``fail_on`` (an interruption), counts every load."""

    def __init__(self, fail_on=None):
        self.fail_on = fail_on
        self.loads = []

    def __call__(self, c):
        self.loads.append(c)
        if c == self.fail_on:
            self.fail_on = None
            raise KeyboardInterrupt("interrupted")
        return Lookup(PREDS[c])


def _run(models, out, **kw):
    um = PerClassModels(Lookup(ORIGINAL), models, num_classes=3, method="toy")
    return evaluate(um, _data(), out_dir=out, progress=False, settings=EvalSettings(metrics=("acc", "zrf")), **kw)


def test_interrupted_run_resumes_with_unfinished_classes(tmp_path):
    full = _run(Flaky(), tmp_path / "full")
    flaky = Flaky(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _run(flaky, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "classes").iterdir()) == ["class_00000.json", "class_00001.json"]
    assert not (tmp_path / "run" / "results.json").exists()
    flaky.loads.clear()
    resumed = _run(flaky, tmp_path / "run")
    assert flaky.loads == [2]  # classes 0 and 1 were not recomputed
    for c in range(3):
        for key in ("acc_f", "acc_r", "zrf"):
            assert resumed["per_class"][c][key] == pytest.approx(full["per_class"][c][key])
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["summary"]["acc_f"] == pytest.approx(resumed["summary"]["acc_f"])
    assert not list((tmp_path / "run").rglob(".tmp-*"))


def test_resume_refuses_other_settings_and_restarts_when_asked(tmp_path):
    _run(Flaky(), tmp_path)
    um = PerClassModels(Lookup(ORIGINAL), Flaky(), num_classes=3, method="toy")
    with pytest.raises(ValueError, match="wfkern.evaluate: out_dir must hold results of this same evaluation"):
        evaluate(um, _data(), out_dir=tmp_path, progress=False, settings=EvalSettings(metrics=("acc",)))
    models = Flaky()
    _run(models, tmp_path, resume=False)
    assert models.loads == [0, 1, 2]


def test_evaluate_rejects_metrics_it_cannot_run():
    um = PerClassModels(Lookup(ORIGINAL), {c: Lookup(p) for c, p in PREDS.items()})
    with pytest.raises(ValueError, match="train_data must be given"):
        evaluate(um, _data(), progress=False, settings=EvalSettings(metrics=("rt",)))
    with pytest.raises(ValueError, match="model must be a WF model for 'insdel'"):
        evaluate(um, _data(), progress=False, settings=EvalSettings(metrics=("insdel",)))
    with pytest.raises(ValueError, match=r"metrics must be drawn from"):
        evaluate(um, _data(), progress=False, settings=EvalSettings(metrics=("bogus",)))


def test_evaluate_mia_and_rt_on_a_real_model():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = torch.arange(3).repeat(200)
    # training points sit near the centres, test points further out: members are more confident, so the
    # attacker has a signal to learn
    x = centers[y] + torch.randn(600, 2, generator=g) * torch.cat([torch.full((450, 1), 0.5), torch.full((150, 1), 2.0)])
    train, test = TensorDataset(x[:450], y[:450]), TensorDataset(x[450:], y[450:])
    torch.manual_seed(0)
    original = nn.Linear(2, 3)
    with torch.no_grad():
        original.weight.copy_(centers)
        original.bias.zero_()

    def forget(c):
        m = nn.Linear(2, 3)
        with torch.no_grad():
            m.weight.copy_(centers)
            m.bias.zero_()
            m.bias[c] = -40.0
        return m

    um = PerClassModels(original, forget, num_classes=3, method="toy")
    res = evaluate(um, test, train_data=train, progress=False,
                   settings=EvalSettings(rt_lr=2.0, rt_max_epochs=30))
    s = res["summary"]
    assert res["original"]["acc"] >= 0.8
    assert s["acc_f"] <= 0.02 and s["acc_r"] >= 0.8 and s["attack_acc"] > 0.55
    assert 1 <= s["rt"] <= 30 and s["rt_capped"] == 0
    # the forget-class train samples get near-zero confidence: the attacker calls them non-members
    assert s["mia"] <= 0.05
    assert set(res["metrics"]) == {"acc", "zrf", "mia", "rt"}
    # the original model still "remembers" them: most are predicted members
    res = evaluate(um.original, test, train_data=train, num_classes=3, progress=False,
                   settings=EvalSettings(metrics=("acc", "mia")))
    assert res["summary"]["mia"] >= 0.5 and res["summary"]["acc_f"] >= 0.8
