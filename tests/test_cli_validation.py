"""Settings are checked up front, by one rule set shared by the library and the command line."""

from __future__ import annotations

import json
import math

import pytest

from wfkern.cli.cmd_unlearn import unlearn_kwargs
from wfkern.cli.main import build_parser, main
from wfkern.unlearn import PAPER_RECIPE, UnlearnConfig


def one_line_error(capsys, argv, match):
    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {argv[0]}: error: ") and match in lines[0], lines[0]
    return lines[0]


# --- UnlearnConfig ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer >= 2, got 2.5"),
    (dict(chi=3.0), TypeError, "chi must be an integer"),
    (dict(max_epochs=True), TypeError, "max_epochs must be an integer"),
    (dict(seed="0"), TypeError, "seed must be an integer"),
    (dict(lambda0=math.nan), ValueError, "lambda0 must be a finite number >= 0, got nan"),
    (dict(lambda1=math.inf), ValueError, "lambda1 must be a finite number >= 0, got inf"),
    (dict(lambda2=-1.0), ValueError, "lambda2 must be a finite number >= 0"),
    (dict(lambda0=-0.5), ValueError, "lambda0 must be a finite number >= 0"),
    (dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (dict(lr=math.nan), ValueError, "lr must be a positive finite number"),
    (dict(gate_init=math.inf), ValueError, "gate_init must be a finite number"),
    (dict(momentum=math.nan), ValueError, "momentum must be in [0, 1)"),
    (dict(lambda1_warmup=math.nan), ValueError, "lambda1_warmup must be a fraction"),
    (dict(clip_norm=-1.0), ValueError, "clip_norm must be positive or None (no clipping)"),
    (dict(clip_norm=0.0), ValueError, "clip_norm must be positive or None"),
    (dict(clip_norm=math.inf), ValueError, "clip_norm must be positive or None (no clipping), and finite"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer must be 'sgd' or 'adam'"),
])
def test_unlearn_config_refuses_on_construction(kwargs, exc, match):
    with pytest.raises(exc, match="wfkern.unlearn: " + match.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("+", r"\+")):
        UnlearnConfig(**kwargs)


def test_unlearn_config_keeps_good_values_and_normalises_numbers():
    cfg = UnlearnConfig(lambda0=1, lr=5, clip_norm=None, batch_size=64, **{"seed": 7})
    assert cfg.lambda0 == 1.0 and isinstance(cfg.lambda0, float) and isinstance(cfg.lr, float)
    assert cfg.clip_norm is None and cfg.batch_size == 64 and cfg.seed == 7
    UnlearnConfig(**PAPER_RECIPE)  # the paper's literal setting (clip_norm None) is valid
    cfg.batch_size = 2.5
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        cfg.validate()


# --- the CLI uses the same rules, before any work ---------------------------------------------------------------

def _cli_kwargs(*flags):
    return unlearn_kwargs(build_parser().parse_args(["unlearn", "--checkpoint", "c", "--out-dir", "o", *flags]))


@pytest.mark.parametrize("text", ["0.5", "2", "none", "None", "off", "-1", "0", "nan", "inf", "-inf", "abc"])
def test_clip_norm_cli_and_library_agree(text):
    from wfkern.cli.main import UserError

    lib_value = None if text.lower() in ("none", "off") else (float(text) if text != "abc" else text)
    try:
        UnlearnConfig(clip_norm=lib_value)
        lib_ok = True
    except (TypeError, ValueError):
        lib_ok = False
    try:
        kw = _cli_kwargs(f"--clip-norm={text}")
        cli_ok = True
    except UserError as e:
        cli_ok = False
        assert str(e).startswith("--clip-norm must be a positive finite number or 'none' (no clipping), got")
    assert cli_ok == lib_ok, text
    if cli_ok:
        assert kw["clip_norm"] == lib_value


def test_clip_norm_none_turns_clipping_off_in_both():
    assert _cli_kwargs("--clip-norm", "none")["clip_norm"] is None
    assert _cli_kwargs("--recipe", "paper")["clip_norm"] is None
    assert _cli_kwargs()["clip_norm"] == UnlearnConfig().clip_norm


@pytest.mark.parametrize("flags,match", [
    (["--clip-norm", "-1"], "--clip-norm must be a positive finite number or 'none' (no clipping), got -1.0"),
    (["--lambda0", "nan"], "--lambda0 must be a finite number >= 0, got nan"),
    (["--lambda1", "-2"], "--lambda1 must be a finite number >= 0, got -2.0"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--batch-size", "1"], "--batch-size must be >= 2, got 1"),
    (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
])
def test_bad_unlearn_flags_stop_demo_before_training(capsys, monkeypatch, tmp_path, flags, match):
    import wfkern.cli.cmd_demo as cd

    def boom(*a, **k):
        raise AssertionError("trained before checking the untraining flags")

    monkeypatch.setattr(cd, "train_model", boom)
    monkeypatch.setattr(cd, "load_splits", boom)
    one_line_error(capsys, ["demo", "--out-dir", str(tmp_path / "d"), *flags], match)
    one_line_error(capsys, ["unlearn", "--checkpoint", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o"),
                            *flags], "--checkpoint must be an existing file")  # the checkpoint is named first


@pytest.mark.parametrize("flags,match", [
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--max-shift", "-1"], "--max-shift must be an integer >= 0"),
    (["--model-arg", "widths=[0]"], "--model-arg widths must be a list"),
    (["--model-arg", "bogus=1"], "--model-arg must be options of 'small_cnn' (pool_after, widths), got 'bogus'"),
])
def test_bad_train_flags_are_one_line_before_loading(capsys, monkeypatch, tmp_path, flags, match):
    import wfkern.cli.cmd_train as ct

    monkeypatch.setattr(ct, "load_splits", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded data")))
    one_line_error(capsys, ["train", "--out", str(tmp_path / "m.safetensors"), *flags], match)


def test_train_model_and_cli_share_rules():
    import torch

    from wfkern.data import get_dataset
    from wfkern.models import create_model
    from wfkern.train import train_model

    tr = get_dataset("digits", split="train")
    for kw, match in ((dict(lr=float("nan")), "lr must be a positive finite number"),
                      (dict(epochs=2.5), "epochs must be an integer >= 1"),
                      (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0")):
        with pytest.raises(ValueError, match="wfkern.train_model: " + match):
            train_model(create_model("small_cnn", widths=(4, 4, 4)), tr, **kw)
    assert torch.get_num_threads() >= 1


# --- wfkern report: files named, no tracebacks ------------------------------------------------------------------

@pytest.mark.parametrize("content,match", [
    ('{"method": "x", "summary": ', "must be JSON, got a syntax error at line 1"),
    ("[1, 2, 3]", "must hold a `wfkern evaluate` result (a JSON object), got a JSON list"),
    ('{"history": [1]}', "key 'summary' of"),
    ('{"summary": {}, "classes": [0], "per_class": {"0": {"acc_r": "high"}}, "num_classes": 2}',
     "key 'per_class.0.acc_r' of"),
    ('{"summary": {}, "classes": [5], "per_class": {}, "num_classes": 2}', "key 'classes.0' of"),
    ('{"summary": {"acc_r": "x"}, "classes": [0], "per_class": {"0": {}}, "num_classes": 1}', "key 'summary.acc_r' of"),
])
def test_report_names_a_malformed_or_foreign_file(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    line = one_line_error(capsys, ["report", str(bad), "--out", str(tmp_path / "r")], match)
    assert str(bad) in line
    assert not (tmp_path / "r").exists()  # nothing written for bad input


def test_report_of_a_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")],
                   "path must be a results.json or a folder with one")


def test_report_method_names_never_become_paths(tmp_path, capsys):
    from wfkern.reports.report import report_files

    res = {"summary": {"insertion_auc": 0.5, "deletion_auc": 0.1, "n_classes": 1}, "classes": [0], "num_classes": 1,
           "per_class": {"0": {"acc_r": 1.0, "acc_f": 0.0, "insertion_auc": 0.5, "deletion_auc": 0.1,
                               "insdel": {"k": [0, 1], "insertion_curve": [0, 1], "deletion_curve": [1, 0]}}},
           "method": "../../evil"}
    names = report_files({"../../evil": res})
    assert all("/" not in n and not n.startswith(".") for n in names), names
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    rc = main(["report", str(path), "--out", str(tmp_path / "out")])
    capsys.readouterr()
    assert rc == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.json"]
