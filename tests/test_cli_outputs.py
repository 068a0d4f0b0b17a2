"""Every command that writes checks its output paths before the work starts (one-line errors, no lost work),
and every option's --help shows its default."""

from __future__ import annotations

import argparse
import os
import re

import pytest

import wfkern.cli._common as common
import wfkern.cli.paths as paths
from wfkern.cli.main import COMMANDS, build_parser, main

TINY = ["--model-arg", "widths=[8,16,16]"]


def assert_user_error(capsys, argv, match):
    rc = main(list(argv))
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {argv[0]}: error: ") and match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Make any training / untraining / evaluation an immediate test failure: the checks must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("the command started its work before checking its output paths")

    import wfkern.cli.cmd_baseline as cb
    import wfkern.cli.cmd_demo as cd
    import wfkern.cli.cmd_evaluate as ce
    import wfkern.cli.cmd_train as ct
    import wfkern.cli.cmd_unlearn as cu

    for mod, name in ((ct, "train_model"), (ct, "load_splits"), (cd, "train_model"), (cd, "load_splits"),
                      (cu, "unlearn"), (cu, "checkpoint_and_splits"), (ce, "checkpoint_and_splits"),
                      (ce, "evaluate"), (cb, "checkpoint_and_splits"), (cb, "run_baseline")):
        monkeypatch.setattr(mod, name, boom)


@pytest.fixture
def blockers(tmp_path):
    d = tmp_path / "a_dir"
    d.mkdir()
    f = tmp_path / "a_file"
    f.write_text("x")
    return d, f


# --- wfkern train --out ----------------------------------------------------------------------------------------

def test_train_out_is_a_directory(tmp_path, capsys, no_work, blockers):
    d, _ = blockers
    assert_user_error(capsys, ["train", *TINY, "--out", str(d)], "--out must be a file path, got a directory")


def test_train_out_parent_is_a_file(tmp_path, capsys, no_work, blockers):
    _, f = blockers
    line = assert_user_error(capsys, ["train", *TINY, "--out", str(f / "m.safetensors")], "--out must be in a directory")
    assert str(f) in line and "is a file" in line
    line = assert_user_error(capsys, ["train", "--out", str(f / "deeper" / "m.safetensors")], "--out must be in a directory")
    assert str(f) in line


def test_train_out_special_file(capsys, no_work):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    assert_user_error(capsys, ["train", "--out", "/dev/null"], "--out must be a regular file path")


def test_train_out_in_a_read_only_folder(tmp_path, capsys, no_work, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.tempfile, "mkstemp", denied)
    line = assert_user_error(capsys, ["train", "--out", str(tmp_path / "m.safetensors")],
                             "--out must be in a writable directory")
    assert "Permission denied" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_out_in_a_really_read_only_folder(tmp_path, capsys, no_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_user_error(capsys, ["train", "--out", str(ro / "m.safetensors")], "--out must be in a writable directory")
    finally:
        ro.chmod(0o700)


# --- wfkern demo / unlearn / evaluate / baseline --out-dir ------------------------------------------------------

@pytest.mark.parametrize("name", ["model.safetensors", "gates.safetensors", "demo_table.txt", "demo_results.json",
                                  "history.jsonl", "unlearn_state.safetensors"])
def test_demo_checks_every_file_it_will_write(tmp_path, capsys, no_work, name):
    out = tmp_path / "demo"
    (out / name).mkdir(parents=True)
    line = assert_user_error(capsys, ["demo", "--out-dir", str(out), "--no-progress"], "--out-dir must be a file path")
    assert name in line


def test_demo_out_dir_is_a_file_or_read_only(tmp_path, capsys, no_work, blockers, monkeypatch):
    _, f = blockers
    assert_user_error(capsys, ["demo", "--out-dir", str(f)], "--out-dir must be a directory, got")
    assert_user_error(capsys, ["demo", "--out-dir", str(f / "sub")], "--out-dir must be a writable directory")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.tempfile, "mkstemp", denied)
    assert_user_error(capsys, ["demo", "--out-dir", str(tmp_path / "fresh")], "--out-dir must be a writable directory")


def test_unlearn_checks_its_outputs_before_loading(tmp_path, capsys, no_work):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"never read")
    out = tmp_path / "run"
    (out / "gates.safetensors").mkdir(parents=True)
    line = assert_user_error(capsys, ["unlearn", "--checkpoint", str(ckpt), "--out-dir", str(out)],
                             "--out-dir must be a file path")
    assert "gates.safetensors" in line


def test_evaluate_checks_its_outputs_before_loading(tmp_path, capsys, no_work):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"never read")
    out = tmp_path / "eval"
    (out / "results.json").mkdir(parents=True)
    assert_user_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--original", "--out", str(out)],
                      "--out must be a file path")
    out2 = tmp_path / "eval2"
    out2.mkdir()
    (out2 / "classes").write_text("a file where a folder goes")
    assert_user_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--original", "--out", str(out2)],
                      "is a file where a folder goes")


def test_baseline_checks_its_outputs_before_loading(tmp_path, capsys, no_work):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"never read")
    out = tmp_path / "base"
    (out / "cost.json").mkdir(parents=True)
    assert_user_error(capsys, ["baseline", "--method", "retrain", "--checkpoint", str(ckpt), "--out-dir", str(out)],
                      "--out-dir must be a file path")
    out2 = tmp_path / "base2"
    out2.mkdir()
    (out2 / "models").write_text("x")
    assert_user_error(capsys, ["baseline", "--method", "retrain", "--checkpoint", str(ckpt), "--out-dir", str(out2)],
                      "is a file where a folder goes")


def test_check_output_helpers_accept_good_paths_and_leave_nothing(tmp_path):
    assert common.check_output_file(str(tmp_path / "m.safetensors"), "--out") == str(tmp_path / "m.safetensors")
    (tmp_path / "old.safetensors").write_text("an older checkpoint may be replaced")
    common.check_output_file(str(tmp_path / "old.safetensors"), "--out")
    out = tmp_path / "new" / "deeper"
    common.check_output_dir(str(out), "--out-dir", files=("a.json",), dirs=("classes",))
    assert out.is_dir() and sorted(os.listdir(tmp_path)) == ["new", "old.safetensors"] and os.listdir(out) == []


@pytest.mark.parametrize("argv", [
    ["train", "--threads", "-1", "--out", "m.safetensors"], ["demo", "--threads", "0"],
    ["unlearn", "--checkpoint", "CKPT", "--out-dir", "o", "--threads", "-1"],
    ["evaluate", "--checkpoint", "CKPT", "--original", "--out", "o", "--threads", "-2"],
    ["baseline", "--method", "retrain", "--checkpoint", "CKPT", "--out-dir", "o", "--threads", "0"],
])
def test_threads_must_be_positive(tmp_path, monkeypatch, capsys, no_work, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "CKPT").write_bytes(b"never read")
    assert_user_error(capsys, argv, "--threads must be >= 1")


# --- --help shows every default ---------------------------------------------------------------------------------

def _help_entries(text: str) -> dict[str, str]:
    """option string -> its help entry (the option line and its continuation lines), whitespace squeezed."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[A-Za-z][\w-]*)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith("   ") and line.strip():
            entries[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def _options_with_defaults(parser: argparse.ArgumentParser):
    """Options that may be left out (so have a default): not positional, required, a flag, or one of a required choice."""
    one_of = {a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if (not action.option_strings or action.required or action.nargs == 0 or action in one_of
                or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction))):
            continue
        yield action


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_lists_a_default_for_every_option(cmd, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]
    missing = []
    for action in _options_with_defaults(sub):
        entry = entries.get(action.option_strings[0], "")
        if "default" not in entry.lower():
            missing.append(f"{action.option_strings[0]}: {entry!r}")
        elif action.default is not None:  # a concrete default is printed as it is
            assert str(action.default) in entry, entry
    assert not missing, f"wfkern {cmd} --help shows no default for:\n" + "\n".join(missing)


def test_help_shows_concrete_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    entries = _help_entries(capsys.readouterr().out)
    assert "(default: 3)" in entries["--chi"] and "(default: 64)" in entries["--batch-size"]
    assert "(default: no clipping)" in entries["--clip-norm"] and "'none'" in entries["--clip-norm"]
    assert "(default: 2.0)" in entries["--temperature"] and "(default: margin;" in entries["--forget-loss"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    entries = _help_entries(capsys.readouterr().out)
    assert "(default: 20)" in entries["--epochs"] and "(default: 0.003)" in entries["--lr"]
    assert "(default: small_cnn)" in entries["--model"]


# --- the helpers every command opens with -----------------------------------------------------------------------

def test_check_output_dir_can_check_without_creating(tmp_path):
    target = tmp_path / "a" / "b"
    assert common.check_output_dir(str(target), "--out", files=("report.md",), create=False) == str(target)
    assert not (tmp_path / "a").exists()  # nothing made
    (tmp_path / "f").write_text("")
    with pytest.raises(common.UserError, match=r"^--out must be a writable directory, got .*, but .*f is a file$"):
        common.check_output_dir(str(tmp_path / "f" / "x"), "--out", create=False)
    (target).mkdir(parents=True)
    (target / "report.md").mkdir()
    with pytest.raises(common.UserError, match=r"^--out must be a file path, got a directory"):
        common.check_output_dir(str(target), "--out", files=("report.md",), create=False)


def test_start_command_checks_checkpoint_threads_and_device(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(common.torch, "set_num_threads", calls.append)
    ns = argparse.Namespace
    with pytest.raises(common.UserError, match=r"^--checkpoint must be an existing file, got '.*missing'$"):
        common.start_command(ns(checkpoint=str(tmp_path / "missing"), threads=0, device="bogus"))  # checked first
    with pytest.raises(common.UserError, match=r"^--threads must be >= 1, got 0"):
        common.start_command(ns(threads=0, device=None))
    with pytest.raises(common.UserError, match=r"^--device must be cpu, cuda or cuda:N, got 'bogus'$"):
        common.start_command(ns(threads=None, device="bogus"))
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"")
    assert common.start_command(ns(checkpoint=str(ckpt), threads=3, device="cpu")) == common.torch.device("cpu")
    assert calls == [3]
