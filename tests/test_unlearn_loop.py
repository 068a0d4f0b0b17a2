"""wfkern.unlearn's loop: early stopping, checkpoints, resume equivalence, the NaN stop, multi-label data."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import wfkern
from wfkern.data import DatasetInfo, TensorImageDataset, get_dataset
from wfkern.models import create_model
from wfkern.unlearn import UnlearnDiverged, unlearn
from wfkern.unlearn import loop as loop_mod
from wfkern.unlearn import state as state_mod

FAST = dict(batch_size=64, max_epochs=2, evals_per_epoch=2, progress=False)


@pytest.fixture(scope="module")
def digits_small():
    train = get_dataset("digits", split="train", seed=0)
    val = get_dataset("digits", split="val", seed=0)
    return train.subset(torch.arange(256)), val.subset(torch.arange(100))


def tiny_wf(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)).eval()
    return wfkern.patch(model, num_classes=10)


def filters(wf):
    return wf.gates_state_dict()


def assert_same_filters(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0.0 if atol == 0.0 else 1e-5)


def test_gates_move_and_files_are_written(tmp_path, digits_small):
    wf = tiny_wf()
    res = unlearn(wf, *digits_small, out_dir=str(tmp_path), **FAST)
    assert res.steps == 8 and res.epochs == 2 and res.config["lambda1"] == 1.0  # the margin loss's λ1
    assert sorted(os.listdir(tmp_path)) == ["gates.safetensors", "history.jsonl", "unlearn_state.safetensors"]
    lines = [json.loads(line) for line in open(tmp_path / "history.jsonl")]
    assert [r["step"] for r in lines] == [2, 4, 6, 8]  # evals_per_epoch=2, 4 steps an epoch
    assert lines == res.history
    assert any(r["best"] for r in lines) and all(math.isfinite(r["val_objective"]) for r in lines)
    assert any((a != 3.0).any() for a in filters(wf).values())  # the gates trained
    wf2 = tiny_wf()
    wfkern.load_gates(wf2, str(tmp_path / "gates.safetensors"))
    assert_same_filters(filters(wf2), filters(wf))


def test_early_stopping_keeps_the_best_gates(monkeypatch, digits_small):
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 9.0, 9.0, 9.0, 9.0])
    snapshots = []
    real = loop_mod.validation_objective

    def fake(wf, *args, **kwargs):
        out = real(wf, *args, **kwargs)
        out["objective"] = next(scripted)
        snapshots.append(filters(wf))
        return out

    monkeypatch.setattr(loop_mod, "validation_objective", fake)
    wf = tiny_wf()
    res = unlearn(wf, *digits_small, batch_size=64, max_epochs=10, evals_per_epoch=2, patience=3, progress=False)
    # Improvements at evals 1-3, then 3 evals without one: stop after eval 6 (step 12 of 40).
    assert res.stopped_early and res.steps == 12 and len(res.history) == 6
    assert res.best_objective == 3.0 and res.best_step == 6
    assert [r["best"] for r in res.history] == [True, True, True, False, False, False]
    assert_same_filters(filters(wf), snapshots[2])


def test_a_step_cap_ends_the_run_mid_epoch_with_a_last_validation(tmp_path, digits_small):
    """max_steps=5 with 4 steps an epoch: 5 steps, validated at 2 and 4 (the plan) and after step 5, whose gates
    the run may keep; ``stopped_early`` stays False (a cap, not patience)."""
    res = unlearn(tiny_wf(), *digits_small, batch_size=64, max_epochs=10, max_steps=5, evals_per_epoch=2,
                  progress=False, out_dir=str(tmp_path))
    assert res.steps == 5 and res.epochs == 2 and not res.stopped_early and res.config["max_steps"] == 5
    assert [r["step"] for r in res.history] == [2, 4, 5]
    # The epoch cap still comes first when it is shorter.
    res = unlearn(tiny_wf(), *digits_small, batch_size=64, max_epochs=1, max_steps=100, evals_per_epoch=2,
                  progress=False)
    assert res.steps == 4 and [r["step"] for r in res.history] == [2, 4]


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.9, lr=10.0), dict(optimizer="adam", lr=0.05)])
def test_resume_reaches_the_uninterrupted_result(tmp_path, monkeypatch, digits_small, opt):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    wf_full = tiny_wf()
    res_full = unlearn(wf_full, *digits_small, out_dir=str(full_dir), lambda1_warmup=0.3, **opt, **FAST)

    real_save, calls = state_mod.save_state, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # crash right after the 3rd checkpoint (mid epoch 2)
            raise _Interrupt()

    monkeypatch.setattr(loop_mod, "save_state", save_then_die)
    with pytest.raises(_Interrupt):
        unlearn(tiny_wf(), *digits_small, out_dir=str(cut_dir), lambda1_warmup=0.3, **opt, **FAST)
    monkeypatch.setattr(loop_mod, "save_state", real_save)
    wf_resumed = tiny_wf()  # a fresh process: nothing but the checkpoint on disk
    res_resumed = unlearn(wf_resumed, *digits_small, out_dir=str(cut_dir), resume=True, lambda1_warmup=0.3, **opt,
                          **FAST)
    assert_same_filters(filters(wf_resumed), filters(wf_full))
    assert res_resumed.best_step == res_full.best_step and res_resumed.steps == res_full.steps
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(res_resumed.history) == strip(res_full.history)
    cut_lines = [json.loads(line) for line in open(cut_dir / "history.jsonl")]
    assert strip(cut_lines) == strip(res_full.history)


def test_resume_refuses_changed_settings_and_missing_checkpoints(tmp_path, digits_small):
    unlearn(tiny_wf(), *digits_small, out_dir=str(tmp_path), **FAST)
    with pytest.raises(ValueError, match=r"resume settings must match the checkpoint, got different \['lr'\]"):
        unlearn(tiny_wf(), *digits_small, out_dir=str(tmp_path), resume=True, lr=1.0, **FAST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="resume must find a checkpoint"):
        unlearn(tiny_wf(), *digits_small, out_dir=str(empty), resume=True, **FAST)


class _PoisonAfter(TensorImageDataset):
    """Returns NaN images from the n-th batch fetch on (data corrupted mid-run)."""

    def __init__(self, base: TensorImageDataset, after: int):
        super().__init__(base.images, base.targets, base.info, base._mean.flatten().tolist(), base._std.flatten().tolist())
        self.after, self.calls = after, 0

    def get_batch(self, idx):
        x, y = super().get_batch(idx)
        self.calls += 1
        return (torch.full_like(x, float("nan")) if self.calls > self.after else x), y


def test_nan_loss_stops_with_a_clear_message_and_keeps_good_filters(tmp_path, digits_small):
    train, val = digits_small
    wf = tiny_wf()
    with pytest.raises(UnlearnDiverged, match=r"loss must stay finite, got nan .* step 6 .*last good filters are in"):
        # batch fetch 1 is the input check before untraining; fetches 2-6 are steps 1-5
        unlearn(wf, _PoisonAfter(train, after=6), val, out_dir=str(tmp_path), **FAST)
    current, best, _, prog = state_mod.load_state(str(tmp_path / state_mod.STATE_FILE))
    assert prog.step == 4 and prog.evals == 2  # the checkpoint of the last validation before the bad step
    assert all(torch.isfinite(t).all() for t in [*current.values(), *best.values()])
    assert all(torch.isfinite(t).all() for t in filters(wf).values())
    assert_same_filters(filters(wf), best)


def test_paper_literal_setting_is_selectable(digits_small):
    from wfkern.unlearn import PAPER_RECIPE

    res = unlearn(tiny_wf(), *digits_small, **PAPER_RECIPE, **FAST)
    assert res.config["clip_norm"] is None and res.config["lr"] == 100.0 and res.config["optimizer"] == "sgd"


def test_multi_label_targets_train(digits_small):
    train, val = digits_small

    def multi(ds):
        y = torch.nn.functional.one_hot(ds.targets, 10).float()
        y[:, 0] = torch.maximum(y[:, 0], (ds.targets % 2 == 1).float())  # odd digits also carry label 0
        info = DatasetInfo("multi", 10, 1, 8, multi_label=True)
        return TensorImageDataset(ds.images, y, info, (0.3053,), (0.3760,))

    wf = tiny_wf()
    res = unlearn(wf, multi(train), multi(val), **FAST)
    assert math.isfinite(res.best_objective) and res.steps == 8
    assert all(0.0 <= r["val_acc_r"] <= 1.0 for r in res.history)


@pytest.mark.parametrize("kwargs,match", [
    (dict(chi=0), "chi must be >= 1"), (dict(optimizer="rmsprop"), "optimizer must be 'sgd' or 'adam'"),
    (dict(clip_norm=-1.0), "clip_norm must be positive or None"), (dict(batch_size=1), "batch_size must be >= 2"),
    (dict(lambda1_warmup=2.0), "lambda1_warmup must be"), (dict(resume=True), "out_dir must be set to resume"),
])
def test_bad_arguments_are_clear_errors(digits_small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        unlearn(tiny_wf(), *digits_small, progress=False, **kwargs)


def test_a_plain_model_is_rejected(digits_small):
    with pytest.raises(TypeError, match="wf must be a wfkern.WFModel"):
        unlearn(torch.nn.Linear(2, 2), *digits_small)


def test_vit_family_gets_its_lambda1_default_with_the_reciprocal(digits_small):
    torch.manual_seed(0)
    vit = create_model("vit_t", 10, 1, 8, depth=1, embed_dim=16, num_heads=2).eval()
    wf = wfkern.patch(vit, num_classes=10)
    assert wf.wf_layers()  # the attention qkv projection is wrapped
    res = unlearn(wf, *digits_small, batch_size=64, max_epochs=1, evals_per_epoch=1, progress=False,
                  forget_loss="reciprocal")
    assert res.config["lambda1"] == 100.0 and math.isfinite(res.best_objective)
    assert unlearn(tiny_wf(), *digits_small, batch_size=64, max_epochs=1, evals_per_epoch=1, progress=False,
                   forget_loss="reciprocal").config["lambda1"] == 10.0
    assert unlearn(tiny_wf(), *digits_small, batch_size=64, max_epochs=1, evals_per_epoch=1,
                   progress=False).config["lambda1"] == 1.0  # the margin loss: one λ1 for both families
