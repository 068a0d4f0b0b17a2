"""wfkern.save_model / wfkern.load_model: any module the registry rebuilds is saved with how to rebuild it, and
comes back computing the same logits; a module the description cannot express is refused before anything is
written. Preprocessing recorded in a checkpoint reaches the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import wfkern
from wfkern.data import Preprocess, get_dataset
from wfkern.data.imagefolder import image_transform
from wfkern.train import read_checkpoint_config

X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@torch.no_grad()
def test_torchvision_resnet_round_trip(resnet, tmp_path):
    path = str(tmp_path / "r.safetensors")
    resnet.train()  # the saved module's modes are left as they were (the check runs in eval mode)
    cfg = wfkern.save_model(resnet, path, arch="torchvision:resnet18", image_size=32, dataset="cifar10",
                            preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert resnet.training and all(m.training for m in resnet.modules())
    resnet.eval()
    assert (cfg.num_classes, cfg.in_chans, cfg.image_size, cfg.dataset) == (10, 3, 32, "cifar10")  # inferred
    assert read_checkpoint_config(path) == cfg and cfg.preprocess == {"mean": [0.5] * 3, "std": [0.5] * 3}
    model = wfkern.load_model(path)
    assert type(model) is type(resnet) and not model.training
    assert torch.equal(model(X32), resnet(X32))


@torch.no_grad()
def test_timm_vit_sizes_are_read_from_the_module(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=7, depth=2).eval()
    path = str(tmp_path / "v.safetensors")
    cfg = wfkern.save_model(vit, path, arch="timm:vit_tiny_patch16_224")
    assert (cfg.num_classes, cfg.in_chans, cfg.image_size) == (7, 3, 32)
    assert cfg.model_kwargs["patch_size"] == 16 and cfg.model_kwargs["depth"] == 2
    assert cfg.model_kwargs["embed_dim"] == 192 and cfg.model_kwargs["num_heads"] == 3
    assert torch.equal(wfkern.load_model(path)(X32), vit(X32))


def test_modules_it_cannot_rebuild_are_refused(resnet, tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match=r"wfkern.save_model: model must be what 'torchvision:resnet34' rebuilds "
                                         r"with its defaults \(10 classes, 3 channels, 32 px\), got \d+ keys the "
                                         r"module lacks \(layer1.2.conv1.weight"):
        wfkern.save_model(resnet, str(path), arch="torchvision:resnet34", image_size=32)

    class Custom(torchvision.models.ResNet):
        pass

    custom = Custom(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10)
    with pytest.raises(ValueError, match="model must be the class 'torchvision:resnet18' builds "
                                         r"\(torchvision.models.resnet.ResNet\), got .*Custom"):
        wfkern.save_model(custom, str(path), arch="torchvision:resnet18", image_size=32)
    other = torchvision.models.resnet18(num_classes=10).eval()
    other.load_state_dict(resnet.state_dict())
    other.avgpool = nn.AdaptiveMaxPool2d(1)  # no weights: only the logits show it
    with pytest.raises(ValueError, match="model must compute what 'torchvision:resnet18' rebuilt from its weights "
                                         "computes, got other logits"):
        wfkern.save_model(other, str(path), arch="torchvision:resnet18", image_size=64)  # 2x2 before the pool
    with pytest.raises(ValueError, match=r"num_classes must be the module's output width \(10\), got 5"):
        wfkern.save_model(resnet, str(path), arch="torchvision:resnet18", num_classes=5, image_size=32)
    with pytest.raises(ValueError, match="arch must be one of"):
        wfkern.save_model(resnet, str(path), arch="resnet9000")
    with pytest.raises(ValueError, match=r"preprocess.std must be a list of 3 finite numbers > 0"):
        wfkern.save_model(resnet, str(path), arch="torchvision:resnet18", image_size=32, preprocess={"std": [0, 1, 1]})
    with pytest.raises(TypeError, match="model must be a plain classifier, got a WFModel"):
        wfkern.save_model(wfkern.patch(resnet, num_classes=10), str(path), arch="torchvision:resnet18")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got OrderedDict"):
        wfkern.save_model(resnet.state_dict(), str(path), arch="torchvision:resnet18")
    assert not path.exists()  # nothing written by any refusal


def test_a_refused_module_keeps_its_modes(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).train()
    model.layer1.eval()  # a mixed state: every module's own mode comes back, not one for all
    modes = {name: m.training for name, m in model.named_modules()}
    with pytest.raises(ValueError, match=r"num_classes must be the module's output width \(10\), got 5"):
        wfkern.save_model(model, str(tmp_path / "x.safetensors"), arch="torchvision:resnet18", num_classes=5,
                          image_size=32)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert modes["layer1"] is False and modes["layer2"] is True and not (tmp_path / "x.safetensors").exists()


def test_preprocessing_reaches_the_data(tmp_path):
    plain = get_dataset("digits", split="test")
    raw = get_dataset("digits", split="test", preprocess={"mean": [0.0], "std": [1.0]})
    x, _ = plain.get_batch(torch.arange(5))
    r, _ = raw.get_batch(torch.arange(5))
    assert r.min() >= 0 and r.max() <= 1 and torch.allclose(x, (r - 0.3053) / 0.3760, atol=1e-6)
    with pytest.raises(ValueError, match=r"preprocess.mean must be a list of 1 finite numbers"):
        get_dataset("digits", split="test", preprocess={"mean": [0.5, 0.5, 0.5]})
    from PIL import Image

    img = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3) % 251)
    t = image_transform(16, Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.5, interpolation="bicubic"))
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert t.transforms[0].size == 32 and t.transforms[0].interpolation.value == "bicubic"
    out = t(img)
    assert out.shape == (3, 16, 16) and out.min() >= -1 and out.max() <= 1
    # ImageFolder datasets built through the registry take it as well; "imagefolder:<tree>" (info.name) resolves.
    root = tmp_path / "tree"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            img.save(root / c / f"{i}.png")
    ds = get_dataset("imagefolder:tree", root=str(root), split="train", image_size=16,
                     preprocess={"crop_pct": 0.5, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3})
    assert torch.equal(ds[0][0], out)
