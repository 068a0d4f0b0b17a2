"""One validated reader of history.jsonl: every damaged line is a one-line error naming file:line and what is wrong,
for resume, `wfkern report --run-dir` and the results check alike; only a record cut short at the end is dropped
(with a warning)."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

import wfkern
from wfkern.cli.main import main
from wfkern.data import get_dataset
from wfkern.models import create_model
from wfkern.reports import load_results, read_history
from wfkern.train import ModelConfig, save_checkpoint
from wfkern.unlearn import unlearn
from wfkern.unlearn.state import HistoryLog, read_history_records


def _records(n: int = 6) -> list[dict]:
    return [{"eval": i, "step": 4 * i, "epoch": 1 + i // 3, "seconds": 0.5 * i, "lambda1": 1.0,
             "train_loss": 2.0 / i, "train_retain": 0.1, "train_forget": 1.5, "val_objective": 1.0 / i,
             "val_acc_r": 0.9, "val_acc_f": 0.1 / i, "best": i % 2 == 1} for i in range(1, n + 1)]


def _text(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# What damages a line: (name, the bad line's text from a good record, what the error must say).
def _set(key, value):
    return lambda rec: json.dumps({**rec, key: value})


def _drop(key):
    return lambda rec: json.dumps({k: v for k, v in rec.items() if k != key})


DAMAGE = [
    ("step is text", _set("step", "abc"), "field 'step' must be an integer >= 0, got 'abc'"),
    ("step is a float", _set("step", 4.5), "field 'step' must be an integer >= 0, got 4.5"),
    ("step is negative", _set("step", -4), "field 'step' must be an integer >= 0, got -4"),
    ("step is a bool", _set("step", True), "field 'step' must be an integer >= 0, got True"),
    ("step is null", _set("step", None), "field 'step' must be an integer >= 0, got None"),
    ("step goes back", _set("step", 0), "field 'step' must not go back (the record before it is at step"),
    ("no step", _drop("step"), "must hold a 'step' (the optimiser step of the validation), got a record without "
                               "one (eval, epoch,"),
    ("eval is text", _set("eval", "2"), "field 'eval' must be an integer >= 0, got '2'"),
    ("epoch is a list", _set("epoch", [1]), "field 'epoch' must be an integer >= 0, got [1]"),
    ("a value is a list", _set("val_acc_r", [1, 2]), "field 'val_acc_r' must be a number or null, got [1, 2]"),
    ("a value is text", _set("train_loss", "high"), "field 'train_loss' must be a number or null, got 'high'"),
    ("a value is an object", _set("val_objective", {"a": 1}), "field 'val_objective' must be a number or null"),
    ("a value is a bool", _set("seconds", False), "field 'seconds' must be a number or null, got False"),
    ("best is text", _set("best", "yes"), "field 'best' must be true or false, got 'yes'"),
    ("a list", lambda rec: "[1, 2]", "must be a JSON object (a validation record), got [1, 2]"),
    ("a number", lambda rec: "7", "must be a JSON object (a validation record), got 7"),
    ("a string", lambda rec: '"step"', "must be a JSON object (a validation record), got 'step'"),
    ("null", lambda rec: "null", "must be a JSON object (a validation record), got None"),
    ("an empty object", lambda rec: "{}", "got a record without one (no fields)"),
    ("not JSON", lambda rec: "garbage", "must be a JSON record, got 'garbage'"),
    ("cut short mid-file", lambda rec: json.dumps(rec)[:20], "must be a JSON record, got '{\"eval\""),
    ("two records on a line", lambda rec: json.dumps(rec) * 2, "must be a JSON record, got"),
    ("a giant integer", lambda rec: '{"step": ' + "9" * 5000 + "}", "must be a JSON record, got"),
    ("deep nesting", lambda rec: "[" * 100000 + "]" * 100000, "must be a JSON record, got '[[[["),
    ("not UTF-8", lambda rec: "\udcff", "must be a JSON record"),
]


def _write(path, lines: list[str]) -> None:
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name,damage,said", DAMAGE, ids=[d[0] for d in DAMAGE])
@pytest.mark.parametrize("where", [2, 4, 6])  # the second line, a middle one, the last complete one
def test_every_damaged_line_is_one_line_naming_file_line_and_what(tmp_path, name, damage, said, where):
    recs = _records()
    lines = [json.dumps(r) for r in recs]
    lines[where - 1] = damage(recs[where - 1])
    path = tmp_path / "history.jsonl"
    _write(path, lines)
    for read in (lambda: read_history_records(path, "wfkern.x", "; fix it"), lambda: read_history(path),
                 lambda: HistoryLog(str(path), keep_until_step=10**6)):
        with pytest.raises(ValueError) as e:
            read()
        msg = str(e.value)
        assert "\n" not in msg and f"{path}:{where} " in msg and said in msg, msg
        assert msg.startswith(("wfkern.x: ", "wfkern.read_history: ", "wfkern.unlearn: "))


def test_seeded_fuzz_of_damaged_histories(tmp_path):
    """Random damage at random lines, 300 files: a ValueError naming the first damaged line, every time."""
    rng = random.Random(1234)
    bad_values = ["abc", [1, 2], {"k": 1}, True, "", "1", [None]]
    path = tmp_path / "history.jsonl"
    for _ in range(300):
        recs = _records(rng.randint(2, 8))
        lines = [json.dumps(r) for r in recs]
        damaged = sorted(rng.sample(range(len(lines)), rng.randint(1, 2)))
        for i in damaged:
            kind = rng.randrange(4)
            rec = recs[i]
            if kind == 0:  # a value of the wrong type in a checked field
                key = rng.choice(["step", "eval", "epoch", "seconds", "lambda1", "train_loss", "val_objective",
                                  "val_acc_r", "val_acc_f", "best"])
                value = rng.choice([v for v in bad_values if not (key == "best" and isinstance(v, bool))])
                lines[i] = json.dumps({**rec, key: value})
            elif kind == 1:  # the step removed
                lines[i] = json.dumps({k: v for k, v in rec.items() if k != "step"})
            elif kind == 2:  # the line cut at a random point (but kept whole with its newline)
                text = json.dumps(rec)
                lines[i] = text[:rng.randrange(1, len(text) - 1)]
            else:  # a JSON value that is no object
                lines[i] = json.dumps(rng.choice([[1, 2], 3, "x", None, 1.5]))
        _write(path, lines)
        with pytest.raises(ValueError) as e:
            read_history_records(path, "wfkern.fuzz")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"wfkern.fuzz: {path}:{damaged[0] + 1} "), (lines, msg)


def test_a_record_cut_short_at_the_end_is_dropped_with_a_warning(tmp_path, caplog):
    recs = _records(3)
    path = tmp_path / "history.jsonl"
    last = json.dumps(_records(4)[3])
    for cut in (1, len(last) // 2, len(last)):  # a kill during the append: whatever part of the line landed
        path.write_text(_text(recs) + last[:cut])
        with caplog.at_level(logging.WARNING, logger="wfkern.unlearn"):
            caplog.clear()
            assert read_history_records(path, "wfkern.read_history") == recs
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
            f"wfkern.read_history: dropped line {path}:4, a record cut short (the run was killed while writing it): "
            f"{last[:cut][:60]!r}"]
    caplog.clear()
    path.write_text(_text(recs) + "\n\n")  # blank lines are no records, and no warning
    assert read_history_records(path, "w") == recs and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    path.write_text("")
    assert read_history_records(path, "w") == []


def test_the_results_check_applies_the_same_rule(tmp_path):
    from _toy_wf import evaluated_wf

    res = evaluated_wf(insdel_steps=4)
    for hist, said in [([{"step": "abc"}], "key 'unlearn_history.0.step' of"),
                       ([{"step": 2}, {"step": 4, "val_acc_r": [1, 2]}], "key 'unlearn_history.1.val_acc_r' of"),
                       ([{"step": 4}, {"step": 2}], "must not go back"),
                       ([{"eval": 1}], "key 'unlearn_history.0' of"), ([[1, 2]], "key 'unlearn_history.0' of")]:
        path = tmp_path / "results.json"
        path.write_text(json.dumps({**res, "unlearn_history": hist}))
        with pytest.raises(ValueError) as e:
            load_results(path)
        assert said in str(e.value) and "\n" not in str(e.value), str(e.value)
    path.write_text(json.dumps({**res, "unlearn_history": [{"step": 2, "val_objective": None}]}))
    assert load_results(path)["unlearn_history"] == [{"step": 2, "val_objective": None}]


# --- the commands: one line, exit status 2, never a traceback --------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    ckpt = d / "m.safetensors"
    torch.manual_seed(0)
    save_checkpoint(str(ckpt), create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 10, 1, 8, {"widths": [8, 16, 16]}, "digits"))
    out = d / "run"
    argv = ["unlearn", "--checkpoint", str(ckpt), "--out-dir", str(out), "--max-steps", "3", "--evals-per-epoch", "16",
            "--no-progress"]
    assert main(argv) == 0
    return argv, out, (out / "history.jsonl").read_text()


def _one_line_error(capsys, argv, command: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("name,damage,said", [DAMAGE[0], DAMAGE[6], DAMAGE[9], DAMAGE[10], DAMAGE[14], DAMAGE[19]],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_resume_and_report_refuse_a_damaged_history_in_one_line(finished_run, tmp_path, capsys, name, damage, said):
    argv, out, text = finished_run
    lines = text.splitlines()
    assert len(lines) >= 3
    lines[1] = damage(json.loads(lines[1]))
    _write(out / "history.jsonl", lines)
    try:
        msg = _one_line_error(capsys, [*argv, "--resume"], "unlearn")
        assert f"wfkern.unlearn: {out / 'history.jsonl'}:2 " in msg and said in msg and \
            msg.endswith("; delete the file to resume without it"), msg
        res = tmp_path / "res.json"
        from _toy_wf import evaluated_wf
        res.write_text(json.dumps(evaluated_wf(insdel_steps=4)))
        msg = _one_line_error(capsys, ["report", str(res), "--run-dir", str(out), "--out", str(tmp_path / "r")],
                              "report")
        assert f"wfkern.read_history: {out / 'history.jsonl'}:2 " in msg and said in msg, msg
        assert not (tmp_path / "r").exists()
        # evaluate reads the run's untraining time from it, before any class is evaluated
        filters = str(out / "gates.safetensors")
        msg = _one_line_error(capsys, ["evaluate", "--checkpoint", argv[2], "--gates", filters,
                                       "--out", str(tmp_path / "e"), "--metrics", "acc", "--classes", "0",
                                       "--no-progress"], "evaluate")
        assert f"wfkern.read_history: {out / 'history.jsonl'}:2 " in msg and said in msg, msg
    finally:
        (out / "history.jsonl").write_text(text)


def test_a_resume_refused_for_its_history_leaves_the_gates_alone(tmp_path):
    train = get_dataset("digits", split="train", seed=0).subset(torch.arange(128))
    val = get_dataset("digits", split="val", seed=0).subset(torch.arange(50))
    torch.manual_seed(0)
    wf = wfkern.patch(create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)).eval(), num_classes=10)
    unlearn(wf, train, val, out_dir=str(tmp_path), max_steps=2, evals_per_epoch=2, progress=False)
    path = tmp_path / "history.jsonl"
    path.write_text(path.read_text().replace('"step": 1,', '"step": "one",', 1))
    wf.reset_gates(3.0)
    before = {k: v.clone() for k, v in wf.gates_state_dict().items()}
    with pytest.raises(ValueError, match=r"history.jsonl:1 field 'step' must be an integer >= 0, got 'one'"):
        unlearn(wf, train, val, out_dir=str(tmp_path), resume=True, max_steps=2, evals_per_epoch=2, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in wf.gates_state_dict().items())
