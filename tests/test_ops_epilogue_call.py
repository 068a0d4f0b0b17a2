"""One description of an epilogue call: keyword and positional forms, the signature, one set of checks."""
from __future__ import annotations

import inspect

import pytest
import torch

from helpers import TOL, has_kernel, make_inputs
from wfkern.ops import EpilogueCall, mask_epilogue, mask_epilogue_, mask_epilogue_ref

WRAPPERS = [mask_epilogue, mask_epilogue_, mask_epilogue_ref]
OPTIONS = ["alpha_b", "bias", "channel_dim", "post_scale", "post_shift", "save_output"]


def _post(channels):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(channels, generator=gen) + 0.5, torch.randn(channels, generator=gen)


@pytest.mark.parametrize("fn", WRAPPERS, ids=lambda f: f.__name__)
def test_signature_lists_the_options_keyword_only(fn):
    params = inspect.signature(fn).parameters
    assert list(params)[:3] == ["y", "alpha_w", "labels"]
    assert [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY] == OPTIONS
    assert {n: params[n].default for n in OPTIONS} == EpilogueCall._field_defaults


@pytest.mark.parametrize("fn", WRAPPERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("layout", ["nchw", "bnf"])
def test_keyword_and_positional_calls_agree(fn, layout):
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, layout, labels="sets")
    scale, shift = _post(y.shape[cd])
    by_keyword = fn(y.clone(), aw, labels, alpha_b=ab, bias=b, channel_dim=cd, post_scale=scale, post_shift=shift)
    by_position = fn(y.clone(), aw, labels, ab, b, cd, scale, shift)
    mixed = fn(y.clone(), aw, labels, ab, b, channel_dim=cd, post_shift=shift, post_scale=scale)
    assert torch.equal(by_keyword, by_position) and torch.equal(by_keyword, mixed)
    # the hand-written formula: ((y - b) * g_w + b * g_b) * scale + shift, per sample and channel
    view = [y.shape[0]] + [1] * (y.dim() - 1)
    view[cd] = y.shape[cd]
    per_channel = [1] * y.dim()
    per_channel[cd] = y.shape[cd]
    g_w = torch.stack([torch.sigmoid(aw[sorted({int(c) for c in row if c >= 0})]).prod(0) for row in labels])
    g_b = torch.stack([torch.sigmoid(ab[sorted({int(c) for c in row if c >= 0})]).prod(0) for row in labels])
    expected = (y - b.view(per_channel)) * g_w.view(view) + (b.view(per_channel) * g_b.view(view))
    expected = expected * scale.view(per_channel) + shift.view(per_channel)
    torch.testing.assert_close(by_keyword, expected, **TOL[torch.float32])


def test_save_output_only_changes_what_the_backward_keeps():
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "nchw", labels="sets", requires_grad=True)
    grads = []
    for save_output in (False, True):
        aw.grad = None
        mask_epilogue(y, aw, labels, alpha_b=ab, bias=b, channel_dim=cd, save_output=save_output).square().sum().backward()
        grads.append(aw.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float32])
    out = mask_epilogue_ref(y, aw, labels, alpha_b=ab, bias=b, save_output=True)  # a hint the reference ignores
    torch.testing.assert_close(out, mask_epilogue_ref(y, aw, labels, ab, b), rtol=0, atol=0)


@pytest.mark.parametrize("fn", WRAPPERS, ids=lambda f: f.__name__)
def test_unknown_or_doubled_options_are_type_errors(fn):
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "nchw")
    with pytest.raises(TypeError, match="unexpected keyword argument 'gates'"):
        fn(y, aw, labels, gates=ab)
    with pytest.raises(TypeError, match="multiple values for argument 'alpha_b'"):
        fn(y, aw, labels, ab, alpha_b=ab)


@pytest.mark.parametrize("impl", ["ref", "kernel"])
def test_half_a_post_affine_is_refused_by_every_implementation(impl):
    if impl == "kernel" and not has_kernel("cpu"):
        pytest.skip("wfkern._C is not built")
    fn = mask_epilogue_ref if impl == "ref" else torch.ops.wfkern.mask_epilogue
    y, aw, labels, ab, b, cd = make_inputs("cpu", torch.float32, "nchw")
    scale, shift = _post(y.shape[1])
    with pytest.raises(ValueError, match="post_scale and post_shift must be given together"):
        fn(y, aw, labels, ab, b, cd, scale, None)
    with pytest.raises(ValueError, match=r"post_scale and post_shift must be floating \(5,\) tensors"):
        fn(y, aw, labels, ab, b, cd, scale[:4], shift[:4])
