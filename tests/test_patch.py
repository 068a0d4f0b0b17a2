"""wfkern.patch on real architectures (random init): exactness, per-sample forgetting, freezing, compile."""
from __future__ import annotations

import collections
import functools

import pytest
import torch
import torchvision
from torch import nn

import wfkern
from wfkern.layers import WFConv2d, WFLinear, WFMultiheadAttention
from wfkern.ops import _load

timm = pytest.importorskip("timm")

NUM_CLASSES = 10


def _resnet18():
    return torchvision.models.resnet18(num_classes=NUM_CLASSES), (3, 32, 32)


def _resnet50():
    return torchvision.models.resnet50(num_classes=NUM_CLASSES), (3, 32, 32)


def _vgg16():
    return torchvision.models.vgg16(num_classes=NUM_CLASSES), (3, 32, 32)


def _vit_b_16():
    model = torchvision.models.vit_b_16(num_classes=NUM_CLASSES, image_size=32)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model, (3, 32, 32)


def _vit_tiny():
    return timm.create_model("vit_tiny_patch16_224", num_classes=NUM_CLASSES, img_size=32), (3, 32, 32)


def _vit_small():
    return timm.create_model("vit_small_patch16_224", num_classes=NUM_CLASSES, img_size=32), (3, 32, 32)


MODELS = {"resnet18": _resnet18, "resnet50": _resnet50, "vgg16": _vgg16, "vit_b_16": _vit_b_16,
          "vit_tiny": _vit_tiny, "vit_small": _vit_small}
EXPECTED_KIND = {"resnet18": WFConv2d, "resnet50": WFConv2d, "vgg16": WFConv2d, "vit_b_16": WFMultiheadAttention,
                 "vit_tiny": WFLinear, "vit_small": WFLinear}


def _build(name, seed=0):
    torch.manual_seed(seed)
    model, shape = MODELS[name]()
    return model.eval(), torch.randn(4, *shape, generator=torch.Generator().manual_seed(seed + 1))


def _scramble_alphas(wf, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)


@functools.lru_cache(maxsize=None)
def _patched(name):
    """(original model, input batch, WF model with scrambled gates), built once per architecture."""
    model, x = _build(name)
    wf = wfkern.patch(model, NUM_CLASSES)
    _scramble_alphas(wf)
    return model, x, wf


MIXED = torch.tensor([3, -1, 0, 9])


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_wraps_every_conv_or_attention_projection(name):
    model, _, wf = _patched(name)
    expected = sum(isinstance(m, nn.Conv2d) for m in model.modules()) + sum(
        isinstance(m, (nn.MultiheadAttention,)) or n.endswith(".qkv") for n, m in model.named_modules()
    ) + sum(  # a ViT's default placement: every linear layer of each block
        isinstance(m, nn.Linear) and n.endswith(("mlp.fc1", "mlp.fc2", "mlp.0", "mlp.3", "attn.proj"))
        for n, m in model.named_modules()
    )
    layers = wf.wf_layers()
    assert len(layers) == expected > 0
    assert any(isinstance(layer, EXPECTED_KIND[name]) for layer in layers.values())


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_trains_only_the_gates(name):
    _, _, wf = _patched(name)
    trainable = [p for p in wf.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in wf.gate_parameters()}


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_forgetting_nothing_is_the_original_bit_for_bit(name):
    model, x, wf = _patched(name)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(wf(x), plain)
        assert torch.equal(wf(x, forget=-1), plain)
        assert torch.equal(wf(x, forget=torch.full((4,), -1)), plain)


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_mixed_batch_equals_each_sample_alone(name):
    model, x, wf = _patched(name)
    with torch.no_grad():
        mixed = wf(x, forget=MIXED)
        alone = torch.cat([wf(x[i:i + 1], forget=MIXED[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(mixed, alone, atol=1e-4, rtol=1e-4)
        plain = model(x)
        torch.testing.assert_close(mixed[1], plain[1], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(mixed[0], plain[0], atol=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_baked_model_equals_the_masked_forward(name):
    _, x, wf = _patched(name)
    with torch.no_grad():
        for cls in (3, 9):
            baked = wfkern.bake(wf, forget=cls).eval()
            assert not any(isinstance(m, wfkern.layers.WFLayer) for m in baked.modules())
            torch.testing.assert_close(baked(x), wf(x, forget=cls), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_kernels_match_the_reference_at_model_level(name):
    _, x, wf = _patched(name)
    with torch.no_grad():
        mixed = wf(x, forget=MIXED)
        with wfkern.use_reference():
            torch.testing.assert_close(wf(x, forget=MIXED), mixed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "vit_b_16"])
def test_patch_train_mode_gives_alpha_grads(name):
    model, x = _build(name)
    wf = wfkern.patch(model, NUM_CLASSES).train()
    out = wf(x, forget=torch.tensor([[1, 2], [0, -1], [-1, -1], [5, 5]]))
    out.sum().backward()
    grads = [p.grad for p in wf.gate_parameters()]
    assert all(g is not None for g in grads)
    # rows never selected get exactly zero gradient
    for layer in wf.wf_layers().values():
        assert torch.all(layer.alpha_w.grad[[3, 4, 6, 7, 8, 9]] == 0)
        assert layer.alpha_w.grad[[0, 1, 2, 5]].abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_patch_multi_label_sets_multiply_gates():
    model, x = _build("resnet18")
    wf = wfkern.patch(model, NUM_CLASSES)
    _scramble_alphas(wf, seed=3)
    with torch.no_grad():
        both = wf(x, forget=torch.tensor([[2, 7]] * 4))
        with wfkern.use_reference():
            ref = wf(x, forget=torch.tensor([[2, 7]] * 4))
        single = wf(x, forget=2)
    torch.testing.assert_close(both, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both, single, atol=1e-3)


class _Attend(nn.Module):
    """Self- or cross-attention through nn.MultiheadAttention, in either batch layout."""

    def __init__(self, cross: bool, batch_first: bool, need_weights: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.cross, self.batch_first, self.need_weights = cross, batch_first, need_weights

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        k, v = (x * 2, x * 3) if self.cross else (x, x)
        out = self.attn(x, k, v, need_weights=self.need_weights)[0]
        return out if self.batch_first else out.transpose(0, 1)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_patch_mha_matches_baked_plain_attention(cross, batch_first, need_weights):
    torch.manual_seed(0)
    wf = wfkern.patch(_Attend(cross, batch_first, need_weights).eval(), 3)
    _scramble_alphas(wf)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = wf(x, forget=torch.tensor([-1, 1]))
        torch.testing.assert_close(out[0], wf(x)[0], atol=1e-5, rtol=1e-5)
        baked = wfkern.bake(wf, forget=1).eval()  # plain torch MHA with gated in-projection weights
        torch.testing.assert_close(out[1], baked(x)[1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[1], wf(x)[1], atol=1e-3)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_patch_compile_matches_eager(name):
    model, x = _build(name)
    wf = wfkern.patch(model, NUM_CLASSES)
    _scramble_alphas(wf)
    labels = torch.tensor([3, -1, 0, 9])
    compiled = torch.compile(wf, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, forget=labels), wf(x, forget=labels), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    out = compiled(x, forget=labels)
    out.square().sum().backward()
    got = [p.grad.clone() for p in wf.gate_parameters()]
    wf.zero_grad()
    wf(x, forget=labels).square().sum().backward()
    for g, w in zip(got, (p.grad for p in wf.gate_parameters())):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_patch_compile_fuses_conv_epilogues_and_keeps_the_kernel_for_linear(name):
    """Under torch.compile a conv's epilogue is tensor ops, which inductor fuses with the BatchNorm
    and activation after it; a linear layer keeps the kernel (docs/performance.md, "Compiled", has
    the measurements behind both choices)."""
    model, x = _build(name)
    wf = wfkern.patch(model, NUM_CLASSES)
    _scramble_alphas(wf)
    targets = []

    def recording_backend(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(wf, backend=recording_backend, fullgraph=True)
    labels = torch.tensor([3, -1, 0, 9])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, forget=labels), wf(x, forget=labels), atol=1e-5, rtol=1e-5)
    kinds = collections.Counter(layer.kind for layer in wf.wf_layers().values())
    # The epilogue kernels, not the host label check (one tiny op on the labels, off the activations' path).
    kernel_calls = [t for t in targets if "wfkern" in t and "checked_labels" not in t]
    assert sum("checked_labels" in t for t in targets) == 1
    assert sum("sigmoid" in t for t in targets) >= kinds["conv"]  # each conv's gate table is in the graph
    has_kernel = _load.kernel_for("cpu")
    assert len(kernel_calls) == (len(wf.wf_layers()) - kinds["conv"] if has_kernel else 0), (kinds, kernel_calls)


# ---- bad input -----------------------------------------------------------------------------------

def test_patch_rejects_bad_arguments():
    model, _ = _build("resnet18")
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        wfkern.patch(model, 0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        wfkern.patch(model, 10.0)
    with pytest.raises(ValueError, match="must contain an nn.Conv2d.*got none in Sequential"):
        wfkern.patch(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 2)
    wf = wfkern.patch(model, NUM_CLASSES)
    with pytest.raises(ValueError, match="must not be patched already"):
        wfkern.patch(wf, NUM_CLASSES)
    with pytest.raises(ValueError, match="must not be patched already"):
        wfkern.patch(wf.model, NUM_CLASSES)


def test_patch_does_not_touch_the_original_unless_inplace():
    model, x = _build("resnet18")
    wfkern.patch(model, NUM_CLASSES)
    assert not any(isinstance(m, wfkern.layers.WFLayer) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    wf = wfkern.patch(model, NUM_CLASSES, inplace=True)
    assert wf.model is model


def test_patch_include_filter_and_skipped():
    model, _ = _build("resnet18")
    wf = wfkern.patch(model, NUM_CLASSES, include=lambda name, m: name != "conv1")
    assert "conv1" not in wf.wf_layers()
    assert ("conv1", "excluded by include()") in wf.skipped


@pytest.mark.parametrize(
    "forget, error, match",
    [
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "must be an integer tensor"),
        (torch.tensor([True, False, True, False]), TypeError, "must be an integer tensor"),
        (torch.tensor([0, 1, 2]), ValueError, r"must have shape \(4,\) or \(4, K\).*got \(3,\)"),
        (torch.zeros(4, 2, 2, dtype=torch.long), ValueError, "must have shape"),
        (torch.tensor([0, 1, 10, 3]), ValueError, r"must be in \[-1, 10\).*got 10"),
        (torch.tensor([0, -2, 1, 3]), ValueError, r"must be in \[-1, 10\).*got -2"),
        (12, ValueError, r"must be in \[-1, 10\).*got 12"),
        ("3", TypeError, "forget must be None, an int or an integer tensor"),
    ],
)
def test_forward_rejects_bad_forget(forget, error, match):
    model, x = _build("resnet18")
    wf = wfkern.patch(model, NUM_CLASSES)
    with pytest.raises(error, match=match):
        wf(x, forget=forget)


def test_bake_rejects_bad_class():
    wf = wfkern.patch(_build("resnet18")[0], NUM_CLASSES)
    with pytest.raises(ValueError, match=r"forget must be an int in \[-1, 10\), got 10"):
        wfkern.bake(wf, forget=10)
    with pytest.raises(TypeError, match="wf must be a WFModel"):
        wfkern.bake(nn.Conv2d(1, 1, 1), forget=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")
@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "vit_b_16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_model_cuda(name, dtype):
    model, x = _build(name)
    model = model.to("cuda", dtype)
    x = x.to("cuda", dtype)
    wf = wfkern.patch(model, NUM_CLASSES)
    _scramble_alphas(wf)
    labels = torch.tensor([3, -1, 0, 9], device="cuda")
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    with torch.no_grad():
        assert torch.equal(wf(x), model(x))
        mixed = wf(x, forget=labels)
        with wfkern.use_reference():
            torch.testing.assert_close(wf(x, forget=labels), mixed, **tol)
        torch.testing.assert_close(wfkern.bake(wf, forget=3)(x)[0], mixed[0], **tol)
    with pytest.raises(ValueError, match=r"must be in \[-1, 10\).*got 10"):
        wf(x, forget=torch.tensor([0, 1, 10, 3]))  # host labels: checked before anything runs
    with torch.no_grad():  # device labels: checked on the device, no host synchronisation
        poisoned = wf(x, forget=torch.tensor([0, 1, 10, 3], device="cuda"))
    torch.cuda.synchronize()
    assert poisoned[2].isnan().all() and not poisoned[[0, 1, 3]].isnan().any()
    with pytest.raises(ValueError, match=r"must be in \[-1, 10\).*got 10.*found on the GPU"):
        wfkern.ops.raise_label_errors()
    wfkern.ops.raise_label_errors()  # reported once
    out = wf(x, forget=labels)
    out.float().sum().backward()
    grads = [p.grad.clone() for p in wf.gate_parameters()]
    wf.zero_grad()
    with wfkern.use_reference():
        wf(x, forget=labels).float().sum().backward()
    for g, w in zip(grads, (p.grad for p in wf.gate_parameters())):
        torch.testing.assert_close(g, w, atol=5e-2 if dtype == torch.bfloat16 else 1e-3, rtol=5e-2)


def _randomize_batchnorms(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen))


class _ConvFeedsTwo(nn.Module):
    """conv1's output is read by bn1 and by a skip: folding bn1 would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv1(x)
        z = torch.relu(self.bn1(y)) + y
        return self.bn2(self.conv2(z)).mean((2, 3))


def test_patch_folds_batchnorm_only_where_proved():
    model, x = _build("resnet18")
    _randomize_batchnorms(model)
    wf = wfkern.patch(model, NUM_CLASSES)
    assert len(wf.folded_batchnorms) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    unfolded = wfkern.patch(model, NUM_CLASSES, fold_batchnorm=False)
    assert unfolded.folded_batchnorms == []
    _scramble_alphas(wf)
    unfolded.load_gates_state_dict(wf.gates_state_dict())
    labels = torch.tensor([3, -1, 0, 9])
    with torch.no_grad():
        torch.testing.assert_close(wf(x, forget=labels), unfolded(x, forget=labels), atol=1e-4, rtol=1e-4)
        assert torch.equal(wf(x), model(x))
    # grad mode and train mode take the unfolded path and still agree
    torch.testing.assert_close(wf(x, forget=labels), unfolded(x, forget=labels), atol=1e-4, rtol=1e-4)
    wf.train(), unfolded.train()
    torch.testing.assert_close(wf(x, forget=labels), unfolded(x, forget=labels), atol=1e-4, rtol=1e-4)
    # same gates file and fingerprint either way
    from wfkern.patch import base_fingerprint
    assert base_fingerprint(wf) == base_fingerprint(unfolded)

    other = _ConvFeedsTwo().eval()
    _randomize_batchnorms(other)
    wf_other = wfkern.patch(other, 4)
    assert wf_other.folded_batchnorms == [("conv2", "bn2")]
    plain_other = wfkern.patch(other, 4, fold_batchnorm=False)
    _scramble_alphas(wf_other)
    plain_other.load_gates_state_dict(wf_other.gates_state_dict())
    x4 = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(wf_other(x4, forget=torch.tensor([1, 2])),
                                   plain_other(x4, forget=torch.tensor([1, 2])), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,first_mlp", [("vit_tiny", "blocks.0.mlp.fc1"),
                                            ("vit_b_16", "encoder.layers.encoder_layer_0.mlp.0")])
def test_patch_gate_mlp_wraps_the_first_mlp_layer_of_every_block(name, first_mlp):
    model, x = _build(name)
    wf = wfkern.patch(model, NUM_CLASSES, gate_mlp=True)
    mlp = [n for n, m in wf.wf_layers().items() if isinstance(m, WFLinear) and n.endswith(("mlp.fc1", "mlp.0"))]
    blocks = len(model.blocks) if name == "vit_tiny" else len(model.encoder.layers)
    assert first_mlp in "\n".join(mlp) and len(mlp) == blocks
    assert not any(n.endswith(("mlp.fc2", "mlp.3")) for n in wf.wf_layers())  # only the first layer
    assert len(wf.wf_layers()) == len(wfkern.patch(model, NUM_CLASSES, gate_mlp="qkv").wf_layers()) + blocks
    _scramble_alphas(wf)
    with torch.no_grad():
        torch.testing.assert_close(wf(x), model(x), atol=0, rtol=0)  # forget nothing: the original
        for cls in (3, 9):
            baked = wfkern.bake(wf, forget=cls).eval()
            torch.testing.assert_close(baked(x), wf(x, forget=cls), atol=1e-4, rtol=1e-4)
            assert not torch.allclose(wf(x, forget=cls), model(x), atol=1e-3)  # the MLP gates act
