"""Console calm: `wfkern unlearn` puts validations in the bar's postfix (full lines only with -v), prints numbers
with sensible precision, and writes plain lines (no carriage returns, no escape codes) when not on a terminal."""

from __future__ import annotations

import importlib
import io
import logging

import pytest

from wfkern.cli.main import main

progress = importlib.import_module("wfkern.unlearn.progress")  # ``wfkern.unlearn`` is also the function's name
_num, _pct, _Reporter = progress.format_loss, progress.format_pct, progress.Reporter


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_numbers_have_sensible_precision():
    assert [_num(x) for x in (6.7445123, 0.04418, 0.0510, 2.2, 1234.56, 0.0, 3e-5)] == [
        "6.74", "0.0442", "0.0510", "2.20", "1235", "0", "3.0e-05"]
    assert _pct(0.96667) == "96.7%" and _pct(0.0) == "0.0%"


def test_plain_lines_without_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "_LINE_MIN_S", 0.0)
    out = io.StringIO()
    rep = _Reporter(20, 0, True, stream=out)
    assert rep.mode == "lines"
    with rep:
        for step in range(1, 21):
            rep.step(step, [0.41234, 1.0, 2.0, 3.0])
            if step == 10:
                rep.validation(step, {"acc_r": 0.96667, "acc_f": 0.0, "objective": 1.23456}, True, 10, 1.23456)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "unlearn: 20 steps"
    assert len(lines) == 11  # the start, then one line per 10% of the steps
    assert lines[1].startswith("unlearn: step 2/20 (10%), 0:00 elapsed, ~0:00 left; loss 0.412")
    assert lines[-1].startswith("unlearn: step 20/20 (100%), 0:00 elapsed; loss 0.412 | val acc_r 96.7% acc_f 0.0% "
                                "obj 1.23 (best)")


def test_a_terminal_gets_a_bar_whose_postfix_holds_the_validation():
    out = _TTY()
    rep = _Reporter(10, 0, True, stream=out)
    assert rep.mode == "bar"
    with rep:
        rep.step(1, [0.5, 1.0, 2.0, 3.0])
        rep.validation(1, {"acc_r": 0.9, "acc_f": 0.05, "objective": 2.5}, False, 1, 2.25)
        assert rep.bar.postfix == "loss 0.500 | val acc_r 90.0% acc_f 5.0% obj 2.50 (best 2.25 @ 1)"
    assert _Reporter(10, 0, False).mode is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    ck = str(d / "model.safetensors")
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    return d, ck


def _unlearn(capsys, checkpoint, name, *extra):
    d, ck = checkpoint
    capsys.readouterr()
    argv = ["unlearn", *extra, "--checkpoint", ck, "--out-dir", str(d / name), "--max-epochs", "1",
            "--batch-size", "128", "--evals-per-epoch", "2"]
    assert main(argv) == 0
    return capsys.readouterr().err


def test_unlearn_to_a_log_is_calm_and_v_adds_the_full_lines(checkpoint, capsys):
    err = _unlearn(capsys, checkpoint, "quiet")  # pytest's capture is not a terminal: a log file
    assert "\r" not in err and "\x1b" not in err
    assert "unlearn: 8 steps" in err and "unlearn: step 8/8 (100%)" in err
    assert "unlearn validation" not in err  # in the progress lines only, not as full lines
    err_v = _unlearn(capsys, checkpoint, "verbose", "-v")
    full = [line for line in err_v.splitlines() if line.startswith("unlearn validation")]
    assert len(full) == 2 and full[0].startswith("unlearn validation 1 (epoch 1, step 4): objective ")
    assert "acc_r " in full[0] and "%" in full[0] and "\r" not in err_v
    err_off = _unlearn(capsys, checkpoint, "off", "--no-progress")  # no progress: the full lines are the log
    assert "unlearn: step" not in err_off and sum(line.startswith("unlearn validation") for line in
                                                  err_off.splitlines()) == 2


def test_library_logs_full_lines_at_debug_while_progress_shows(checkpoint, caplog, capsys):
    import wfkern
    from wfkern.data import get_dataset
    from wfkern.train import load_checkpoint

    _, ck = checkpoint
    model, config = load_checkpoint(ck)
    train = get_dataset("digits", split="train", seed=config.split_seed)
    val = get_dataset("digits", split="val", seed=config.split_seed)
    with caplog.at_level(logging.DEBUG, logger="wfkern.unlearn"):
        wfkern.unlearn(wfkern.patch(model, num_classes=10), train, val, max_epochs=1, evals_per_epoch=1,
                       progress=True)
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("unlearn validation")]
    assert levels == [logging.DEBUG]
    caplog.clear()
    model, _ = load_checkpoint(ck)
    with caplog.at_level(logging.DEBUG, logger="wfkern.unlearn"):
        wfkern.unlearn(wfkern.patch(model, num_classes=10), train, val, max_epochs=1, evals_per_epoch=1,
                       progress=False)
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("unlearn validation")] == [logging.INFO]


def test_evaluate_to_a_log_prints_plain_lines(checkpoint, capsys, tmp_path):
    _, ck = checkpoint
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", ck, "--original", "--metrics", "acc,zrf", "--classes", "0-3",
                 "--test-per-class", "5", "--out", str(tmp_path / "e")]) == 0  # progress on, but no terminal
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "it/s" not in err  # no bar
    assert err.strip().splitlines()[-1].startswith("evaluate original: 4/4 classes done")
