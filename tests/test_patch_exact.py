"""What the README's "Guarantees" promise about exactness, checked as stated, on several kernel choices.

``wf(x)`` and rows that forget nothing (-1) are the original model bit for bit, where "the original" is the
model as ``patch`` leaves its copy: frozen (torch picks other kernels for weights that require grad, e.g.
matmul folding of a transposed input). CI runs this file under other CPU kernel choices too
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``: the Makefile's
``cpu-variants``), so a claim that holds on one machine's kernels only fails here.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import wfkern
from wfkern.models import create_model

NUM_CLASSES = 10


def _randomise_batchnorms(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affines away from (0, 1, 1, 0), so a folded affine really rounds."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)


def _small_cnn():
    return create_model("small_cnn", num_classes=NUM_CLASSES, in_chans=1, image_size=8), (1, 8, 8)


def _resnet18():
    return torchvision.models.resnet18(num_classes=NUM_CLASSES), (3, 16, 16)


def _vit_tiny():
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", num_classes=NUM_CLASSES, img_size=32), (3, 32, 32)


MODELS = {"small_cnn": _small_cnn, "resnet18": _resnet18, "vit_tiny": _vit_tiny}


def _setup(name: str, fold_batchnorm: bool = True, channels_last: bool = False):
    """(frozen original, WF model with scrambled gates, input batch of 5)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model, shape = MODELS[name]()
    _randomise_batchnorms(model, gen)
    model.eval()
    wf = wfkern.patch(model, NUM_CLASSES, fold_batchnorm=fold_batchnorm)
    model.requires_grad_(False)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)
    x = torch.randn(5, *shape, generator=gen)
    if channels_last:
        model, wf, x = (t.to(memory_format=torch.channels_last) for t in (model, wf, x))
    return model, wf, x


# Ways to say "rows 1 and 3 forget nothing" while the other rows forget something.
LABELS = {
    "list": [3, -1, 7, -1, 0],
    "tensor": torch.tensor([3, -1, 7, -1, 0]),
    "sets": torch.tensor([[3, 5], [-1, -1], [7, -1], [-1, -1], [0, 0]]),
}


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_no_labels_is_the_frozen_original_bit_for_bit(name, grad):
    model, wf, x = _setup(name)
    with torch.set_grad_enabled(grad):
        plain = model(x)
        assert torch.equal(wf(x), plain)
        assert torch.equal(wf(x, forget=-1), plain)
        assert torch.equal(wf(x, forget=[-1] * 5), plain)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_rows_that_forget_nothing_are_the_original_bit_for_bit(name, fold, labels, grad):
    model, wf, x = _setup(name, fold_batchnorm=fold)
    if fold and name != "vit_tiny":
        assert wf.folded_batchnorms  # the case that rounds differently unless handled
    with torch.set_grad_enabled(grad):
        plain = model(x)
        mixed = wf(x, forget=LABELS[labels])
    assert torch.equal(mixed[[1, 3]], plain[[1, 3]])
    assert not torch.allclose(mixed[0], plain[0], atol=1e-3)  # the others did forget


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_rows_that_forget_nothing_stay_exact_in_channels_last(name):
    model, wf, x = _setup(name, channels_last=True)
    with torch.no_grad():
        assert torch.equal(wf(x, forget=LABELS["tensor"])[[1, 3]], model(x)[[1, 3]])


def test_the_folded_rows_still_match_the_unfolded_model():
    """Keeping -1 rows exact must not change the rows that forget (folded = unfolded to rounding); the sets
    here have no -1 row, so the folded model really folds."""
    _, folded, x = _setup("resnet18", fold_batchnorm=True)
    _, unfolded, _ = _setup("resnet18", fold_batchnorm=False)
    every_row_forgets = torch.tensor([[3, 5], [1, 2], [7, -1], [4, 4], [0, 0]])
    with torch.no_grad():
        for labels in (every_row_forgets, LABELS["sets"]):
            torch.testing.assert_close(folded(x, forget=labels), unfolded(x, forget=labels), atol=1e-4, rtol=1e-4)


def test_gradients_of_a_batch_with_unmasked_rows_equal_the_unfolded_models():
    """Such a batch runs unfolded under autograd too: the gate grads equal the unfolded model's."""
    _, folded, x = _setup("small_cnn", fold_batchnorm=True)
    _, unfolded, _ = _setup("small_cnn", fold_batchnorm=False)
    for wf in (folded, unfolded):
        wf(x, forget=LABELS["tensor"]).square().sum().backward()
    for a, b in zip(folded.gate_parameters(), unfolded.gate_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
