"""`wfkern baseline` shows its progress by the project rule: a bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import io

import pytest

from wfkern.baselines import progress as progress_mod
from wfkern.baselines.progress import ClassProgress
from wfkern.cli.main import main
from wfkern.models import create_model
from wfkern.train import ModelConfig, save_checkpoint


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(str(path), create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 10, 1, 8, {"widths": [8, 16, 16]}, "digits"))
    return str(path)


def test_the_baseline_command_writes_plain_lines_to_a_log(checkpoint, tmp_path, capsys):
    # capsys's stderr is no terminal: what a log file (`wfkern baseline ... 2> log`) receives
    argv = ["baseline", "--method", "ft", "--checkpoint", checkpoint, "--out-dir", str(tmp_path / "ft"),
            "--classes", "0,1", "--epochs", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err, repr(err)  # tqdm's bars redraw with carriage returns
    lines = err.splitlines()
    assert lines[0] == "baseline ft: 2 classes"
    assert lines[-1].startswith("baseline ft: class 1 done (2/2), 0:")
    # resumed: the classes an earlier run finished are counted, and said
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].endswith("elapsed; 2 done by an earlier run")
    # --no-progress: nothing at all
    assert main([*argv, "--no-progress", "--no-resume"]) == 0
    assert capsys.readouterr().err == ""


def test_plain_lines_are_spaced_and_the_last_class_always_shows(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 30.0, 31.0]).__next__
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    out = io.StringIO()
    with ClassProgress("baseline ssd", 4, True, stream=out) as shown:
        assert shown.mode == "lines" and not shown.bars
        for c in range(4):
            shown.class_done(c, ran=True)  # at t = 1, 2 (too soon after the start), 30 (due), 31 (the last)
    assert out.getvalue().splitlines() == [
        "baseline ssd: 4 classes",
        "baseline ssd: class 2 done (3/4), 0:30 elapsed, ~0:10 left",
        "baseline ssd: class 3 done (4/4), 0:31 elapsed",
    ]


def test_a_terminal_gets_a_bar_and_the_methods_bars():
    term = _Terminal()
    with ClassProgress("baseline ft", 3, True, stream=term) as shown:
        assert shown.mode == "bar" and shown.bars
        for c in range(3):
            shown.class_done(c, ran=True)
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    quiet = _Terminal()
    with ClassProgress("baseline ft", 3, False, stream=quiet) as shown:
        assert shown.mode is None and not shown.bars
        shown.class_done(0, ran=True)
    assert quiet.getvalue() == ""
