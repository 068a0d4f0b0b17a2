"""wfkern.train: the original model trains, checkpoints round-trip exactly, and bad files are clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from wfkern.data import get_dataset
from wfkern.models import create_model
from wfkern.train import ModelConfig, evaluate_accuracy, load_checkpoint, read_checkpoint_config, save_checkpoint, train_model
from wfkern.train.trainer import random_shift


def test_small_model_learns_the_digits():
    tr, va, te = (get_dataset("digits", split=s) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, 8, widths=(16, 32, 32))
    res = train_model(model, tr, va, epochs=10, lr=1e-2, seed=0)
    assert len(res.history) == 10 and res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.val_acc > 0.9 and evaluate_accuracy(model, te) > 0.9
    assert not model.training


def test_training_is_reproducible_from_the_seed():
    tr = get_dataset("digits", split="train").subset(torch.arange(256))
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("small_cnn", 10, 1, 8, widths=(8, 8, 8))
        train_model(m, tr, epochs=2, seed=5)
        outs.append(m(torch.ones(1, 1, 8, 8)))
    assert torch.equal(outs[0], outs[1])


def test_random_shift_moves_images_by_at_most_max_shift():
    x = torch.zeros(3, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    y = random_shift(x, 1, torch.Generator().manual_seed(0))
    for img in y:
        r, c = torch.nonzero(img[0] == 1.0)[0].tolist()
        assert abs(r - 4) <= 1 and abs(c - 4) <= 1
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_checkpoint_round_trip_is_exact_and_atomic(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_vgg", 10, 1, 8, widths=(8, 16), hidden=16).eval()
    cfg = ModelConfig("small_vgg", 10, 1, 8, {"widths": [8, 16], "hidden": 16}, "digits", 3, {"test_acc": 0.5})
    path = tmp_path / "m.safetensors"
    save_checkpoint(str(path), model, cfg)
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind
    loaded, cfg2 = load_checkpoint(str(path))
    assert cfg2 == cfg and read_checkpoint_config(str(path)) == cfg
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_checkpoint_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        load_checkpoint(str(tmp_path / "missing.safetensors"))
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="must be a safetensors file"):
        load_checkpoint(str(tmp_path / "pickle.pt"))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="must be a wfkern model checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.safetensors"))
    save_checkpoint(str(tmp_path / "bad.safetensors"), create_model("small_cnn", 10, 1, 8, widths=(8, 8, 8)),
                    ModelConfig("small_cnn", 10, 1, 8))
    with pytest.raises(ValueError, match="weights must match model 'small_cnn'"):
        load_checkpoint(str(tmp_path / "bad.safetensors"))
    with pytest.raises(FileNotFoundError, match="directory of"):
        save_checkpoint(str(tmp_path / "no" / "m.safetensors"), create_model("small_cnn"), ModelConfig("small_cnn", 10, 1, 8))


def test_train_model_rejects_bad_settings():
    tr = get_dataset("digits", split="train")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        train_model(create_model("small_cnn"), tr, epochs=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        train_model(create_model("small_cnn"), tr, batch_size=0)
    for kw, match in ((dict(lr=float("nan")), "lr must be a positive finite number, got nan"),
                      (dict(lr=-1.0), "lr must be a positive finite number"),
                      (dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0"),
                      (dict(max_shift=1.5), "max_shift must be an integer >= 0"),
                      (dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)")):
        with pytest.raises(ValueError, match="wfkern.train_model: " + match):
            train_model(create_model("small_cnn"), tr, **kw)


def test_training_progress_in_a_log_file_is_plain_lines(capsys):
    """progress=True with stderr not a terminal (pytest's capture, a log file): no bar, no carriage returns."""
    tr = get_dataset("digits", split="val", seed=0)
    torch.manual_seed(0)
    train_model(create_model("small_cnn", 10, 1, 8, widths=(8,)), tr, epochs=1, batch_size=64, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
