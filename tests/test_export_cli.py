"""wfkern export's refusals: one line, exit status 2, and no file (nor temporary) left behind."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import wfkern
import wfkern.cli.paths as common
from _export_models import scramble
from wfkern.cli.main import main
from wfkern.models import create_model


def _tiny(folder, seed=0, dataset="cifar10", name="tiny"):
    """(checkpoint, filters) of wfkern's small CNN on 3-channel 8-px images."""
    torch.manual_seed(seed)
    model = create_model("small_cnn", 10, 3, 8).eval()
    checkpoint, filters = str(folder / f"{name}.safetensors"), str(folder / f"{name}_filters.safetensors")
    wfkern.save_model(model, checkpoint, arch="small_cnn", image_size=8, dataset=dataset)
    scramble(wfkern.patch(model, 10), seed).save_gates(filters)
    return checkpoint, filters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("tiny"))


def refused(capsys, argv, match, folder):
    """Run ``wfkern export ARGV``: a one-line error containing ``match``, and ``folder`` exactly as before."""
    before = sorted(os.listdir(folder))
    rc = main(["export", *argv])
    _, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if not line.startswith("exporting ")]  # the progress line
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("wfkern export: error: ") and match in lines[0], lines[0]
    assert sorted(os.listdir(folder)) == before, "a file was left behind"
    return lines[0]


def test_unknown_class_names(tiny, tmp_path, capsys):
    checkpoint, filters = tiny
    out = str(tmp_path / "m.safetensors")
    line = refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "cat,zebra", "--out", out],
                   "--forget must be class ids or the checkpoint's class names (airplane, automobile", tmp_path)
    assert line.endswith("got 'zebra'")
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3,10", "--out", out],
            "--forget must be class indices in [0, 10)", tmp_path)
    unnamed = _tiny(tmp_path, dataset="", name="unnamed")
    refused(capsys, ["--checkpoint", unnamed[0], "--gates", unnamed[1], "--forget", "cat", "--out", out],
            "--forget must be class ids (the checkpoint names no classes), got 'cat'", tmp_path)


def test_names_ignore_case_and_mix_with_ids(tiny, tmp_path, capsys):
    checkpoint, filters = tiny
    out = tmp_path / "m.safetensors"
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--forget", "CAT, 7,0-1",
                 "--out", str(out)]) == 0
    assert "classes 0 (airplane), 1 (automobile), 3 (cat), 7 (horse) folded" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["forgotten"] == "0,1,3,7"


def test_filters_of_another_base_model(tiny, tmp_path, capsys):
    checkpoint, _ = tiny
    _, other = _tiny(tmp_path, seed=1, name="other")
    refused(capsys, ["--checkpoint", checkpoint, "--gates", other, "--forget", "3", "--out",
                     str(tmp_path / "m.safetensors")], "gates must be learnt on the checkpoint's base model", tmp_path)


def test_an_architecture_the_registry_cannot_rebuild(tiny, tmp_path, capsys):
    checkpoint, filters = tiny
    with safe_open(checkpoint, "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["wfkern"])
    config["model"] = "timm:no_such_model_anywhere"
    foreign = str(tmp_path / "foreign.safetensors")
    save_file(state, foreign, metadata={**meta, "wfkern": json.dumps(config)})
    line = refused(capsys, ["--checkpoint", foreign, "--gates", filters, "--forget", "3", "--out",
                            str(tmp_path / "m.safetensors")], "no_such_model_anywhere", tmp_path)
    assert "wfkern.load_checkpoint" in line


def test_an_existing_out_needs_overwrite(tiny, tmp_path, capsys):
    checkpoint, filters = tiny
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out", str(out)],
            f"--out must not exist yet, got {str(out)!r}, which does; pass --overwrite", tmp_path)
    assert out.read_bytes() == b"precious"
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out", str(tmp_path)],
            "--out must be a file path, got a directory", tmp_path)
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out", str(out),
                 "--overwrite"]) == 0
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["forgotten"] == "3"


def test_an_unwritable_folder(tiny, tmp_path, capsys, monkeypatch):
    checkpoint, filters = tiny
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out",
                     str(blocker / "m.safetensors")], "--out must be in a directory", tmp_path)
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out",
                     str(tmp_path / "missing" / "m.safetensors")], "--out must be in an existing directory", tmp_path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(common.tempfile, "mkstemp", denied)  # root writes anywhere: deny the way a folder would
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out",
                     str(tmp_path / "m.safetensors")], "--out must be in a writable directory", tmp_path)


def test_flags_that_do_not_fit_the_format(tiny, tmp_path, capsys):
    checkpoint, filters = tiny
    base = ["--checkpoint", checkpoint, "--gates", filters]
    refused(capsys, base + ["--out", str(tmp_path / "m.safetensors")], "--forget must be given with --format "
            "safetensors", tmp_path)
    refused(capsys, base + ["--out", str(tmp_path / "m.onnx"), "--forget", "3"], "--forget must be left out with "
            "--format onnx", tmp_path)
    refused(capsys, base + ["--out", str(tmp_path / "m.bin"), "--format", "onnx", "--decompose"],
            "--decompose must go with --format pt2", tmp_path)
    refused(capsys, ["--checkpoint", str(tmp_path / "none"), "--gates", filters, "--forget", "3", "--out",
                     str(tmp_path / "m.safetensors")], "--checkpoint must be an existing file", tmp_path)


def test_a_write_that_fails_midway_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    checkpoint, filters = tiny

    def torn(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise PermissionError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--forget", "3", "--out",
                     str(tmp_path / "m.safetensors")], "No space left on device", tmp_path)


@pytest.mark.slow  # two ONNX exports: 10-20 s each on 2 loaded cores
def test_a_failed_onnx_check_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import wfkern.export.writers as writers

    checkpoint, filters = tiny
    monkeypatch.setattr(writers, "VERIFY_TOL", -1.0)  # any difference, even 0, now fails the check
    refused(capsys, ["--checkpoint", checkpoint, "--gates", filters, "--out", str(tmp_path / "m.onnx")],
            "the ONNX model must reproduce wfkern's outputs", tmp_path)
    monkeypatch.setattr(writers, "VERIFY_TOL", 1e-4)
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--out", str(tmp_path / "m.onnx")]) == 0
    assert "matches wfkern within" in capsys.readouterr().out
