"""NaN / inf weights are refused where they come in: at import and at checkpoint load, by one check naming the key."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wfkern.cli.main import main
from wfkern.models import create_model
from wfkern.models.importing import ImportWeightsError, classifier_name, import_model, non_finite_weights
from wfkern.train import ModelConfig, load_checkpoint, save_checkpoint
from wfkern.train.checkpoint import load_model

ARGS = dict(num_classes=10, in_chans=1, image_size=8)
WIDTHS = [8, 16, 16]
KEY = "features.0.0.weight"  # the first conv of small_cnn: what the poisoned files damage


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, 1, 8, widths=WIDTHS)


def _poison(state: dict, key: str, value: float, count: int = 1) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    state[key].view(-1)[:count] = value
    return state


@pytest.mark.parametrize("value,said", [(math.nan, "1 NaN value in 'w'"), (math.inf, "1 inf value in 'w'"),
                                        (-math.inf, "1 inf value in 'w'")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_check_names_the_key_and_the_count(value, said, dtype):
    state = {"n": torch.tensor([1, 2]), "ok": torch.ones(3, dtype=dtype), "w": torch.zeros(4, dtype=dtype)}
    assert non_finite_weights(state) is None
    state["w"][1] = value
    assert non_finite_weights(state) == said


def test_the_check_counts_both_kinds_and_names_more_tensors():
    state = {"a": torch.tensor([math.nan, math.nan, math.inf, 1.0]), "b": torch.tensor([math.inf]),
             "c": torch.zeros(0), "d": torch.tensor([1 + 1j, complex(math.nan, 0)]), "e": torch.ones(2)}
    assert non_finite_weights(state) == "2 NaN values and 1 inf value in 'a' (and in 2 more tensors: b, d)"
    assert non_finite_weights({"e": torch.ones(2), "c": torch.zeros(0)}) is None


# --- import -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("value,word", [(math.nan, "NaN"), (math.inf, "inf")])
def test_import_refuses_non_finite_weights(tmp_path, fmt, value, word):
    path = str(tmp_path / f"w.{fmt}")
    state = _poison(_model().state_dict(), KEY, value, count=3)
    (save_file if fmt == "safetensors" else torch.save)(state, path)
    with pytest.raises(ImportWeightsError) as e:
        import_model("small_cnn", path, **ARGS, widths=WIDTHS)
    assert e.value.key == "weights" and str(e.value) == (
        f"wfkern.import_model: weights must hold finite values (no NaN or inf), got 3 {word} values in {KEY!r} of "
        f"{path!r}; the weights are damaged or come from a run that diverged")
    # the same weights, finite, import
    (save_file if fmt == "safetensors" else torch.save)(_model().state_dict(), path)
    model, _ = import_model("small_cnn", path, **ARGS, widths=WIDTHS)
    assert torch.equal(model.state_dict()[KEY], _model().state_dict()[KEY])


def test_a_head_that_is_replaced_is_not_checked(tmp_path):
    head = classifier_name(_model(), 10)
    path = str(tmp_path / "w.safetensors")
    save_file(_poison(_model().state_dict(), f"{head}.weight", math.nan), path)
    with pytest.raises(ImportWeightsError, match=rf"1 NaN value in '{head}.weight'"):
        import_model("small_cnn", path, **ARGS, widths=WIDTHS)
    model, info = import_model("small_cnn", path, **ARGS, widths=WIDTHS, new_head=True)
    assert info.head_reset and torch.isfinite(model.state_dict()[f"{head}.weight"]).all()


@pytest.mark.parametrize("value,word", [(math.nan, "NaN"), (-math.inf, "inf")])
def test_wfkern_import_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, value, word):
    weights = str(tmp_path / "w.safetensors")
    save_file(_poison(_model().state_dict(), KEY, value), weights)
    out = tmp_path / "m.safetensors"
    rc = main(["import", "--model", "small_cnn", "--num-classes", "10", "--in-chans", "1", "--image-size", "8",
               "--model-arg", "widths=[8,16,16]", "--weights", weights, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == [
        f"wfkern import: error: --weights must hold finite values (no NaN or inf), got 1 {word} value in {KEY!r} of "
        f"{weights!r}; the weights are damaged or come from a run that diverged"]
    assert not out.exists()


# --- checkpoint load ----------------------------------------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, _model(), ModelConfig("small_cnn", 10, 1, 8, {"widths": WIDTHS}, "digits"))
    return path


def _poison_file(path: str, key: str, value: float) -> None:
    """Damage one weight of a written checkpoint in place, keeping its metadata (safetensors directly)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    save_file(_poison(load_file(path), key, value), path, metadata=meta)


@pytest.mark.parametrize("value,word", [(math.nan, "NaN"), (math.inf, "inf")])
@pytest.mark.parametrize("key", [KEY, "features.0.1.running_var"])  # a weight, or a BatchNorm buffer
def test_load_refuses_a_poisoned_checkpoint(checkpoint, value, word, key):
    model, _ = load_checkpoint(checkpoint)  # before: loads
    assert torch.isfinite(model.state_dict()[key]).all()
    _poison_file(checkpoint, key, value)
    said = (f"wfkern.load_checkpoint: weights must be finite (no NaN or inf), got 1 {word} value in {key!r} in "
            f"{checkpoint!r}; the file is damaged or was saved from a run that diverged")
    for load in (load_checkpoint, load_model):
        with pytest.raises(ValueError) as e:
            load(checkpoint)
        assert str(e.value) == said


def test_commands_that_load_a_poisoned_checkpoint_fail_in_one_line(checkpoint, tmp_path, capsys):
    _poison_file(checkpoint, KEY, math.nan)
    rc = main(["unlearn", "--checkpoint", checkpoint, "--out-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("wfkern unlearn: error: wfkern.load_checkpoint: "
                                                               "weights must be finite"), err
    assert f"1 NaN value in {KEY!r}" in lines[0]
