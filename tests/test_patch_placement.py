"""patch(gate_mlp=...): where a transformer block's gates sit (qkv only, + the MLP's first layer, every linear; the
default "auto": every linear layer for ViTs, the convs for CNNs)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

import wfkern
from wfkern.layers import WFLinear
from wfkern.models import create_model
from wfkern.patch import gates_layer_names, gates_mlp

NUM_CLASSES = 10


def _timm_vit():
    torch.manual_seed(0)
    model = create_model("vit_t", num_classes=NUM_CLASSES, in_chans=1, image_size=16, depth=2, embed_dim=48,
                         num_heads=3)
    return model.eval(), torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _torchvision_vit():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=NUM_CLASSES)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model.eval(), torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _linear_gates(wf):
    return sorted(".".join(n.split(".")[-2:]) for n, m in wf.wf_layers().items() if isinstance(m, WFLinear))


@pytest.mark.parametrize("build,per_block", [
    (_timm_vit, {False: ["attn.qkv"], True: ["attn.qkv", "mlp.fc1"],
                 "all": ["attn.proj", "attn.qkv", "mlp.fc1", "mlp.fc2"]}),
    (_torchvision_vit, {False: [], True: ["mlp.0"], "all": ["mlp.0", "mlp.3"]}),  # qkv: inside the wrapped MHA
])
def test_gate_mlp_places_the_gates_and_masks_like_bake(build, per_block):
    model, x = build()
    for gate_mlp, names in per_block.items():
        wf = wfkern.patch(model, NUM_CLASSES, gate_mlp=gate_mlp)
        assert _linear_gates(wf) == sorted(names * 2)  # two blocks
        assert gates_mlp(wf.wf_layers()) == gate_mlp  # how the CLI, serve and export patch again
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in wf.gate_parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 3)
            torch.testing.assert_close(wf(x), model(x), atol=0, rtol=0)  # forget nothing: the original
            baked = wfkern.bake(wf, forget=3).eval()
            torch.testing.assert_close(baked(x), wf(x, forget=3), atol=1e-4, rtol=1e-4)
    wf_all, wf_fc1 = (wfkern.patch(model, NUM_CLASSES, gate_mlp=g) for g in ("all", True))
    for wf in (wf_all, wf_fc1):
        with torch.no_grad():
            for p in wf.gate_parameters():
                p.fill_(-3.0)
    with torch.no_grad():  # the extra gates act: closing them all changes more than closing fc1's
        assert not torch.allclose(wf_all(x, forget=3), wf_fc1(x, forget=3), atol=1e-3)


@pytest.mark.parametrize("bad", ["ALL", "fc2", 1, 0, "", 2.0])
def test_gate_mlp_refuses_other_values(bad):
    model, _ = _timm_vit()
    with pytest.raises(ValueError, match=r"^wfkern.patch: gate_mlp must be None \('auto'\), 'qkv', 'fc1', 'all', "
                                         r"False or True, got "):
        wfkern.patch(model, NUM_CLASSES, gate_mlp=bad)


@pytest.mark.parametrize("build,default", [
    (_timm_vit, ["attn.proj", "attn.qkv", "mlp.fc1", "mlp.fc2"]),
    (_torchvision_vit, ["mlp.0", "mlp.3"]),
])
def test_the_default_placement_of_a_vit_is_every_linear_layer(build, default):
    model, _ = build()
    for auto in (None, "auto"):
        wf = wfkern.patch(model, NUM_CLASSES) if auto is None else wfkern.patch(model, NUM_CLASSES, gate_mlp=auto)
        assert _linear_gates(wf) == sorted(default * 2)
        assert gates_mlp(wf.wf_layers()) == "all"
    for name, old in (("qkv", False), ("fc1", True), ("all", "all")):  # the names and the older spellings agree
        assert list(wfkern.patch(model, NUM_CLASSES, gate_mlp=name).wf_layers()) == \
            list(wfkern.patch(model, NUM_CLASSES, gate_mlp=old).wf_layers())
    assert _linear_gates(wfkern.patch(model, NUM_CLASSES, gate_mlp="qkv")) == (["attn.qkv"] * 2 if default[0] ==
                                                                               "attn.proj" else [])


class _CnnWithMlpNames(nn.Module):
    """A CNN whose head is named like a transformer MLP: no attention, so "auto" adds no linear gates."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES))

    def forward(self, x):
        return self.mlp(torch.relu(self.conv(x)))


def test_cnns_keep_their_gates_under_every_default():
    torch.manual_seed(0)
    small = create_model("small_cnn", num_classes=NUM_CLASSES, in_chans=1, image_size=8).eval()
    for model in (small, _CnnWithMlpNames().eval()):
        paper = list(wfkern.patch(model, NUM_CLASSES, gate_mlp=False).wf_layers())
        layers = wfkern.patch(model, NUM_CLASSES).wf_layers()
        assert paper and all(isinstance(m.base, nn.Conv2d) for m in layers.values())
        assert list(wfkern.patch(model, NUM_CLASSES).wf_layers()) == paper
        assert gates_mlp(wfkern.patch(model, NUM_CLASSES).wf_layers()) is False


@pytest.mark.parametrize("placement", [False, True, "all"])
def test_gates_files_of_every_placement_load_into_the_model_they_name(tmp_path, placement):
    """A gates file written with any placement (the paper's qkv-only files included) is patched again as it was
    learnt, whatever patch's default, and gives the same outputs."""
    model, x = _timm_vit()
    wf = wfkern.patch(model, NUM_CLASSES, gate_mlp=placement)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)
    path = tmp_path / "gates.safetensors"
    wf.save_gates(path)
    again = wfkern.patch(model, NUM_CLASSES, gate_mlp=gates_mlp(gates_layer_names(path)))
    wfkern.load_gates(again, path)
    assert list(again.wf_layers()) == list(wf.wf_layers())
    with torch.no_grad():
        torch.testing.assert_close(again(x, forget=[3, 1, -1, 7]), wf(x, forget=[3, 1, -1, 7]), atol=0, rtol=0)
    if placement != "all":  # the default placement differs from such a file's: loading into it is refused
        with pytest.raises((ValueError, KeyError, RuntimeError)):
            wfkern.load_gates(wfkern.patch(model, NUM_CLASSES), path)
