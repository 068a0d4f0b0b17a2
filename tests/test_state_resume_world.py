"""A resume continues the run it finds or nothing: another base model, split, image size, data or precision is
refused, naming each difference in one line, before anything changes; old checkpoints resume with a warning."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wfkern
from wfkern.cli.main import main
from wfkern.data import get_dataset
from wfkern.models import create_model
from wfkern.patch import base_fingerprint
from wfkern.train import ModelConfig, load_checkpoint, save_checkpoint
from wfkern.unlearn import ResumeMismatch, unlearn
from wfkern.unlearn.state import load_state

CONFIG = ModelConfig("small_cnn", 10, 1, 8, {"widths": [8, 16, 16]}, "digits")
FAST = ["--max-steps", "2", "--evals-per-epoch", "16", "--no-progress"]


def _checkpoint(path, seed: int) -> str:
    torch.manual_seed(seed)
    save_checkpoint(str(path), create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)), CONFIG)
    return str(path)


def _fingerprint(path: str) -> str:
    return base_fingerprint(wfkern.patch(load_checkpoint(path)[0], num_classes=10))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    ckpt, other = _checkpoint(d / "a.safetensors", 0), _checkpoint(d / "b.safetensors", 1)  # one architecture
    out = d / "run"
    assert main(["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), *FAST]) == 0
    return ckpt, other, out


def _files(out) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _refused(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("wfkern unlearn: error: --resume must use the run's settings, got "), lines[0]
    assert lines[0].endswith("; leave out --resume to start over, or choose another --out-dir"), lines[0]
    return lines[0]


def test_the_run_records_what_it_started_from(run):
    ckpt, _, out = run
    _, _, _, prog = load_state(str(out / "unlearn_state.safetensors"))
    assert prog.run == {"base_fingerprint": _fingerprint(ckpt), "precision": "fp32", "train_samples": 1078,
                        "val_samples": 269, "dataset": "digits", "split_seed": 0, "image_size": 8, "data_root": None}
    with safe_open(str(out / "gates.safetensors"), framework="pt") as f:  # the gates file's fingerprint
        assert f.metadata()["base_fingerprint"] == prog.run["base_fingerprint"]


@pytest.mark.parametrize("flags,said", [
    (["--split-seed", "1"], "split_seed 1 (run: 0)"),
    (["--image-size", "16"], "image_size 16 (run: 8)"),
    (["--precision", "bf16"], "precision bf16 (run: fp32)"),
])
def test_resume_refuses_other_data_and_precision(run, capsys, flags, said):
    ckpt, _, out = run
    before = _files(out)
    msg = _refused(capsys, ["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), "--resume", *FAST, *flags])
    assert f"got {said};" in msg, msg
    assert _files(out) == before  # nothing written: same gates, state and history


def test_resume_refuses_another_base_of_the_same_architecture_naming_every_difference(run, capsys):
    ckpt, other, out = run
    before = _files(out)
    mine, theirs = _fingerprint(ckpt), _fingerprint(other)
    msg = _refused(capsys, ["unlearn", "--checkpoint", other, "--out-dir", str(out), "--resume", *FAST])
    assert f"got checkpoint fingerprint {theirs[:12]}.. (run: {mine[:12]}..);" in msg, msg
    msg = _refused(capsys, ["unlearn", "--checkpoint", other, "--out-dir", str(out), "--resume", *FAST,
                            "--split-seed", "1", "--image-size", "16"])
    assert (f"got checkpoint fingerprint {theirs[:12]}.. (run: {mine[:12]}..), split_seed 1 (run: 0), "
            f"image_size 16 (run: 8);") in msg, msg
    assert _files(out) == before


def test_resume_with_the_same_world_goes_on(run, capsys):
    ckpt, _, out = run
    # the checkpoint's split and size given explicitly are the same world
    assert main(["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), "--resume", *FAST, "--split-seed", "0",
                 "--image-size", "8", "--precision", "fp32"]) == 0
    assert "untrained 2 steps (step cap)" in capsys.readouterr().out


# --- the library ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    train = get_dataset("digits", split="train", seed=0).subset(torch.arange(128))
    val = get_dataset("digits", split="val", seed=0).subset(torch.arange(50))
    return train, val


def _wf(seed: int = 0):
    torch.manual_seed(seed)
    return wfkern.patch(create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)).eval(), num_classes=10)


LIB = dict(max_steps=2, evals_per_epoch=2, progress=False)


def test_the_library_refuses_another_base_data_or_precision(tmp_path, digits):
    train, val = digits
    unlearn(_wf(0), train, val, out_dir=str(tmp_path), data_settings={"split_seed": 0}, **LIB)
    cases = [
        (dict(wf=_wf(1)),
         f"base_fingerprint {base_fingerprint(_wf(1))[:12]}.. (run: {base_fingerprint(_wf(0))[:12]}..)"),
        (dict(train=train.subset(torch.arange(100))), "train_samples 100 (run: 128)"),
        (dict(settings={"split_seed": 3}), "split_seed 3 (run: 0)"),
        (dict(autocast=True), "precision bf16 (run: fp32)"),
    ]
    for case, said in cases:
        wf = case.get("wf", _wf(0))
        wf.reset_gates(1.5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case.get("autocast", False)):
            with pytest.raises(ResumeMismatch) as e:
                unlearn(wf, case.get("train", train), val, out_dir=str(tmp_path), resume=True,
                        data_settings=case.get("settings", {"split_seed": 0}), **LIB)
        assert str(e.value) == ("wfkern.unlearn: resume must use the run's base model, data and precision, got "
                                f"{said}; start a new run (resume=False or another out_dir)")
        assert isinstance(e.value, ValueError) and len(e.value.differences) == 1
        assert all((a == 1.5).all() for a in wf.gates_state_dict().values())  # the gates were not touched
    # settings only one side holds are not compared: the library resuming without data_settings goes on
    res = unlearn(_wf(0), train, val, out_dir=str(tmp_path), resume=True, **LIB)
    assert res.steps == 2
    with pytest.raises(TypeError, match="data_settings must be a dict of names to numbers"):
        unlearn(_wf(0), train, val, data_settings={"root": object()}, **LIB)
    with pytest.raises(ValueError, match="data_settings must leave base_fingerprint, precision, train_samples, "
                                         "val_samples to unlearn .*, got precision"):
        unlearn(_wf(0), train, val, data_settings={"precision": "fp32"}, **LIB)


def _make_old(state_path) -> None:
    """Rewrite a checkpoint as an older wfkern wrote it: progress without the run record."""
    with safe_open(str(state_path), framework="pt") as f:
        meta = dict(f.metadata())
    progress = json.loads(meta["progress"])
    del progress["run"]
    meta["progress"] = json.dumps(progress)
    save_file(load_file(str(state_path)), str(state_path), metadata=meta)


def test_an_old_checkpoint_resumes_with_a_warning_and_is_recorded_from_then_on(tmp_path, digits, caplog):
    train, val = digits
    state = tmp_path / "unlearn_state.safetensors"
    unlearn(_wf(0), train, val, out_dir=str(tmp_path), **LIB)
    _make_old(state)
    assert load_state(str(state))[3].run == {}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wfkern.unlearn"):
        res = unlearn(_wf(0), train, val, out_dir=str(tmp_path), resume=True, **LIB)
    assert res.steps == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"wfkern.unlearn: the checkpoint {state} records no base model fingerprint, data or precision (an older "
        "wfkern wrote it): resuming without comparing them; they are recorded from now on"]
    assert load_state(str(state))[3].run["base_fingerprint"] == base_fingerprint(_wf(0))
    with pytest.raises(ResumeMismatch, match="base_fingerprint"):  # the next resume is checked
        unlearn(_wf(1), train, val, out_dir=str(tmp_path), resume=True, **LIB)


def test_the_command_line_resumes_an_old_checkpoint_with_a_warning(run, tmp_path, capsys):
    ckpt, _, _ = run
    out = tmp_path / "old"
    assert main(["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), *FAST]) == 0
    _make_old(out / "unlearn_state.safetensors")
    capsys.readouterr()
    assert main(["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), "--resume", *FAST, "--split-seed", "1"]) == 0
    err = capsys.readouterr().err
    assert "records no base model fingerprint, data or precision (an older wfkern wrote it)" in err
    assert load_state(str(out / "unlearn_state.safetensors"))[3].run["split_seed"] == 1  # recorded: checked next
    _refused(capsys, ["unlearn", "--checkpoint", ckpt, "--out-dir", str(out), "--resume", *FAST])
