"""python/compare_seeds.py (bash python/compare_digits.sh) end to end on a tiny CNN: two seeds, two baselines, the
summary's mean ± std equal to the per-seed results, the manifest recorded, a rerun skips every finished step."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compare_seeds_aggregates_every_seed(tmp_path):
    out = tmp_path / "cmp"
    argv = [sys.executable, str(ROOT / "python" / "compare_seeds.py"), "--out", str(out), "--seeds", "2",
            "--methods", "ft,scrub", "--classes", "0,3", "--threads", "1",
            "--train-args", "--model-arg widths=[8,16,16] --epochs 2"]
    subprocess.run(argv, check=True, capture_output=True, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["methods"]) == {"original", "wfnet", "ft", "scrub"}
    for m in summary["methods"]:
        vals = [json.loads((out / f"seed_{s}" / f"eval_{m}" / "results.json").read_text())["summary"]["rft_acc_f"]
                for s in (0, 1)]
        agg = summary["aggregate"][m]["rft_acc_f"]
        assert agg["mean"] == pytest.approx(sum(vals) / 2) and agg["n"] == 2
        assert agg["std"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2))
    man = summary["manifest"]
    assert man["versions"]["scikit-learn"] and len(man["commands"]) == 2 * (4 + 2 * 2 + 1)
    assert man["per_method"]["wfnet"]["data"]["test"]["covers"] == "inputs+labels"
    md = (out / "summary.md").read_text()
    assert "| SCRUB † | 2 |" in md and "± " in md and "## Manifest" in md
    rerun = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300)
    assert "$ " not in rerun.stdout  # every step's output exists: nothing ran again


@pytest.mark.slow
def test_head_ft_adds_the_frozen_features_column(tmp_path):
    """--head-ft: one more evaluation per method (retain fine-tuning of the head alone), its number in the summary."""
    out = tmp_path / "cmp"
    subprocess.run([sys.executable, str(ROOT / "python" / "compare_seeds.py"), "--out", str(out), "--seeds", "1",
                    "--methods", "neg-grad", "--classes", "0", "--threads", "1", "--head-ft",
                    "--train-args", "--model-arg widths=[8,16,16] --epochs 2"], check=True, capture_output=True,
                   timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    for m in ("original", "wfnet", "neg-grad"):
        head = json.loads((out / "seed_0" / f"headft_{m}" / "results.json").read_text())
        assert head["settings"]["rft_part"] == "head" and head["metrics"] == ["acc", "retain_ft"]
        assert summary["aggregate"][m]["rft_head_acc_f"]["mean"] == pytest.approx(head["summary"]["rft_acc_f"])
    assert len(summary["manifest"]["commands"]) == 2 + 3 * 2 + 1 + 1
    assert "Retain-FT head Acc_f" in (out / "summary.md").read_text()
