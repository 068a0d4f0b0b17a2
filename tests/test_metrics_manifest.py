"""Results files record how they were made (versions, seeds, settings, data hashes); several seeds give mean ± std;
the report shows the depth-of-forgetting table and the manifest."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.data import get_dataset
from wfkern.metrics import PerClassModels, evaluate
from wfkern.metrics.manifest import dataset_fingerprint, versions
from wfkern.reports import write_report
from wfkern.reports.spread import aggregate, fmt_mean_std, manifest_lines, mean_std, spread_table
from wfkern.reports.tables import depth_table


def test_dataset_fingerprint_changes_with_any_input_or_label():
    x, y = torch.arange(24.0).reshape(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    base = dataset_fingerprint(TensorDataset(x, y))
    assert base == dataset_fingerprint(TensorDataset(x.clone(), y.clone()))
    assert base["n"] == 6 and base["covers"] == "inputs+labels" and len(base["sha256"]) == 16
    x2 = x.clone()
    x2[3, 1] += 1e-3
    y2 = y.clone()
    y2[5] = 0
    assert dataset_fingerprint(TensorDataset(x2, y))["sha256"] != base["sha256"]
    assert dataset_fingerprint(TensorDataset(x, y2))["sha256"] != base["sha256"]
    digits = dataset_fingerprint(get_dataset("digits", split="test"))
    assert digits["covers"] == "inputs+labels" and digits["n"] == 450
    assert digits == dataset_fingerprint(get_dataset("digits", split="test"))
    assert digits != dataset_fingerprint(get_dataset("digits", split="test", seed=1))


def test_mean_std_by_hand():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    m, s, n = mean_std([0.5, None, float("nan"), 0.7])
    assert (m, n) == (pytest.approx(0.6), 2) and s == pytest.approx(math.sqrt(0.02))
    assert mean_std([0.25]) == (0.25, 0.0, 1) and mean_std([None]) == (None, None, 0)
    assert fmt_mean_std(0.973, 0.004) == "97.3 ± 0.4" and fmt_mean_std(None, None) == "–"


def _summary(acc_f, probe):
    return {"summary": {"acc_r": 0.9, "acc_f": acc_f, "probe_acc_f": probe, "probe_acc_r": 0.95, "mia_eff": None,
                        "rt": None, "n_classes": 3}}


def test_aggregate_and_spread_table():
    runs = [{"wfnet": _summary(0.0, 0.8), "retrain": _summary(0.0, 0.6)},
            {"wfnet": _summary(0.02, 0.7), "retrain": _summary(0.0, 0.4)}]
    agg = aggregate(runs)
    assert agg["wfnet"]["probe_acc_f"]["mean"] == pytest.approx(0.75)
    assert agg["wfnet"]["probe_acc_f"]["std"] == pytest.approx(math.sqrt(0.005))
    assert agg["retrain"]["acc_f"] == {"mean": 0.0, "std": 0.0, "n": 2}
    # the mean gap to retraining per seed: |0.9 - 0.9| and |0 - 0| -> 0 points; then |0.02 - 0| -> 2 over 2 metrics
    assert agg["wfnet"]["gap"]["mean"] == pytest.approx(0.5) and agg["wfnet"]["gap"]["std"] == pytest.approx(0.5 ** 0.5)
    assert agg["retrain"]["gap"] == {"mean": None, "std": None, "n": 0}
    headers, rows = spread_table(agg)
    # columns no method has are left out
    assert headers == ["Method", "Seeds", "Acc_r", "Acc_f", "Probe Acc_f", "Gap to retrain"]
    assert rows[0] == ["Retrained model", "2", "90.0 ± 0.0", "0.0 ± 0.0", "50.0 ± 14.1", "–"]
    assert rows[1][-1] == "0.5 ± 0.7"
    assert rows[1][0] == "**WF-Net**" and rows[1][3] == "1.0 ± 1.4"


def test_evaluate_records_a_manifest_and_the_report_shows_it_with_the_depth_table(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(30)
    data = TensorDataset(torch.randn(len(y), 2, generator=g) + 3 * nn.functional.one_hot(y, 3)[:, :2].float(), y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3)).eval()
    res = evaluate(PerClassModels(net, {0: net, 1: net}, num_classes=3, method="toy"), data, train_data=data,
                   classes=[0, 1], progress=False, metrics=("probe", "mia_eff"), seed=4)
    man = res["manifest"]
    assert man["versions"] == versions() and man["versions"]["torch"] == torch.__version__
    assert man["seeds"] == {"seed": 4, "zrf_seed": 0, "classes_seed": 0}
    assert man["settings"] == res["settings"] and man["data"]["test"] == dataset_fingerprint(data)
    rows = depth_table({"toy": res})[1]
    assert len(rows) == 1 and rows[0][2].startswith(f"{100 * res['summary']['probe_acc_f']:.1f} (")
    line = manifest_lines({"toy": res})[0]
    assert f"torch {torch.__version__}" in line and man["data"]["test"]["sha256"] in line and "seed 4" in line
    md = write_report({"toy": res}, tmp_path / "rep")["markdown"].read_text()
    assert "## Depth of forgetting" in md and "## Manifest" in md and man["data"]["train"]["sha256"] in md


def test_a_malformed_depth_number_is_a_one_line_error(tmp_path):
    import json

    from wfkern.reports import load_results

    res = {"num_classes": 3, "classes": [0], "per_class": {"0": {"acc_f": 0.0}},
           "summary": {"acc_f": 0.0, "probe_acc_f": "high"}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match="key 'summary.probe_acc_f' of .* must be a number or null, got 'high'"):
        load_results(tmp_path)
