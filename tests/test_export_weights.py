"""wfkern export --format safetensors: baked weights load into torchvision / timm in a process without wfkern."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from _export_models import IMAGE, NUM_CLASSES, VIT_KWARGS, inputs, write_checkpoint_and_filters
from wfkern.cli.main import main
from wfkern.export import EXPORT_FORMAT, load_source

pytest.importorskip("timm")

# Runs with wfkern unimportable: only torch, torchvision, timm and safetensors.
NO_WFKERN = textwrap.dedent("""
    import sys
    sys.modules["wfkern"] = None  # any import of wfkern now fails
    import json, timm, torch, torchvision
    from safetensors import safe_open
    from safetensors.torch import load_file
    torch.set_num_threads(1)
    out = {}
    for name, path, build in json.loads(sys.argv[1]):
        model = eval(build).eval()
        model.load_state_dict(load_file(path), strict=True)
        io = load_file(path + ".io")
        with torch.no_grad():
            got = model(io["x"])
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        out[name] = {"diff": float((got - io["want"]).abs().max()), "meta": meta,
                     "wfkern_loaded": "wfkern" in sys.modules and sys.modules["wfkern"] is not None}
    print(json.dumps(out))
""")

BUILDS = {"resnet18": f"torchvision.models.resnet18(num_classes={NUM_CLASSES})",
          "vit_tiny": f"timm.create_model('vit_tiny_patch16_224', num_classes={NUM_CLASSES}, img_size={IMAGE}, "
                      + ", ".join(f"{k}={v!r}" for k, v in VIT_KWARGS.items()) + ")"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{model: (out path, WF model)} written by ``wfkern export --forget cat,7``, with inputs and wfkern's logits."""
    folder = tmp_path_factory.mktemp("weights")
    done = {}
    for name in BUILDS:
        checkpoint, filters, wf = write_checkpoint_and_filters(name, folder)
        out = str(folder / f"{name}_forget.safetensors")
        assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--forget", "cat,7", "--out", out]) == 0
        x = inputs(5)
        with torch.no_grad():
            want = wf.eval()(x, forget=torch.tensor([[3, 7]] * 5))
        save_file({"x": x, "want": want}, out + ".io")
        done[name] = (out, wf, checkpoint, filters)
    return done


def test_plain_weights_load_without_wfkern(exported):
    jobs = [(name, out, BUILDS[name]) for name, (out, *_rest) in exported.items()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", NO_WFKERN, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, wf, _, _) in exported.items():
        assert not result[name]["wfkern_loaded"]
        assert result[name]["diff"] < 1e-5, (name, result[name]["diff"])
        meta = result[name]["meta"]
        record = json.loads(meta["wfkern_export"])
        assert meta["format"] == EXPORT_FORMAT and meta["forgotten"] == "3,7"
        assert record["forgotten"] == [3, 7] and record["forgotten_names"] == ["cat", "horse"]
        assert record["arch"] == {"resnet18": "torchvision:resnet18", "vit_tiny": "timm:vit_tiny_patch16_224"}[name]
        assert record["artifact"] == "weights" and record["num_classes"] == NUM_CLASSES


def test_the_record_names_the_base_and_the_filters(exported):
    import hashlib

    from wfkern.patch import base_fingerprint

    out, wf, checkpoint, filters = exported["resnet18"]
    with safe_open(out, "pt") as f:
        record = json.loads(f.metadata()["wfkern_export"])
    assert record["base_fingerprint"] == base_fingerprint(wf)
    with open(filters, "rb") as f:
        assert record["gates_fingerprint"] == hashlib.sha256(f.read()).hexdigest()
    assert record["image_size"] == IMAGE and record["in_chans"] == 3 and record["dataset"] == "cifar10"


def test_ids_and_names_give_the_same_file(exported, tmp_path):
    out, _, checkpoint, filters = exported["resnet18"]
    again = str(tmp_path / "ids.safetensors")
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--forget", "7, 3,Cat", "--out", again]) == 0
    with safe_open(out, "pt") as a, safe_open(again, "pt") as b:
        assert a.metadata() == b.metadata()
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_python_api_writes_what_the_cli_writes(exported, tmp_path):
    from wfkern.export import export_weights

    out, _, checkpoint, filters = exported["vit_tiny"]
    again = str(tmp_path / "api.safetensors")
    record = export_weights(load_source(checkpoint, filters), torch.tensor([7, 3, 3]), again)
    assert record["forgotten"] == [3, 7]
    with safe_open(out, "pt") as a, safe_open(again, "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_a_grey_input_model_exports_its_inner_architecture(tmp_path):
    """A torchvision model built for 1-channel data sits in wfkern's ChannelAdapter: the file holds the inner
    model's own keys, and the record says how to feed it."""
    import torchvision

    import wfkern
    from _export_models import scramble
    from wfkern.export import export_weights
    from wfkern.models import create_model

    torch.manual_seed(0)
    model = create_model("torchvision:resnet18", NUM_CLASSES, 1, IMAGE).eval()
    checkpoint, filters = str(tmp_path / "grey.safetensors"), str(tmp_path / "grey_filters.safetensors")
    wfkern.save_model(model, checkpoint, arch="torchvision:resnet18", in_chans=1, image_size=IMAGE)
    wf = scramble(wfkern.patch(model, NUM_CLASSES))
    wf.save_gates(filters)
    out = str(tmp_path / "baked.safetensors")
    record = export_weights(load_source(checkpoint, filters), 4, out)
    assert record["channel_adapter"] == {"in_chans": 1, "model_chans": 3}
    from safetensors.torch import load_file

    plain = torchvision.models.resnet18(num_classes=NUM_CLASSES).eval()
    plain.load_state_dict(load_file(out), strict=True)
    x = torch.randn(3, 1, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(plain(x.expand(-1, 3, -1, -1)), wf.eval()(x, forget=4), atol=1e-5, rtol=1e-5)
