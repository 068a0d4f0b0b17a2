"""Filters files: round trip, metadata checks, corrupt files; a failed load changes nothing."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import wfkern
from wfkern.patch import read_filters


class SmallNet(nn.Module):
    def __init__(self, width=8, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def _wf(seed=0, **kw):
    torch.manual_seed(seed)
    wf = wfkern.patch(SmallNet(**kw), kw.get("classes", 4))
    gen = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for p in wf.alpha_parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return wf


def _alphas(wf):
    return {k: v.clone() for k, v in wf.filters_state_dict().items()}


def test_filters_round_trip(tmp_path):
    src = _wf(seed=0)
    path = tmp_path / "f.safetensors"
    src.save_filters(str(path), extra_metadata={"epochs": 3})
    dst = _wf(seed=0)
    dst.reset_alphas(3.0)
    assert wfkern.load_filters(dst, str(path)) == {"epochs": 3}
    for key, value in src.filters_state_dict().items():
        assert torch.equal(dst.filters_state_dict()[key], value)
    x = torch.randn(3, 1, 6, 6)
    labels = torch.tensor([0, 3, -1])
    torch.testing.assert_close(dst(x, forget=labels), src(x, forget=labels), atol=0, rtol=0)
    _, metadata = read_filters(str(path))
    layers = json.loads(metadata["layers"])
    assert [layer["name"] for layer in layers] == ["conv1", "conv2"]
    assert [layer["bias_gates"] for layer in layers] == [True, False]
    assert not any(name.startswith(".tmp") for name in os.listdir(tmp_path))


@pytest.mark.parametrize(
    "other, match",
    [
        (dict(classes=5), "must be for 4 classes, got 5"),
        (dict(width=6), "must match the model's WF layers"),
    ],
)
def test_load_filters_rejects_other_models(tmp_path, other, match):
    path = str(tmp_path / "f.safetensors")
    _wf(seed=1, **other).save_filters(path)
    wf = _wf(seed=0)
    before = _alphas(wf)
    with pytest.raises(ValueError, match=match):
        wfkern.load_filters(wf, path)
    assert all(torch.equal(before[k], v) for k, v in _alphas(wf).items())


def test_load_filters_checks_base_fingerprint(tmp_path):
    path = str(tmp_path / "f.safetensors")
    _wf(seed=1).save_filters(path)  # same architecture, other base weights
    wf = _wf(seed=0)
    before = _alphas(wf)
    with pytest.raises(ValueError, match="different fingerprint"):
        wfkern.load_filters(wf, path)
    assert all(torch.equal(before[k], v) for k, v in _alphas(wf).items())
    wfkern.load_filters(wf, path, check_fingerprint=False)
    assert not all(torch.equal(before[k], v) for k, v in _alphas(wf).items())


def test_load_filters_rejects_corrupt_files(tmp_path):
    wf = _wf()
    before = _alphas(wf)
    good = str(tmp_path / "good.safetensors")
    wf.save_filters(good)
    data = open(good, "rb").read()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not a safetensors file at all",
        "pickle": pickle.dumps({"conv1.alpha_w": torch.zeros(4, 8)}),
    }
    for name, payload in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="must be a safetensors filters file"):
            wfkern.load_filters(wf, str(path))
    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"x": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="must be a wfkern filters file"):
        wfkern.load_filters(wf, foreign)
    with pytest.raises(FileNotFoundError, match="must be an existing filters file"):
        wfkern.load_filters(wf, str(tmp_path / "missing.safetensors"))
    assert all(torch.equal(before[k], v) for k, v in _alphas(wf).items())


def test_load_filters_state_dict_is_all_or_nothing():
    wf = _wf()
    before = _alphas(wf)
    state = _alphas(wf)
    state["conv2.alpha_w"] = torch.zeros(4, 7)
    state["conv1.alpha_w"] = torch.zeros(4, 8)
    with pytest.raises(ValueError, match=r"conv2.alpha_w must have shape \(4, 8\)"):
        wf.load_filters_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in _alphas(wf).items())


def test_save_filters_into_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory .* must exist"):
        _wf().save_filters(str(tmp_path / "nope" / "f.safetensors"))
