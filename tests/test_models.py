"""wfkern.models: every registered architecture builds (random init), runs, and patches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wfkern
from wfkern.models import create_model, list_models, model_family


@pytest.mark.parametrize("name,chans,size", [
    ("small_cnn", 1, 8), ("small_vgg", 1, 8), ("resnet18", 1, 28), ("resnet18", 3, 32), ("vgg16", 3, 32),
    ("vgg16", 1, 8), ("vit_t", 3, 32), ("vit_s", 1, 28), ("timm:resnet18", 1, 16), ("torchvision:resnet18", 1, 32),
    ("tv:mobilenet_v3_small", 3, 32),
])
def test_registry_models_map_images_to_logits(name, chans, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_vit_uses_the_small_image_size_and_patch():
    vit = create_model("vit_t", 10, 3, 32)
    assert vit.patch_embed.img_size == (32, 32) and vit.patch_embed.patch_size == (4, 4)
    assert model_family("vit_t") == "vit" and model_family("timm:vit_small_patch16_224") == "vit"
    assert model_family("resnet18") == "cnn"


def test_small_cnn_widths_and_patch_wraps_every_conv():
    m = create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16))
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    assert [mod.out_channels for mod in m.modules() if isinstance(mod, nn.Conv2d)] == [8, 16, 16]
    wf = wfkern.patch(m.eval(), num_classes=10)
    assert sorted(wf.wf_layers()) == sorted(convs)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(wf(x), m(x))


@pytest.mark.parametrize("name", ["nope", "timm:not_a_model", "torchvision:not_a_model"])
def test_unknown_models_are_clear_errors(name):
    with pytest.raises(ValueError, match="wfkern.create_model: name must be"):
        create_model(name)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="must be >= 1"):
        create_model("small_cnn", num_classes=0)
    assert "small_cnn" in list_models() and "resnet18" in list_models()
