"""`wfkern evaluate` / `baseline` / `report` on a tiny checkpoint: the happy path and every user-error path."""

from __future__ import annotations

import json

import pytest

from wfkern.cli.main import main
from wfkern.metrics.classes import format_classes, select_classes

TINY = ["--model-arg", "widths=[8,16,16]"]
SPEED = ["--rt-max-epochs", "1", "--rt-samples", "32", "--insdel-steps", "2", "--mia-max-samples", "50",
         "--test-per-class", "10", "--no-progress"]
FAST = ["--classes", "0,1", *SPEED]


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
    # WF-Net on classes 0-2, the baseline (which ran 0 and 1) with no --classes at all: it used to try every class
    # and die on the first model the baseline never trained.
    assert main(["evaluate", "--checkpoint", ck, "--gates", str(d / "wf" / "gates.safetensors"),
                 "--out", str(d / "e_wf"), "--classes", "0-2", *SPEED]) == 0
    out = capsys.readouterr().out
    assert "3 classes evaluated (0-2) ->" in out
    wf = json.loads((d / "e_wf" / "results.json").read_text())
    assert wf["method"] == "wfnet" and wf["classes"] == [0, 1, 2] and wf["dataset"] == "digits"
    assert wf["cost"]["n_files"] == 1 and wf["cost"]["bytes_total"] == (d / "wf" / "gates.safetensors").stat().st_size
    assert wf["relations"]["layer"] and len(wf["relations"]["member"]) == 3
    assert {"acc_f", "acc_r", "zrf", "mia", "rt", "insertion_auc"} <= set(wf["per_class"]["0"])
    # the run's history travels with the results: the report's untraining curve needs no other file
    hist = [json.loads(line) for line in (d / "wf" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in wf["unlearn_history"]] == [r["step"] for r in hist] and len(hist) == 1
    assert wf["unlearn_history"][0]["val_acc_f"] == pytest.approx(hist[0]["val_acc_f"])
    assert wf["unlearn_run_dir"] == str(d / "wf")
    assert wf["cost"]["seconds_total"] == pytest.approx(hist[-1]["seconds"])
    s = wf["summary"]
    mia_line = [line for line in out.splitlines() if line.startswith("MIA ")][0]
    assert f"attacker is at chance ({100 * s['attack_acc']:.1f}% accuracy" in mia_line or \
        f"attacker at {100 * s['attack_acc']:.1f}% accuracy" in mia_line
    assert main(["evaluate", "--checkpoint", ck, "--baseline-dir", str(d / "ng"), "--out", str(d / "e_ng"),
                 *SPEED]) == 0
    out = capsys.readouterr().out
    assert "neg-grad" in out and "2 classes evaluated (0, 1; the classes the baseline ran)" in out
    ng = json.loads((d / "e_ng" / "results.json").read_text())
    assert ng["method"] == "neg-grad" and ng["classes"] == [0, 1] and ng["classes_from"] == "baseline"
    assert ng["cost"]["n_runs"] == 2 and "insertion_auc" not in ng["per_class"]["0"]
    # different class sets: compared on the shared ones, said in the console and the report
    assert main(["report", str(d / "e_wf"), str(d / "e_ng" / "results.json"), "--out", str(d / "rep")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Compared on the 2 classes all methods were evaluated on: 0, 1 (classes evaluated: "
                          "Negative gradients 2, WF-Net 3).")
    assert "| **WF-Net** |" in out and "| Negative gradients † |" in out and "(attack " in out
    assert sorted(p.name for p in (d / "rep").iterdir()) == [
        "insertion_deletion_wfnet.png", "per_class_accuracy.png", "relations_wfnet.png", "report.html", "report.md",
        "untraining_wfnet.png"]
    md = (d / "rep" / "report.md").read_text()
    assert "Compared on the 2 classes" in md and "| 2 |" in md  # Table 2 over the 2 shared classes


def test_classes_is_a_list_and_sample_classes_a_count(run, capsys, tmp_path):
    d, ck = run
    base = ["evaluate", "--checkpoint", ck, "--original", "--metrics", "acc", "--test-per-class", "5",
            "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "c3"), "--classes", "3"]) == 0  # class 3, not 3 random classes
    assert json.loads((tmp_path / "c3" / "results.json").read_text())["classes"] == [3]
    assert "1 class evaluated (3) ->" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "s3"), "--sample-classes", "3", "--sample-seed", "5"]) == 0
    drawn = json.loads((tmp_path / "s3" / "results.json").read_text())["classes"]
    assert drawn == select_classes(10, sample=3, seed=5) and len(drawn) == 3
    assert f"3 classes evaluated ({format_classes(drawn)}; 3 drawn at random with seed 5)" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "alias"), "--sample-classes", "3", "--classes-seed", "5"]) == 0
    assert json.loads((tmp_path / "alias" / "results.json").read_text())["classes"] == drawn
    assert main([*base, "--out", str(tmp_path / "pool"), "--classes", "4-9", "--sample-classes", "2"]) == 0
    pooled = json.loads((tmp_path / "pool" / "results.json").read_text())["classes"]
    assert len(pooled) == 2 and set(pooled) <= set(range(4, 10))


def test_evaluate_user_errors(run, capsys, tmp_path):
    d, ck = run
    base = ["evaluate", "--checkpoint", ck, "--out", str(tmp_path / "e")]
    user_error(capsys, ["evaluate", "--checkpoint", str(tmp_path / "no.safetensors"), "--original", "--out",
                        str(tmp_path / "e")], "--checkpoint must be an existing file")
    user_error(capsys, [*base, "--gates", str(tmp_path / "none.safetensors")], "--gates must be an existing file")
    user_error(capsys, [*base, "--baseline-dir", str(tmp_path)], "--baseline-dir must hold cost.json")
    user_error(capsys, [*base, "--original", "--classes", "a,b"],
               "--classes must be class indices like 3, 0,3,5 or 0-4, got 'a,b'; for N random classes use "
               "--sample-classes N")
    user_error(capsys, [*base, "--original", "--classes", "10,11"],
               "--classes must be class indices in [0, 10) (the model has 10 classes), got 10, 11")
    user_error(capsys, [*base, "--original", "--sample-classes", "11"],
               "--sample-classes must be a count in [1, 10] (the model's classes), got 11")
    user_error(capsys, [*base, "--original", "--sample-classes", "0"], "--sample-classes must be a count >= 1, got 0")
    user_error(capsys, [*base, "--baseline-dir", str(d / "ng"), "--classes", "1,5"],
               f"--classes must be among the classes the baseline in {str(d / 'ng')!r} ran (0, 1), got 5; run "
               "`wfkern baseline` for those classes first, or leave --classes out")
    user_error(capsys, [*base, "--original", "--run-dir", str(d / "wf")], "--run-dir must go with --gates")
    user_error(capsys, [*base, "--gates", str(d / "wf" / "gates.safetensors"), "--run-dir", str(tmp_path)],
               "--run-dir must be a `wfkern unlearn` folder with history.jsonl")
    user_error(capsys, [*base, "--gates", str(d / "wf" / "gates.safetensors"), "--relations-layer", "nope"],
               "--relations-layer must be a WF layer of the model (")
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
    # no class in common: a one-line error naming each method's classes, and no report folder left behind
    base = ["evaluate", "--checkpoint", ck, "--original", "--metrics", "acc", "--test-per-class", "5",
            "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "o7"), "--classes", "7", "--method-name", "seven"]) == 0
    assert main([*base, "--out", str(tmp_path / "o01"), "--classes", "0,1"]) == 0
    capsys.readouterr()
    user_error(capsys, ["report", str(tmp_path / "o7"), str(tmp_path / "o01"), "--out", str(tmp_path / "rep" / "x")],
               "results must share at least one evaluated class to be compared, got Original model: 0, 1; seven: 7")
    assert not (tmp_path / "rep").exists()
    user_error(capsys, ["report", str(tmp_path / "o01"), "--reference", "retrain", "--out", str(tmp_path / "r")],
               "--reference must be one of the methods given ['original'], got 'retrain'")
    assert not (tmp_path / "r").exists()
