"""The main job: `wfkern demo` on the embedded digits meets its targets.

Targets (seeded): original test accuracy >= 97%; after one untraining round, mean Acc_f <= 1% and
mean Acc_r within 1 point of the original's. Wall time is reported, not asserted (it depends on the
machine's load): the demo reports its own time, which the README records.
"""

from __future__ import annotations

import json
import time

import pytest

from wfkern.cli.main import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    rc = main(["demo", "--out-dir", str(out_dir), "--no-progress"])
    seconds = time.perf_counter() - t0
    assert rc == 0
    return out_dir, seconds, json.loads((out_dir / "demo_results.json").read_text())


def test_demo_reports_its_wall_time(demo_run):
    _, seconds, results = demo_run
    assert 0 < results["seconds"] <= seconds


def test_demo_original_model_reaches_97_percent(demo_run):
    assert demo_run[2]["original_acc"] >= 0.97


def test_demo_one_round_forgets_every_class_and_keeps_the_rest(demo_run):
    unlearned = demo_run[2]["unlearned"]
    assert len(unlearned) == 10
    mean_f = sum(f for f, _ in unlearned) / 10
    mean_r = sum(r for _, r in unlearned) / 10
    assert mean_f <= 0.01, f"mean Acc_f {mean_f:.4f}"
    original = demo_run[2]["original_acc"]  # the quality target: within 1 point of the original model
    assert mean_r >= original - 0.01, f"mean Acc_r {mean_r:.4f}, original {original:.4f}"


def test_demo_mixed_batch_and_table_file(demo_run, capsys):
    out_dir, _, results = demo_run
    mixed = results["mixed"]
    assert len(mixed) == 10 and len({m["forget"] for m in mixed}) >= 5  # different classes in one batch
    for m in mixed:
        assert m["original"] == m["true"] or m["forget"] != m["true"]
        if m["forget"] == -1:
            assert m["unlearned"] == m["original"]  # forget nothing: the original model, exactly
    own = [m for m in mixed if m["forget"] == m["true"]]
    assert own and all(m["unlearned"] != m["true"] for m in own)
    table = (out_dir / "demo_table.txt").read_text()
    assert "WF Acc_r %" in table and "mean" in table and "forgotten" in table
    assert {"model.safetensors", "gates.safetensors", "history.jsonl"} <= {p.name for p in out_dir.iterdir()}
