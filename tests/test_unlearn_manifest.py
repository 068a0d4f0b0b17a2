"""`wfkern unlearn` records how its run was made (manifest.json: versions, seed, settings, data-split hashes);
`wfkern evaluate --gates` carries it into its results and `wfkern report` prints it."""

from __future__ import annotations

import json

import pytest

from wfkern.cli.main import main
from wfkern.data import get_dataset
from wfkern.metrics.manifest import MANIFEST_FILE, dataset_fingerprint, read_run_manifest, versions, write_run_manifest

TINY = ["--model-arg", "widths=[8,16,16]"]
FAST = ["--max-epochs", "1", "--max-steps", "2", "--evals-per-epoch", "1", "--no-progress"]


def test_run_manifest_round_trip_and_damage(tmp_path):
    assert read_run_manifest(tmp_path) is None  # a run from before manifests: nothing, no error
    man = {"versions": {"wfkern": "0"}, "seeds": {"seed": 7}, "settings": {"lr": 0.5}, "data": {}}
    path = write_run_manifest(tmp_path, man)
    assert path == str(tmp_path / MANIFEST_FILE) and read_run_manifest(tmp_path) == man
    (tmp_path / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object, got a JSON list"):
        read_run_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"seeds": ')
    with pytest.raises(ValueError, match="manifest.json must be a JSON manifest"):
        read_run_manifest(tmp_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("man")
    ck = str(d / "model.safetensors")
    assert main(["train", *TINY, "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    assert main(["unlearn", "--checkpoint", ck, "--out-dir", str(d / "wf"), "--seed", "3", "--lr", "0.05", *FAST]) == 0
    return d, ck


def test_unlearn_writes_its_manifest(run):
    d, _ = run
    man = json.loads((d / "wf" / MANIFEST_FILE).read_text())
    assert man["versions"] == versions()
    assert man["seeds"] == {"seed": 3}
    s = man["settings"]
    assert s["seed"] == 3 and s["lr"] == 0.05 and s["max_steps"] == 2 and s["max_epochs"] == 1
    assert s["dataset"] == "digits" and s["split_seed"] == 0 and s["image_size"] == 8
    assert s["checkpoint"] == str(d / "model.safetensors")
    for split in ("train", "val"):  # the hash of exactly the split the run read
        assert man["data"][split] == dataset_fingerprint(get_dataset("digits", split=split, seed=0))
    assert man["data"]["train"]["n"] == 1078 and man["data"]["val"]["n"] == 269


def test_evaluate_carries_and_report_prints_the_unlearn_manifest(run, capsys, tmp_path):
    d, ck = run
    man = json.loads((d / "wf" / MANIFEST_FILE).read_text())
    ev = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", ck, "--gates", str(d / "wf" / "gates.safetensors"), "--out", str(ev),
                 "--metrics", "acc", "--classes", "0,1", "--no-progress"]) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["manifest"]["unlearn"] == man
    assert res["manifest"]["seeds"]["seed"] == 0  # the evaluation's own manifest is kept beside it
    capsys.readouterr()
    assert main(["report", str(ev), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if "wfnet untraining run:" in ln]
    assert len(line) == 1 and "seeds: seed 3" in line[0] and "lr=0.05" in line[0] and "max_steps=2" in line[0]
    assert f"train: 1078 samples, sha256 {man['data']['train']['sha256']} (inputs+labels)" in line[0]
    assert "wfnet untraining run:" in (tmp_path / "rep" / "report.md").read_text()
    # results without it (an evaluation of a copied gates file) get it from --run-dir
    del res["manifest"]["unlearn"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_text(json.dumps(res))
    assert main(["report", str(bare), "--out", str(tmp_path / "rep2")]) == 0
    assert "untraining run:" not in capsys.readouterr().out
    assert main(["report", str(bare), "--out", str(tmp_path / "rep3"), "--run-dir", str(d / "wf")]) == 0
    assert "seeds: seed 3" in [ln for ln in capsys.readouterr().out.splitlines() if "untraining run:" in ln][0]


def test_a_damaged_unlearn_manifest_is_a_one_line_error(run, capsys, tmp_path):
    d, ck = run
    wf = tmp_path / "wf"
    wf.mkdir()
    for name in ("gates.safetensors", "history.jsonl"):
        (wf / name).write_bytes((d / "wf" / name).read_bytes())
    (wf / MANIFEST_FILE).write_text("not json")
    capsys.readouterr()
    rc = main(["evaluate", "--checkpoint", ck, "--gates", str(wf / "gates.safetensors"), "--out", str(tmp_path / "e"),
               "--metrics", "acc", "--classes", "0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{wf / MANIFEST_FILE} must be a JSON manifest" in err[0]
