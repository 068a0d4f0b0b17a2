"""WF wrappers are drop-ins for what they replace: callers that read the wrapped layer's attributes."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import wfkern


def _scramble(wf, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)


class _Encoder(nn.Module):
    def __init__(self, batch_first: bool, layers: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=batch_first)
        self.body = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False) if layers > 1 else layer
        self.batch_first = batch_first

    def forward(self, x):
        out = self.body(x if self.batch_first else x.transpose(0, 1))
        return (out if self.batch_first else out.transpose(0, 1)).mean(1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("grad", [False, True])
def test_torch_transformer_layers_take_wrapped_attention(batch_first, layers, grad):
    """nn.TransformerEncoderLayer reads batch_first & co.; its fused fast path must never skip the gates."""
    torch.manual_seed(0)
    model = _Encoder(batch_first, layers).eval()
    wf = wfkern.patch(model, 4)
    # The promise is bit for bit against the original as patch leaves it: frozen. (torch picks other
    # kernels for weights that require grad: its fused encoder path, matmul folding of a transposed input.)
    model.requires_grad_(False)
    _scramble(wf)
    x = torch.randn(3, 5, 8)
    with torch.set_grad_enabled(grad):
        assert torch.equal(wf(x), model(x))  # no labels: the original modules
        masked = wf(x, forget=torch.tensor([2, -1, 0]))
        for b, cls in ((0, 2), (2, 0)):
            baked = wfkern.bake(wf, forget=cls).eval()
            torch.testing.assert_close(masked[b], baked(x)[b], atol=1e-5, rtol=1e-5)
        # A masked batch runs nn.MultiheadAttention's math explicitly: its -1 rows to float rounding.
        torch.testing.assert_close(masked[1], model(x)[1], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(masked[0], model(x)[0], atol=1e-3)


def test_wrapped_attention_exposes_what_it_wraps():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    wf = wfkern.patch(nn.Sequential(mha), 3)
    wrapped = wf.wf_layers()["0"]
    for name in ("batch_first", "embed_dim", "num_heads", "dropout", "in_proj_weight", "in_proj_bias", "out_proj"):
        assert getattr(wrapped, name) is getattr(wrapped.base, name) or getattr(wrapped, name) == getattr(wrapped.base, name)
    assert wrapped._qkv_same_embed_dim
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute


def test_torchvision_encoder_block_and_timm_block():
    from torchvision.models.vision_transformer import EncoderBlock

    torch.manual_seed(0)
    blocks = [EncoderBlock(num_heads=2, hidden_dim=8, mlp_dim=16, dropout=0.0, attention_dropout=0.0)]
    timm = pytest.importorskip("timm")
    blocks.append(timm.models.vision_transformer.Block(dim=8, num_heads=2))
    x = torch.randn(3, 5, 8)
    for block in blocks:
        model = nn.Sequential(block).eval()
        wf = wfkern.patch(model, 4)
        _scramble(wf)
        with torch.no_grad():
            assert torch.equal(wf(x), model(x))
            masked = wf(x, forget=torch.tensor([1, -1, 3]))
            torch.testing.assert_close(masked[0], wfkern.bake(wf, forget=1).eval()(x)[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(masked[1], model(x)[1])


def test_unbatched_input_with_an_int_label_is_a_clear_error():
    model = torchvision.models.resnet18(num_classes=10).eval()
    wf = wfkern.patch(model, 10)
    with pytest.raises(ValueError, match=r"unbatched input\? call the model on x\[None\]"):
        wf(torch.randn(3, 32, 32), forget=3)


def test_a_wf_layer_called_on_its_own_takes_labels():
    """The labels' path is explicit: a layer alone takes forget=; inside a WFModel the model's apply."""
    from wfkern.ops import mask_epilogue_ref

    torch.manual_seed(0)
    wf = wfkern.patch(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 4), nn.MultiheadAttention(4, 2, batch_first=True)), 5,
                      include=lambda name, m: True)
    _scramble(wf)
    conv = wf.model[0]
    x = torch.randn(2, 3, 6, 6)
    labels = torch.tensor([3, -1])
    y = conv.base(x)
    torch.testing.assert_close(conv(x, forget=labels),
                               mask_epilogue_ref(y, conv.alpha_w, labels, conv.alpha_b, conv.base.bias, 1))
    assert torch.equal(conv(x), y)
    mha = wf.model[2]
    q = torch.randn(2, 3, 4)
    masked, _ = mha(q, q, q, forget=labels)
    with torch.no_grad():
        baked = wfkern.bake(wf, forget=3)[2]
        torch.testing.assert_close(masked[0], baked(q, q, q)[0][0], atol=1e-5, rtol=1e-5)
