"""wfkern.bake(wf, forget=<a set of classes>): the gates of a set multiply, exactly as a (B, K) forget row does."""
from __future__ import annotations

import pytest
import torch

import wfkern
from _export_models import NUM_CLASSES, inputs, patched

pytest.importorskip("timm")

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module", params=["resnet18", "vit_tiny"])
def models(request):
    model, wf = patched(request.param)
    return model, wf.eval(), inputs()


def test_a_set_bakes_to_the_masked_forward(models):
    _, wf, x = models
    with torch.no_grad():
        for forget in ([3, 7], (0, 5, 9), torch.tensor([2, 8])):
            row = torch.as_tensor(forget).tolist()
            masked = wf(x, forget=torch.tensor([row] * x.shape[0]))
            baked = wfkern.bake(wf, forget=forget).eval()(x)
            torch.testing.assert_close(baked, masked, **TOL)
            assert (baked - wf(x)).abs().max() > 1e-2  # the gates really changed the logits


def test_a_single_class_still_bakes_as_before(models):
    _, wf, x = models
    with torch.no_grad():
        torch.testing.assert_close(wfkern.bake(wf, forget=4).eval()(x), wf(x, forget=4), **TOL)
        torch.testing.assert_close(wfkern.bake(wf, forget=[4]).eval()(x), wf(x, forget=4), **TOL)


def test_duplicates_count_once(models):
    _, wf, x = models
    with torch.no_grad():
        once = wfkern.bake(wf, forget=[3, 7]).eval()(x)
        twice = wfkern.bake(wf, forget=[7, 3, 3, 7, -1]).eval()(x)
        squared = wf(x, forget=torch.tensor([[3, 3]] * x.shape[0]))  # the forward's own rule: a set
    torch.testing.assert_close(twice, once, atol=0, rtol=0)
    torch.testing.assert_close(wfkern.bake(wf, forget=[3, 3]).eval()(x).detach(), squared, **TOL)


@pytest.mark.parametrize("nothing", [-1, [], [-1, -1], (), torch.tensor([], dtype=torch.long), torch.tensor(-1)])
def test_minus_one_and_empty_forget_nothing(models, nothing):
    model, wf, x = models
    baked = wfkern.bake(wf, forget=nothing).eval()
    with torch.no_grad():
        torch.testing.assert_close(baked(x), model(x), atol=0, rtol=0)
    assert baked.state_dict().keys() == model.state_dict().keys()


def test_the_result_is_the_original_architecture(models):
    model, wf, _ = models
    baked = wfkern.bake(wf, forget=[1, 2])
    assert type(baked) is type(model)
    assert [type(m) for m in baked.modules()] == [type(m) for m in model.modules()]
    assert {k: v.shape for k, v in baked.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert all(p.requires_grad for p in baked.parameters())


@pytest.mark.parametrize("bad", [NUM_CLASSES, -2, [1, NUM_CLASSES], torch.tensor([0, -5])])
def test_bad_ids_are_a_value_error(models, bad):
    _, wf, _ = models
    with pytest.raises(ValueError, match=rf"^wfkern.bake: forget must be an int in \[-1, {NUM_CLASSES}\), got -?\d+"):
        wfkern.bake(wf, forget=bad)


@pytest.mark.parametrize("bad", [1.0, "3", [1, 2.5], True, torch.tensor([1.0]), torch.tensor([[1, 2]])])
def test_non_integer_ids_are_a_type_error(models, bad):
    _, wf, _ = models
    with pytest.raises(TypeError, match="^wfkern.bake: forget must be an int"):
        wfkern.bake(wf, forget=bad)
