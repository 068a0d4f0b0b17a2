"""patch(gate_mlp=...): where a transformer block's gates sit (qkv only, + the MLP's first layer, every linear)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

import wfkern
from wfkern.layers import WFLinear
from wfkern.models import create_model
from wfkern.patch import gates_mlp

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


@pytest.mark.parametrize("bad", ["fc1", "ALL", 1, None])
def test_gate_mlp_refuses_other_values(bad):
    model, _ = _timm_vit()
    with pytest.raises(ValueError, match=r"^wfkern.patch: gate_mlp must be False, True or 'all', got "):
        wfkern.patch(model, NUM_CLASSES, gate_mlp=bad)
