"""`wfkern evaluate` / `baseline` / `report` on a tiny checkpoint: the happy path and every user-error path."""

from __future__ import annotations

import json

import pytest

from wfkern.cli.main import main

TINY = ["--model-arg", "widths=[8,16,16]"]
FAST = ["--classes", "0,1", "--rt-max-epochs", "1", "--rt-samples", "32", "--insdel-steps", "2",
        "--mia-max-samples", "50", "--test-per-class", "10", "--no-progress"]


def user_error(capsys, argv, match):
    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {argv[0]}: error: ") and match in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ck = str(d / "model.safetensors")
    assert main(["train", *TINY, "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    assert main(["unlearn", "--checkpoint", ck, "--out-dir", str(d / "wf"), "--max-epochs", "1",
                 "--evals-per-epoch", "1", "--patience", "1", "--no-progress"]) == 0
    assert main(["baseline", "--method", "neg-grad", "--checkpoint", ck, "--out-dir", str(d / "ng"),
                 "--classes", "0,1", "--max-epochs", "1", "--no-progress"]) == 0
    return d, ck


def test_evaluate_baseline_report_happy_path(run, capsys):
    d, ck = run
    assert main(["evaluate", "--checkpoint", ck, "--filters", str(d / "wf" / "filters.safetensors"),
                 "--out", str(d / "e_wf"), *FAST]) == 0
    assert main(["evaluate", "--checkpoint", ck, "--baseline-dir", str(d / "ng"), "--out", str(d / "e_ng"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "neg-grad" in out and "2 classes evaluated" in out
    wf = json.loads((d / "e_wf" / "results.json").read_text())
    assert wf["method"] == "wfnet" and wf["classes"] == [0, 1] and wf["dataset"] == "digits"
    assert wf["cost"]["n_files"] == 1 and wf["cost"]["bytes_total"] == (d / "wf" / "filters.safetensors").stat().st_size
    assert wf["relations"]["layer"] and len(wf["relations"]["member"]) == 2
    assert {"acc_f", "acc_r", "zrf", "mia", "rt", "insertion_auc"} <= set(wf["per_class"]["0"])
    ng = json.loads((d / "e_ng" / "results.json").read_text())
    assert ng["method"] == "neg-grad" and ng["cost"]["n_runs"] == 2 and "insertion_auc" not in ng["per_class"]["0"]
    assert main(["report", str(d / "e_wf"), str(d / "e_ng" / "results.json"), "--out", str(d / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| **WF-Net** |" in out and "| Negative gradients † |" in out
    assert (d / "rep" / "report.html").is_file() and len(list((d / "rep").glob("*.png"))) == 3


def test_evaluate_user_errors(run, capsys, tmp_path):
    d, ck = run
    base = ["evaluate", "--checkpoint", ck, "--out", str(tmp_path / "e")]
    user_error(capsys, ["evaluate", "--checkpoint", str(tmp_path / "no.safetensors"), "--original", "--out",
                        str(tmp_path / "e")], "--checkpoint must be an existing file")
    user_error(capsys, [*base, "--filters", str(tmp_path / "none.safetensors")], "--filters must be an existing file")
    user_error(capsys, [*base, "--baseline-dir", str(tmp_path)], "--baseline-dir must hold cost.json")
    user_error(capsys, [*base, "--original", "--classes", "a,b"], "--classes must be a count or a comma-separated")
    user_error(capsys, [*base, "--original", "--classes", "10,11"], "classes must be a non-empty list of indices")
    user_error(capsys, [*base, "--original", "--metrics", "acc,bogus"], "metrics must be drawn from")
    user_error(capsys, [*base, "--original", "--metrics", "insdel"], "model must be a WF model for 'insdel'")


def test_baseline_and_report_user_errors(run, capsys, tmp_path):
    d, ck = run
    user_error(capsys, ["baseline", "--method", "random-labels", "--checkpoint", ck, "--out-dir", str(tmp_path),
                        "--max-epochs", "3"], "--max-epochs must not be given for --method random-labels")
    user_error(capsys, ["baseline", "--method", "neg-grad", "--checkpoint", str(tmp_path / "x"), "--out-dir",
                        str(tmp_path)], "--checkpoint must be an existing file")
    user_error(capsys, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")],
               "results must be results.json files or folders")
    user_error(capsys, ["report", str(tmp_path), "--out", str(tmp_path / "r")],
               "wfkern.load_results: path must be a results.json or a folder with one")
