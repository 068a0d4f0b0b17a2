"""A checkpoint's metadata is data, not instructions: only the options a registry entry declares, with
their types and bounds, reach a model builder; no path is ever taken from it; errors name the file and the key."""

from __future__ import annotations

import json

import pytest
import torch

from wfkern.cli.main import main
from wfkern.models import create_model
from wfkern.models.registry import MAX_CHANNELS, MAX_CLASSES, ModelArgError, Param, check_model_args, register_model
from wfkern.train import ModelConfig, load_checkpoint, read_checkpoint_config, save_checkpoint

BASE = {"model": "small_cnn", "num_classes": 10, "in_chans": 1, "image_size": 8,
        "model_kwargs": {"widths": [8, 16, 16]}, "dataset": "digits", "split_seed": 0, "extra": {}}


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def crafted(tmp_path, state, meta, name="crafted.safetensors") -> str:
    """A checkpoint whose weights are fine and whose metadata is whatever an attacker wrote."""
    from safetensors.torch import save_file

    path = tmp_path / name
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(state, str(path), metadata={"format": "wfkern.model/1", "wfkern": text})
    return str(path)


def test_the_genuine_metadata_loads(tmp_path, state):
    model, cfg = load_checkpoint(crafted(tmp_path, state, BASE))
    assert cfg == ModelConfig(**BASE) and isinstance(model, torch.nn.Module)


BAD = [
    ({"num_classes": 1e12}, "num_classes", "must be an integer"),
    ({"num_classes": 10**12}, "num_classes", f"<= {MAX_CLASSES}"),
    ({"num_classes": 0}, "num_classes", "must be >= 1"),
    ({"in_chans": 65}, "in_chans", f"<= {MAX_CHANNELS}"),
    ({"in_chans": True}, "in_chans", "must be an integer"),
    ({"image_size": 10**6}, "image_size", "<= 4096"),
    ({"image_size": "8"}, "image_size", "must be an integer"),
    ({"model": 3}, "model", "must be a string"),
    ({"model": "nope"}, "model", "must be one of"),
    ({"model": "timm:local-dir:/etc"}, "model", "no path"),
    ({"model": "timm:../../etc/passwd"}, "model", "no path"),
    ({"model": "torchvision:hf-hub:x/y"}, "model", "no path"),
    ({"model_kwargs": []}, "model_kwargs", "must be a JSON object"),
    ({"model_kwargs": {"widths": "abc"}}, "model_kwargs.widths", "must be a list of 1 to 32 integers"),
    ({"model_kwargs": {"widths": [8, 16.5, 16]}}, "model_kwargs.widths", "must be a list"),
    ({"model_kwargs": {"widths": [8, 10**9, 16]}}, "model_kwargs.widths", "<= 4096"),
    ({"model_kwargs": {"widths": [8, 16, 16], "bogus": 1}}, "model_kwargs.bogus", "must be an option of 'small_cnn'"),
    ({"model": "timm:resnet18", "model_kwargs": {"checkpoint_path": "/etc/passwd"}},
     "model_kwargs.checkpoint_path", "must be an option of 'timm:resnet18'"),
    ({"model": "vit_t", "model_kwargs": {"pretrained_cfg_overlay": {"file": "/etc/passwd"}}},
     "model_kwargs.pretrained_cfg_overlay", "must be an option of 'vit_t'"),
    ({"model": "torchvision:resnet18", "model_kwargs": {"weights": "/etc/passwd"}}, "model_kwargs.weights",
     "must be an option of"),
    ({"split_seed": "0"}, "split_seed", "must be an integer"),
    ({"dataset": ["digits"]}, "dataset", "must be a string"),
    ({"extra": {"epochs": -3}}, "extra.epochs", "must be an integer >= 1"),
    ({"extra": []}, "extra", "must be a JSON object"),
    ({"evil": 1}, "evil", "must be a known key"),
]


@pytest.mark.parametrize("change,key,match", BAD)
def test_crafted_metadata_is_one_clear_error_naming_file_and_key(tmp_path, state, change, key, match):
    path = crafted(tmp_path, state, {**BASE, **change})
    for read in (read_checkpoint_config, load_checkpoint):
        with pytest.raises(ValueError) as e:
            read(path)
        msg = str(e.value)
        assert msg.startswith("wfkern.load_checkpoint: ") and len(msg.splitlines()) == 1, msg
        assert f"metadata key {key!r}" in msg and repr(path) in msg and match in msg, msg


@pytest.mark.parametrize("meta,match", [
    ("[1, 2]", "must be a JSON object, got a JSON list"), ("{not json", "must be JSON"),
    (json.dumps({k: v for k, v in BASE.items() if k != "model"}), "metadata key 'model'"),
])
def test_malformed_metadata(tmp_path, state, meta, match):
    path = crafted(tmp_path, state, meta)
    with pytest.raises(ValueError, match="wfkern.load_checkpoint: ") as e:
        load_checkpoint(path)
    assert match in str(e.value) and repr(path) in str(e.value)


def test_metadata_never_makes_timm_open_a_file(tmp_path, state, monkeypatch):
    import timm

    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: calls.append(kw) or torch.nn.Linear(1, 1))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not for timm")
    for kwargs in ({"checkpoint_path": str(secret)}, {"pretrained": True}, {"pretrained_cfg_overlay": {"file": str(secret)}}):
        path = crafted(tmp_path, state, {**BASE, "model": "timm:resnet18", "model_kwargs": kwargs})
        with pytest.raises(ValueError, match="must be an option of"):
            load_checkpoint(path)
    assert calls == []  # timm was never asked to build anything
    from wfkern.models.external import create_timm, create_torchvision

    with pytest.raises(ValueError, match="must not load weights or files"):  # the builders refuse them too
        create_timm("resnet18", 10, 3, 32, checkpoint_path=str(secret))
    with pytest.raises(ValueError, match="no path or scheme"):
        create_torchvision("../resnet18", 10, 3, 32)
    assert calls == []


def test_huge_declared_sizes_fail_before_memory_is_allocated(tmp_path, state):
    # 32 layers of 4096 filters would take ~19 GB if built for real; the shapes are compared on the meta device.
    path = crafted(tmp_path, state, {**BASE, "model_kwargs": {"widths": [4096] * 32}})
    with pytest.raises(ValueError, match="weights must match model 'small_cnn', got a mismatch: size mismatch"):
        load_checkpoint(path)


def test_cli_prints_one_line_for_a_crafted_checkpoint(tmp_path, state, capsys):
    path = crafted(tmp_path, state, {**BASE, "num_classes": 1e12})
    rc = main(["unlearn", "--checkpoint", path, "--out-dir", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "metadata key 'num_classes'" in err[0] and path in err[0], err


def test_save_refuses_a_config_that_would_not_load(tmp_path):
    model = create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16))
    with pytest.raises(ValueError, match="wfkern.save_checkpoint: config.model_kwargs.bogus must be an option"):
        save_checkpoint(str(tmp_path / "m.safetensors"), model, ModelConfig("small_cnn", 10, 1, 8, {"bogus": 1}))
    with pytest.raises(ValueError, match="wfkern.save_checkpoint: config.num_classes must be >= 1"):
        save_checkpoint(str(tmp_path / "m.safetensors"), model, ModelConfig("small_cnn", 0, 1, 8))
    assert not (tmp_path / "m.safetensors").exists()


def test_registry_declares_types_and_bounds():
    assert check_model_args("small_cnn", kwargs={"widths": [8, 16]}) == {"widths": (8, 16)}
    for kwargs, key in (({"widths": [0]}, "widths"), ({"widths": [True]}, "widths"), ({"hidden": 2.5}, "hidden"),
                        ({"width": 8}, "width")):
        with pytest.raises(ModelArgError) as e:
            check_model_args("small_vgg", kwargs=kwargs)
        assert e.value.key == key and e.value.is_option
    with pytest.raises(ValueError, match="wfkern.create_model: num_classes must be >= 1 and <= 100000"):
        create_model("small_cnn", num_classes=2.0)
    with pytest.raises(ValueError, match="wfkern.create_model: options must fit model 'timm:resnet18'"):
        create_model("timm:resnet18", 10, 3, 32, depth=3)  # declared for ViTs, refused by a ResNet: one clear error


def test_register_model_declares_its_options(monkeypatch):
    import wfkern.models.registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry as it was
    register_model("_test_lin", lambda nc, c, s, **kw: torch.nn.Linear(c * s * s, nc, **kw), {"bias": Param("bool")})
    assert create_model("_test_lin", 3, 1, 2, bias=False).bias is None
    with pytest.raises(ModelArgError, match="bias must be true or false, got 0"):
        create_model("_test_lin", 3, 1, 2, bias=0)
    register_model("_test_plain", lambda nc, c, s: torch.nn.Linear(c * s * s, nc))
    with pytest.raises(ModelArgError, match=r"be an option of '_test_plain' \(none\)"):
        create_model("_test_plain", 3, 1, 2, device="cuda")
