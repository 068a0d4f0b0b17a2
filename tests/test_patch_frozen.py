"""The base stays frozen and the wrappers stay honest: modes, casts, shared BatchNorms."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import wfkern


def _state(module: nn.Module) -> dict:
    """The base's weights and buffers (the gates are the only state allowed to change)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if not k.endswith(("alpha_w", "alpha_b"))}


def _assert_same_state(before: dict, module: nn.Module) -> None:
    after = module.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == [], f"the frozen base changed: {changed[:5]}"


def _train_mode_ways():
    """Every way a WF model ends up in train mode: each must keep the base's BatchNorms in eval."""
    return {
        "patched in train mode": lambda model: wfkern.patch(model.train(), 10),
        "patched in place in train mode": lambda model: wfkern.patch(model.train(), 10, inplace=True),
        "train() after patch": lambda model: wfkern.patch(model, 10).train(),
        "train(True) on a train-mode patch": lambda model: wfkern.patch(model.train(), 10).train(True),
        "patched in train mode without folding": lambda model: wfkern.patch(model.train(), 10, fold_batchnorm=False),
    }


@pytest.mark.parametrize("way", list(_train_mode_ways()))
def test_train_mode_never_moves_the_base(way, tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        original = model(x)
    snapshot = _state(model)
    wf = _train_mode_ways()[way](model)
    assert wf.training
    wf.save_gates(str(tmp_path / "gates.safetensors"))
    before = _state(wf.model)
    for forget in (3, torch.tensor([1, -1, 3, 3]), None):
        out = wf(x, forget=forget)
        if out.requires_grad:  # forget=None runs the frozen base alone
            out.sum().backward()
    _assert_same_state(before, wf.model)
    wfkern.load_gates(wf, str(tmp_path / "gates.safetensors"))  # the base fingerprint still matches
    assert all(not m.training for m in wf.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        assert torch.equal(wf.eval()(x), original)
    if "in place" not in way:
        _assert_same_state(snapshot, model)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("grad", [True, False])
def test_forward_never_changes_the_base(mode, grad):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        original = model(x)
    wf = wfkern.patch(model, 10)
    before = _state(wf.model)
    getattr(wf, mode)()
    with torch.set_grad_enabled(grad):
        for forget in (None, torch.tensor([1, -1, 3, 3]), 7):
            out = wf(x, forget=forget)
            if grad and out.requires_grad:
                out.sum().backward()
    _assert_same_state(before, wf.model)
    wf.eval()
    with torch.no_grad():
        assert torch.equal(wf(x), original)


def test_unlearn_never_changes_the_base(tmp_path):
    from wfkern.data import get_dataset

    train = get_dataset("digits", split="train", seed=0).subset(torch.arange(256))
    val = get_dataset("digits", split="val", seed=0).subset(torch.arange(100))
    model = torch.nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    wf = wfkern.patch(model.train(), 10)
    before = _state(wf.model)
    wfkern.unlearn(wf, train, val, max_epochs=1, batch_size=64, evals_per_epoch=1, progress=False)
    _assert_same_state(before, wf.model)


def test_wrappers_take_the_mode_of_what_they_wrap():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                                 hidden_dim=8, mlp_dim=8, num_classes=10).eval()
    wf = wfkern.patch(model, 10)
    assert not any(m.training for m in wf.modules())
    torch.manual_seed(0)
    train_model = torchvision.models.resnet18(num_classes=10).train()
    wf_train = wfkern.patch(train_model, 10)
    assert all(layer.training for layer in wf_train.wf_layers().values())


def test_cast_keeps_gates_float32():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    wf = wfkern.patch(model, 10)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 2)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([3, -1])
    with torch.no_grad():
        expected = wf(x, forget=labels)
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16)):
        wf_low = cast(wfkern.patch(model, 10))
        wf_low.load_gates_state_dict(wf.gates_state_dict())
        assert {p.dtype for p in wf_low.gate_parameters()} == {torch.float32}
        dtype = next(wf_low.model.conv1.base.parameters()).dtype
        with torch.no_grad():
            out = wf_low(x.to(dtype), forget=labels)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=0.3, rtol=0.1)


class _SharedBatchNorm(nn.Module):
    """One BatchNorm module that reads two convs' outputs."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return (self.bn(self.conv_a(x)) + self.bn(self.conv_b(x))).mean((2, 3))


def test_batchnorm_read_by_two_convs_is_not_folded():
    model = _SharedBatchNorm().eval()
    model.bn.running_mean.normal_()
    wf = wfkern.patch(model, 3)
    assert wf.folded_batchnorms == []
    unfolded = wfkern.patch(model, 3, fold_batchnorm=False)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 2)
    unfolded.load_gates_state_dict(wf.gates_state_dict())
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(wf(x, forget=torch.tensor([0, 2])), unfolded(x, forget=torch.tensor([0, 2])))


@pytest.mark.parametrize("reference", [False, True])
def test_folded_batchnorm_gives_the_unfolded_gradients(reference):
    """Untraining folds each proved BatchNorm into its conv's epilogue: same loss, same gate gradients."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    folded, unfolded = wfkern.patch(model, 10), wfkern.patch(model, 10, fold_batchnorm=False)
    assert folded.folded_batchnorms and not unfolded.folded_batchnorms
    with torch.no_grad():
        for p in folded.gate_parameters():
            p.normal_(0, 2, generator=gen)
    unfolded.load_gates_state_dict(folded.gates_state_dict())
    x = torch.randn(4, 3, 32, 32, generator=gen)
    labels = torch.tensor([[3, -1], [-1, -1], [0, 9], [5, 5]])
    grads = []
    for wf in (folded, unfolded):
        with wfkern.use_reference(reference):
            loss = torch.nn.functional.cross_entropy(wf(x, forget=labels), torch.arange(4))
        grads.append(torch.autograd.grad(loss, wf.gate_parameters()))
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "3", None, True])
def test_reset_gates_refuses_non_finite_values(value):
    wf = wfkern.patch(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1)), 3)
    before = wf.gates_state_dict()
    with pytest.raises(ValueError, match="reset_gates: value must be a finite number"):
        wf.reset_gates(value)
    assert all(torch.equal(before[k], v) for k, v in wf.gates_state_dict().items())


def test_patch_refuses_a_class_count_its_head_contradicts():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ValueError, match=r"num_classes must match the model's classifier head \(fc: 10 outputs\), got 20"):
        wfkern.patch(model, 20)
    vgg = torchvision.models.vgg11(num_classes=7)
    with pytest.raises(ValueError, match=r"classifier\.6: 7 outputs"):
        wfkern.patch(vgg, 10)
    headless = torchvision.models.resnet18(num_classes=10)
    headless.fc = nn.Identity()
    assert wfkern.patch(headless, 20).num_classes == 20  # no visible head: nothing to check
