"""The `wfkern` command: its command list, help, a tiny train -> unlearn run, and every user-error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wfkern.cli.main import COMMANDS, build_parser, load_commands, main
from wfkern.models import create_model
from wfkern.train import ModelConfig, save_checkpoint

TINY = ["--model-arg", "widths=[8,16,16]"]


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(capsys, argv, match):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {argv[0]}: error: ") and match in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    rc = main(["train", *TINY, "--epochs", "1", "--out", str(path), "--no-progress"])
    assert rc == 0 and path.is_file()
    return path


def test_every_command_module_is_listed_and_loaded_in_order():
    import wfkern.cli

    on_disk = {p.stem[len("cmd_"):] for p in Path(wfkern.cli.__file__).parent.glob("cmd_*.py")}
    assert set(COMMANDS) == on_disk and list(COMMANDS) == sorted(COMMANDS)
    loaded = load_commands()
    assert [n for n, _ in loaded] == list(COMMANDS)
    assert all(m.__name__ == f"wfkern.cli.cmd_{n}" and callable(m.add_parser) for n, m in loaded)


def test_a_command_that_fails_to_import_fails_the_command_line(monkeypatch):
    # a broken command module must be an error, not a warning and a missing subcommand
    monkeypatch.setitem(sys.modules, "wfkern.cli.cmd_report", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="wfkern.cli.cmd_report"):
        build_parser()
    with pytest.raises(ImportError, match="wfkern.cli.cmd_report"):
        main(["info"])  # even a command that does not need it


@pytest.mark.parametrize("cmd", ["demo", "info", "train", "unlearn"])
def test_help_for_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and f"usage: wfkern {cmd}" in capsys.readouterr().out


@pytest.mark.parametrize("cmd, extra", [("evaluate", ["--out", "e"]), ("export", ["--out", "x.onnx"]), ("serve", [])])
def test_gates_flag_keeps_its_old_spelling_for_one_release(cmd, extra, capsys):
    parser = build_parser()
    args = parser.parse_args([cmd, "--checkpoint", "m.safetensors", "--gates", "g.safetensors", *extra])
    assert args.gates == "g.safetensors" and capsys.readouterr().err == ""
    args = parser.parse_args([cmd, "--checkpoint", "m.safetensors", "--filters", "old.safetensors", *extra])
    err = capsys.readouterr().err
    assert args.gates == "old.safetensors"
    assert err.count("\n") == 1 and "--filters is deprecated" in err and "use --gates" in err


def test_no_command_prints_usage(capsys):
    rc, _, err = run_cli(capsys)
    assert rc == 2 and "usage: wfkern" in err


def test_info_names_the_backend_and_versions(capsys):
    import wfkern

    rc, out, _ = run_cli(capsys, "info")
    assert rc == 0 and f"backend: {wfkern.backend()}" in out and "torch:" in out and "wfkern: 0.1.0" in out


def test_train_then_unlearn_then_resume(tmp_path, capsys, tiny_checkpoint):
    out_dir = tmp_path / "run"
    rc, out, _ = run_cli(capsys, "unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(out_dir),
                         "--max-epochs", "1", "--evals-per-epoch", "2", "--no-progress")
    assert rc == 0 and "mean" in out and "Acc_f %" in out
    assert {"gates.safetensors", "history.jsonl", "unlearn_state.safetensors"} <= set(os.listdir(out_dir))
    history = [json.loads(line) for line in open(out_dir / "history.jsonl")]
    assert [r["eval"] for r in history] == [1, 2]
    rc, out, _ = run_cli(capsys, "unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(out_dir),
                         "--max-epochs", "1", "--evals-per-epoch", "2", "--no-progress", "--resume")
    steps = history[-1]["step"]  # one epoch of the embedded digits at the default batch size
    assert rc == 0 and f"untrained {steps} steps (epoch cap)" in out  # nothing left to do: the finished run is reported


def test_gate_mlp_unlearn_then_evaluate_and_resume(tmp_path, capsys):
    """--gate-mlp gates each ViT block's fc1 too; `evaluate` patches the model as the filters say, and a resume
    that would patch it differently is refused up front, naming the flag."""
    from wfkern.patch import gates_layer_names

    ckpt = tmp_path / "vit.safetensors"
    vit = ["--model", "vit_t", "--model-arg", "depth=1", "--model-arg", "embed_dim=12", "--model-arg", "num_heads=2",
           "--model-arg", "patch_size=4"]
    assert main(["train", *vit, "--epochs", "1", "--out", str(ckpt), "--no-progress"]) == 0
    out_dir = tmp_path / "run"
    fast = ["--max-epochs", "1", "--max-steps", "2", "--evals-per-epoch", "1", "--no-progress"]
    rc, _, _ = run_cli(capsys, "unlearn", "--checkpoint", str(ckpt), "--out-dir", str(out_dir), "--gate-mlp", *fast)
    filters = out_dir / "gates.safetensors"
    names = gates_layer_names(filters)
    assert rc == 0 and any(n.endswith("mlp.fc1") for n in names) and any(n.endswith("attn.qkv") for n in names)
    rc, out, _ = run_cli(capsys, "evaluate", "--checkpoint", str(ckpt), "--gates", str(filters), "--out",
                         str(tmp_path / "eval"), "--metrics", "acc", "--classes", "0,1", "--no-progress")
    assert rc == 0 and "2 classes evaluated" in out
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(ckpt), "--out-dir", str(out_dir), "--resume",
                               "--gate-mlp", "qkv", *fast],
                      "--gate-mlp must match the run being resumed, which was started with fc1, got qkv")
    rc, out, _ = run_cli(capsys, "unlearn", "--checkpoint", str(ckpt), "--out-dir", str(out_dir), "--resume",
                         "--gate-mlp", *fast)
    assert rc == 0 and "untrained 2 steps (step cap)" in out


def test_paper_recipe_flag_reaches_unlearn():
    from wfkern.cli.main import build_parser
    from wfkern.cli.cmd_unlearn import unlearn_kwargs

    p = build_parser()
    kw = unlearn_kwargs(p.parse_args(["unlearn", "--checkpoint", "x", "--out-dir", "y", "--recipe", "paper"]))
    assert kw["clip_norm"] is None and kw["lr"] == 100.0 and kw["optimizer"] == "sgd"
    kw = unlearn_kwargs(p.parse_args(["unlearn", "--checkpoint", "x", "--out-dir", "y", "--clip-norm", "2"]))
    assert kw["clip_norm"] == 2.0


@pytest.mark.parametrize("argv,match", [
    (["train", "--dataset", "nope", "--out", "m.safetensors"], "name must be one of"),
    (["train", "--model", "nope", "--out", "m.safetensors"], "name must be one of"),
    (["train", "--model", "timm:nope", "--out", "m.safetensors"], "must be a timm model"),
    (["train", "--dataset", "mnist", "--data-root", "/nonexistent", "--out", "m.safetensors"], "train-images-idx3-ubyte"),
    (["train", "--dataset", "cifar10", "--out", "m.safetensors"], "root must be a folder"),
    (["train", "--out", "/nonexistent/dir/m.safetensors"], "--out must be in an existing directory"),
    (["train", "--model-arg", "widths", "--out", "m.safetensors"], "--model-arg must be KEY=VALUE"),
    (["train", "--model-arg", "bogus=1", "--out", "m.safetensors"], "--model-arg must be options of"),
    (["train", "--device", "cuda:0", "--out", "m.safetensors"], "device must be available"),
    (["train", "--device", "nonsense", "--out", "m.safetensors"], "--device must be cpu, cuda or cuda:N"),
    (["unlearn", "--checkpoint", "/nonexistent.safetensors", "--out-dir", "o"], "--checkpoint must be an existing file"),
])
def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    assert_user_error(capsys, argv, match)


def test_unlearn_rejects_foreign_and_mismatched_checkpoints(tmp_path, capsys, tiny_checkpoint):
    from safetensors.torch import save_file

    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(text), "--out-dir", str(tmp_path / "o")],
                      "must be a safetensors file")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(foreign), "--out-dir", str(tmp_path / "o")],
                      "must be a wfkern model checkpoint")
    five = tmp_path / "five.safetensors"
    save_checkpoint(str(five), create_model("small_cnn", 5, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 5, 1, 8, {"widths": [8, 16, 16]}, "digits"))
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(five), "--out-dir", str(tmp_path / "o")],
                      "--checkpoint must match the dataset")
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(str(wrong), create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 10, 1, 8, {}, "digits"))  # metadata says default widths
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(wrong), "--out-dir", str(tmp_path / "o")],
                      "weights must match model 'small_cnn'")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(empty), "--resume",
                               "--no-progress"], "resume must find a checkpoint")
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(tmp_path / "nope"),
                               "--resume"], "--out-dir must hold the run to resume")
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"),
                               "--dataset", "nope"], "name must be one of")
    assert_user_error(capsys, ["unlearn", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(tmp_path / "o"),
                               "--chi", "0", "--no-progress"], "chi must be >= 1")


def test_demo_rejects_an_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(capsys, ["demo", "--out-dir", str(blocker / "sub")], "--out-dir must be a writable directory")


def test_console_entry_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wfkern.cli.main", "unlearn", "--checkpoint", str(tmp_path / "x"),
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"wfkern unlearn: error: --checkpoint must be an existing file, got '{tmp_path / 'x'}'"]


def test_demo_writes_under_an_ignored_folder_by_default():
    assert build_parser().parse_args(["demo"]).out_dir == "runs/demo"  # `make demo` runs in the repository root
    gitignore = Path(__file__).resolve().parents[1] / ".gitignore"
    if gitignore.is_file():  # a source checkout: the folder is ignored
        assert "runs/" in gitignore.read_text().split()
