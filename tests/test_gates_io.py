"""Gates files: round trip, metadata checks, corrupt files; a failed load changes nothing."""
from __future__ import annotations

import importlib
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import wfkern
from wfkern.patch import gates_layer_names, read_gates


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
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return wf


def _gates(wf):
    return {k: v.clone() for k, v in wf.gates_state_dict().items()}


def test_gates_round_trip(tmp_path):
    src = _wf(seed=0)
    path = tmp_path / "f.safetensors"
    src.save_gates(str(path), extra_metadata={"epochs": 3})
    dst = _wf(seed=0)
    dst.reset_gates(3.0)
    assert wfkern.load_gates(dst, str(path)) == {"epochs": 3}
    for key, value in src.gates_state_dict().items():
        assert torch.equal(dst.gates_state_dict()[key], value)
    x = torch.randn(3, 1, 6, 6)
    labels = torch.tensor([0, 3, -1])
    torch.testing.assert_close(dst(x, forget=labels), src(x, forget=labels), atol=0, rtol=0)
    _, metadata = read_gates(str(path))
    layers = json.loads(metadata["layers"])
    assert [layer["name"] for layer in layers] == ["conv1", "conv2"]
    assert [layer["bias_gates"] for layer in layers] == [True, False]
    assert read_gates(str(path), tensors=False) == ({}, metadata)  # metadata only
    assert gates_layer_names(str(path)) == ["conv1", "conv2"]
    assert sorted(os.listdir(tmp_path)) == ["f.safetensors"]  # no temporary file or folder left


@pytest.mark.parametrize(
    "other, match",
    [
        (dict(classes=5), "must be for 4 classes, got 5"),
        (dict(width=6), "must match the model's WF layers"),
    ],
)
def test_load_gates_rejects_other_models(tmp_path, other, match):
    path = str(tmp_path / "f.safetensors")
    _wf(seed=1, **other).save_gates(path)
    wf = _wf(seed=0)
    before = _gates(wf)
    with pytest.raises(ValueError, match=match):
        wfkern.load_gates(wf, path)
    assert all(torch.equal(before[k], v) for k, v in _gates(wf).items())


def test_load_gates_checks_base_fingerprint(tmp_path):
    path = str(tmp_path / "f.safetensors")
    _wf(seed=1).save_gates(path)  # same architecture, other base weights
    wf = _wf(seed=0)
    before = _gates(wf)
    with pytest.raises(ValueError, match="different fingerprint"):
        wfkern.load_gates(wf, path)
    assert all(torch.equal(before[k], v) for k, v in _gates(wf).items())
    wfkern.load_gates(wf, path, check_fingerprint=False)
    assert not all(torch.equal(before[k], v) for k, v in _gates(wf).items())


def test_load_gates_rejects_corrupt_files(tmp_path):
    wf = _wf()
    before = _gates(wf)
    good = str(tmp_path / "good.safetensors")
    wf.save_gates(good)
    data = open(good, "rb").read()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not a safetensors file at all",
        "pickle": pickle.dumps({"conv1.gates": torch.zeros(4, 8)}),
    }
    for name, payload in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="must be a safetensors gates file"):
            wfkern.load_gates(wf, str(path))
    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"x": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="must be a wfkern gates file"):
        wfkern.load_gates(wf, foreign)
    with pytest.raises(FileNotFoundError, match="must be an existing gates file"):
        wfkern.load_gates(wf, str(tmp_path / "missing.safetensors"))
    assert all(torch.equal(before[k], v) for k, v in _gates(wf).items())


def test_load_gates_state_dict_is_all_or_nothing():
    wf = _wf()
    before = _gates(wf)
    state = _gates(wf)
    state["conv2.gates"] = torch.zeros(4, 7)
    state["conv1.gates"] = torch.zeros(4, 8)
    with pytest.raises(ValueError, match=r"conv2.gates must have shape \(4, 8\)"):
        wf.load_gates_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in _gates(wf).items())


def test_save_gates_into_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory .* must exist"):
        _wf().save_gates(str(tmp_path / "nope" / "f.safetensors"))


def _bits(wf):
    """The gates' raw bits (bit-identical means the same bytes, -0.0 and NaN payloads included)."""
    return {k: v.view(torch.int32).clone() for k, v in wf.gates_state_dict().items()}


def _assert_bits(before, wf):
    after = _bits(wf)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _rewrite(src, dst, metadata=None, tensors=None):
    """A copy of gates file ``src`` with some metadata / tensors replaced (None values delete a key)."""
    tens, meta = read_gates(str(src))
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    tens.update(tensors or {})
    save_file(tens, str(dst), metadata=meta)
    return str(dst)


@pytest.mark.parametrize("key, value, match", [
    ("extra", "{not json", r"metadata 'extra' must be a JSON object, got '\{not json'"),
    ("extra", "[1, 2]", r"metadata 'extra' must be a JSON object"),
    ("layers", "5", r"metadata 'layers' must be a JSON list of .* layer records, got '5'"),
    ("layers", "[not json", r"metadata 'layers' must be a JSON list"),
    ("layers", '[{"name": 1, "kind": "conv", "channels": 8, "bias_gates": true}]', r"metadata 'layers' must be"),
    ("layers", '[{"name": "conv1", "kind": "conv", "channels": true, "bias_gates": true}]', "metadata 'layers'"),
    ("layers", None, r"metadata 'layers' must be a JSON list .*, got None"),
    ("num_classes", "four", r"metadata 'num_classes' must be a positive integer, got 'four'"),
    ("num_classes", "0", r"metadata 'num_classes' must be a positive integer"),
    ("format_version", "2", r"metadata 'format_version' must be '1' .*, got '2'"),
    ("base_fingerprint", "abc", r"metadata 'base_fingerprint' must be a sha256 hex digest"),
])
def test_malformed_metadata_is_a_one_line_error_and_changes_nothing(tmp_path, key, value, match):
    good = tmp_path / "good.safetensors"
    _wf(seed=0).save_gates(str(good), extra_metadata={"note": "x"})
    bad = _rewrite(good, tmp_path / "bad.safetensors", {key: value})
    wf = _wf(seed=0)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.add_(1.0)  # differs from the file: a copy before the failure would show
    before = _bits(wf)
    for check in (True, False):
        with pytest.raises(ValueError, match=match) as err:
            wfkern.load_gates(wf, bad, check_fingerprint=check)
        message = str(err.value)
        assert "\n" not in message and message.startswith("wfkern.load_gates: ") and bad in message
        _assert_bits(before, wf)


def test_missing_extra_loads_as_empty(tmp_path):
    good = tmp_path / "good.safetensors"
    src = _wf(seed=0)
    src.save_gates(str(good))
    path = _rewrite(good, tmp_path / "old.safetensors", {"extra": None})
    dst = _wf(seed=0)
    assert wfkern.load_gates(dst, path) == {}
    assert all(torch.equal(a, b) for a, b in zip(_gates(src).values(), _gates(dst).values()))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_gates_in_a_file_are_refused(tmp_path, value):
    good = tmp_path / "good.safetensors"
    src = _wf(seed=0)
    src.save_gates(str(good))
    gate = src.gates_state_dict()["conv2.gates"]
    gate[1, 3] = value
    bad = _rewrite(good, tmp_path / "bad.safetensors", tensors={"conv2.gates": gate})
    wf = _wf(seed=0)
    before = _bits(wf)
    with pytest.raises(ValueError, match=r"gates must be finite, got 1 NaN/inf values in 'conv2.gates'"):
        wfkern.load_gates(wf, bad)
    _assert_bits(before, wf)


def test_float64_gates_beyond_float32_range_are_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    _wf(seed=0).save_gates(str(good))
    tens, _ = read_gates(str(good))
    gate = tens["conv1.gates"].double()
    gate[0, 0] = 1e300  # finite in the file, inf once copied into the float32 gates
    bad = _rewrite(good, tmp_path / "bad.safetensors", tensors={"conv1.gates": gate})
    wf = _wf(seed=0)
    before = _bits(wf)
    with pytest.raises(ValueError, match="gates must be finite"):
        wfkern.load_gates(wf, bad)
    _assert_bits(before, wf)


def test_tensor_checks_name_the_file_and_change_nothing(tmp_path):
    good = tmp_path / "good.safetensors"
    _wf(seed=0).save_gates(str(good))
    tens, meta = read_gates(str(good))
    wf = _wf(seed=0)
    before = _bits(wf)
    cases = {
        "int": ({**tens, "conv1.gates": tens["conv1.gates"].long()}, "must be floating point, got torch.int64"),
        "shape": ({**tens, "conv1.gates": tens["conv1.gates"][:, :4].contiguous()}, "must have shape"),
        "missing": ({k: v for k, v in tens.items() if k != "conv1.bias_gates"}, "1 missing"),
        "extra": ({**tens, "conv9.gates": tens["conv1.gates"].clone()}, "1 unexpected"),
    }
    for name, (tensors, match) in cases.items():
        path = str(tmp_path / f"{name}.safetensors")
        save_file(tensors, path, metadata=meta)
        with pytest.raises(ValueError, match=match) as err:
            wfkern.load_gates(wf, path)
        assert path in str(err.value)
        _assert_bits(before, wf)


def test_save_gates_refuses_non_finite_gates_and_bad_extra(tmp_path):
    wf = _wf(seed=0)
    path = tmp_path / "f.safetensors"
    with pytest.raises(TypeError, match="extra_metadata must be JSON-serialisable"):
        wf.save_gates(str(path), extra_metadata={"t": torch.zeros(1)})
    with pytest.raises(TypeError, match="extra_metadata must be a dict or None, got list"):
        wf.save_gates(str(path), extra_metadata=[1, 2])
    with torch.no_grad():
        wf.gate_parameters()[0][0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"gates must be finite, got 1 NaN/inf values in 'conv1.gates'; .*1e4"):
        wf.save_gates(str(path))
    assert os.listdir(tmp_path) == []  # nothing written, no temporary left
    with torch.no_grad():
        wf.gate_parameters()[0][0, 0] = -1e4  # the finite way to close a gate exactly
    wf.save_gates(str(path))
    dst = _wf(seed=0)
    wfkern.load_gates(dst, str(path))
    assert dst.gates_state_dict()["conv1.gates"][0, 0] == -1e4


@pytest.mark.parametrize("init, error, match", [
    (float("nan"), ValueError, "init must be a finite gate logit, got nan"),
    (float("inf"), ValueError, "init must be a finite gate logit, got inf"),
    (-float("inf"), ValueError, "init must be a finite gate logit, got -inf"),
    ("3", TypeError, "init must be a real number .*, got str"),
    (True, TypeError, "init must be a real number .*, got bool"),
    (None, TypeError, "init must be a real number .*, got NoneType"),
])
def test_patch_refuses_a_non_finite_or_non_numeric_init(init, error, match):
    with pytest.raises(error, match=match):
        wfkern.patch(SmallNet(), 4, init=init)


def test_patch_accepts_numeric_inits():
    import numpy as np

    for init in (0, -2.5, np.float32(1.5), torch.tensor(2.0)):
        wf = wfkern.patch(SmallNet(), 4, init=init)
        assert all(bool((p == float(init)).all()) for p in wf.gate_parameters())


@pytest.mark.parametrize("build", ["resnet18", "vit", "root_conv"])
def test_base_fingerprint_is_the_unpatched_models(build):
    """The fingerprint hashes the original state dict (un-patched names), without copying the model."""
    import hashlib

    import torchvision
    from wfkern.patch import base_fingerprint

    torch.manual_seed(0)
    model = {"resnet18": lambda: torchvision.models.resnet18(num_classes=4),
             "vit": lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1,
                                                                 num_heads=2, hidden_dim=8, mlp_dim=8, num_classes=4),
             "root_conv": lambda: torch.nn.Conv2d(3, 4, 3)}[build]().eval()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    wf = wfkern.patch(model, 4)
    assert base_fingerprint(wf) == digest.hexdigest()


def test_method_and_function_forms_are_symmetric(tmp_path):
    src = _wf(seed=0)
    first, second = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    src.save_gates(first, extra_metadata={"run": 1})
    wfkern.save_gates(src, second, extra_metadata={"run": 1})
    (tens_a, meta_a), (tens_b, meta_b) = read_gates(first), read_gates(second)
    assert meta_a == meta_b and tens_a.keys() == tens_b.keys()
    assert all(torch.equal(tens_a[k], tens_b[k]) for k in tens_a)
    dst = _wf(seed=0)
    dst.reset_gates(0.0)
    assert dst.load_gates(first) == {"run": 1}
    assert all(torch.equal(dst.gates_state_dict()[k], v) for k, v in src.gates_state_dict().items())


def _legacy_file(src, path):
    """``src``'s gates written the way wfkern 0.1 wrote them: format wfkern-filters, keys <layer>.alpha_w/_b."""
    tens, meta = read_gates(src)
    legacy = {k.replace(".bias_gates", ".alpha_b").replace(".gates", ".alpha_w"): v for k, v in tens.items()}
    assert set(legacy) == {"conv1.alpha_w", "conv1.alpha_b", "conv2.alpha_w"}
    save_file(legacy, path, metadata={**meta, "format": "wfkern-filters"})
    return path


def test_files_and_states_of_wfkern_0_1_keep_loading(tmp_path):
    src = _wf(seed=0)
    src.save_gates(str(tmp_path / "new.safetensors"))
    legacy = _legacy_file(str(tmp_path / "new.safetensors"), str(tmp_path / "old.safetensors"))
    dst = _wf(seed=0)
    dst.reset_gates(0.0)
    wfkern.load_gates(dst, legacy)
    assert _gates(dst).keys() == _gates(src).keys()
    assert all(torch.equal(_gates(dst)[k], v) for k, v in _gates(src).items())
    assert gates_layer_names(legacy) == ["conv1", "conv2"]
    # an untraining state saved by 0.1 holds its gates under the old keys too
    dst.reset_gates(0.0)
    dst.load_gates_state_dict({k.replace(".bias_gates", ".alpha_b").replace(".gates", ".alpha_w"): v
                               for k, v in _gates(src).items()})
    assert all(torch.equal(_gates(dst)[k], v) for k, v in _gates(src).items())


@pytest.mark.parametrize("old, new, args", [
    ("alpha_parameters", "gate_parameters", ()),
    ("filters_state_dict", "gates_state_dict", ()),
    ("reset_alphas", "reset_gates", (1.5,)),
])
def test_deprecated_method_names_warn_and_delegate(old, new, args):
    wf, twin = _wf(seed=0), _wf(seed=0)
    with pytest.warns(DeprecationWarning, match=rf"WFModel\.{old} is deprecated .* use WFModel\.{new}"):
        got = getattr(wf, old)(*args)
    want = getattr(twin, new)(*args)
    if isinstance(want, dict):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    elif isinstance(want, list):
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert all(torch.equal(_gates(wf)[k], v) for k, v in _gates(twin).items())


def test_deprecated_save_and_load_names_warn_and_delegate(tmp_path):
    patch_pkg = importlib.import_module("wfkern.patch")  # wfkern.patch the attribute is the function
    src, path = _wf(seed=0), str(tmp_path / "g.safetensors")
    with pytest.warns(DeprecationWarning, match=r"WFModel\.save_filters is deprecated .* use WFModel\.save_gates"):
        src.save_filters(path)
    with pytest.warns(DeprecationWarning, match=r"wfkern\.patch\.save_filters is deprecated"):
        patch_pkg.save_filters(src, str(tmp_path / "h.safetensors"))
    dst = _wf(seed=0)
    dst.reset_gates(0.0)
    with pytest.warns(DeprecationWarning, match=r"wfkern\.load_filters is deprecated .* use wfkern\.load_gates"):
        wfkern.load_filters(dst, path)
    assert all(torch.equal(_gates(dst)[k], v) for k, v in _gates(src).items())
    with pytest.warns(DeprecationWarning, match="read_filters is deprecated"):
        assert patch_pkg.read_filters(path, tensors=False)[1] == read_gates(path, tensors=False)[1]
    with pytest.warns(DeprecationWarning, match="filters_layer_names is deprecated"):
        assert patch_pkg.filters_layer_names(path) == ["conv1", "conv2"]
    with pytest.warns(DeprecationWarning, match=r"WFModel\.load_filters_state_dict is deprecated"):
        dst.load_filters_state_dict(_gates(src))
