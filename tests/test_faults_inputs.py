"""wfkern.unlearn refuses unusable data before it touches the gates (labels out of range, wrong images)."""

from __future__ import annotations

import math

import pytest
import torch

import wfkern
from wfkern.data import DatasetInfo, TensorImageDataset, get_dataset
from wfkern.models import create_model
from wfkern.unlearn import unlearn

FAST = dict(batch_size=64, max_epochs=1, evals_per_epoch=1, progress=False)


@pytest.fixture(scope="module")
def digits_small():
    train = get_dataset("digits", split="train", seed=0)
    val = get_dataset("digits", split="val", seed=0)
    return train.subset(torch.arange(128)), val.subset(torch.arange(64))


def trained_like_wf(seed: int = 0):
    """A patched tiny CNN whose gates hold distinct values (a user's learnt filters) and which is in train mode."""
    torch.manual_seed(seed)
    wf = wfkern.patch(create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)), num_classes=10)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 4)
    return wf.train()


def bits(wf):
    return {k: v.view(torch.int32).clone() for k, v in wf.gates_state_dict().items()}


def assert_unchanged(before, wf):
    after = bits(wf)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def relabel(ds: TensorImageDataset, targets: torch.Tensor, multi_label: bool = False) -> TensorImageDataset:
    info = DatasetInfo(ds.info.name, 10, ds.info.in_chans, ds.info.image_size, multi_label=multi_label)
    return TensorImageDataset(ds.images, targets, info, ds._mean.flatten().tolist(), ds._std.flatten().tolist())


def rgb(ds: TensorImageDataset) -> TensorImageDataset:
    info = DatasetInfo(ds.info.name, 10, 3, ds.info.image_size)
    return TensorImageDataset(ds.images.expand(-1, 3, -1, -1).contiguous(), ds.targets, info, (0.3,) * 3, (0.4,) * 3)


def _with_label(ds, index: int, value: int):
    t = ds.targets.clone()
    t[index] = value
    return relabel(ds, t)


def _multi(ds):
    y = torch.nn.functional.one_hot(ds.targets, 10).float()
    y[:, 0] = torch.maximum(y[:, 0], (ds.targets % 2 == 1).float())
    return y


CASES = {
    "label = Nc": (lambda tr, va: (_with_label(tr, 17, 10), va),
                   r"train_data labels must be in \[0, 10\) \(the model's classes\), got 10 \(sample 17; 1 such"),
    "label < 0": (lambda tr, va: (_with_label(tr, 3, -1), va),
                  r"train_data labels must be in \[0, 10\).*got -1 \(sample 3"),
    "val label": (lambda tr, va: (tr, _with_label(va, 5, 12)), r"val_data labels must be in \[0, 10\).*got 12"),
    "fractional": (lambda tr, va: (relabel(tr, tr.targets.float() + 0.5), va),
                   r"must be integer class indices, got \d+\.5 \(sample 0\)"),
    "3-channel images": (lambda tr, va: (rgb(tr), va),
                         r"train_data must yield images the model can run \(its first conv takes 1-channel images\), "
                         r"got a batch of shape \(2, 3, 8, 8\)"),
    "3-channel val": (lambda tr, va: (tr, rgb(va)), r"val_data must yield images the model can run"),
    "multi-hot width": (lambda tr, va: (relabel(tr, _multi(tr)[:, :9], True), va),
                        r"must be class indices \(N,\) or multi-hot targets \(N, 10\), "
                        r"got torch.float32 of shape \(128, 9\)"),
    "multi-hot value": (lambda tr, va: (relabel(tr, _multi(tr) * 2, True), va),
                        r"must be multi-hot targets in \[0, 1\], got 2.0 \(sample 0, class"),
    "all positive": (lambda tr, va: (relabel(tr, torch.ones(len(tr), 10), True), va),
                     r"must leave at least one class negative in every sample .*sample 0 with all 10 classes"),
    "3-d targets": (lambda tr, va: (relabel(tr, torch.zeros(len(tr), 10, 2), True), va), r"got torch.float32 of shape"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("resume", [False, True])
def test_bad_data_is_refused_before_the_gates_change(tmp_path, digits_small, case, resume):
    make, match = CASES[case]
    train, val = make(*digits_small)
    if resume:  # a resumable run exists: loading its checkpoint must not happen either
        unlearn(trained_like_wf(), *digits_small, out_dir=str(tmp_path), **FAST)
    wf = trained_like_wf()
    before = bits(wf)
    modes = [m.training for m in wf.modules()]
    with pytest.raises(ValueError, match=match) as err:
        unlearn(wf, train, val, out_dir=str(tmp_path) if resume else None, resume=resume, **FAST)
    assert str(err.value).startswith("wfkern.unlearn: ") and "\n" not in str(err.value)
    assert_unchanged(before, wf)  # reset_gates / the checkpoint's gates never ran
    assert [m.training for m in wf.modules()] == modes


def test_a_model_with_other_outputs_is_refused(digits_small):
    torch.manual_seed(0)
    # wrapped in a Sequential, its 5-output head is out of patch()'s sight: unlearn's own check must catch it
    wf = wfkern.patch(torch.nn.Sequential(create_model("small_cnn", 5, 1, 8, widths=(8, 16, 16))), num_classes=10)
    before = bits(wf)
    with pytest.raises(ValueError, match=r"wf must return \(2, 10\) logits for a batch of 2 train_data images, "
                                         r"got \(2, 5\)"):
        unlearn(wf, *digits_small, **FAST)
    assert_unchanged(before, wf)


def test_valid_single_and_multi_label_data_still_train(digits_small):
    train, val = digits_small
    res = unlearn(trained_like_wf(), relabel(train, train.targets.float()), val, **FAST)  # integral float labels
    assert math.isfinite(res.best_objective)
    wf = trained_like_wf()
    res = unlearn(wf, relabel(train, _multi(train), True), relabel(val, _multi(val), True), **FAST)
    assert math.isfinite(res.best_objective) and res.steps == 2
    assert all((p == p).all() for p in wf.gate_parameters())


@pytest.mark.parametrize("device, match", [
    ("cuda", r"wfkern.unlearn: device must be available, got 'cuda' on a machine without a usable CUDA GPU"),
    ("cuda:7", r"wfkern.unlearn: device must be"),
    ("gpu", r"wfkern.unlearn: device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
])
def test_unlearn_on_a_device_this_machine_lacks_is_a_clear_error(digits_small, device, match):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    wf = trained_like_wf()
    before = [p.detach().clone() for p in wf.gate_parameters()]
    with pytest.raises(ValueError, match=match):
        unlearn(wf, *digits_small, device=device, **FAST)
    assert all(torch.equal(a, b) for a, b in zip(before, wf.gate_parameters()))
