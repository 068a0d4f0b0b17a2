"""Forget labels: every bad value is wfkern's own one-line error, in eager and compiled models alike."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wfkern
from wfkern.models import create_model

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def wf():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=NUM_CLASSES, in_chans=1, image_size=8).eval()
    wf = wfkern.patch(model, NUM_CLASSES)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 3)
    return wf


X = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("forget, error, match", [
    (2 ** 70, ValueError, r"must be in \[-1, 10\).*got 1180591620717411303424"),
    ([2 ** 70, 1, 2], ValueError, r"must be in \[-1, 10\).*got \[1180591620717411303424, 1, 2\]"),
    ([1, None, 2], ValueError, r"must be in \[-1, 10\).*list of ints, got \[1, None, 2\]"),
    ([[1, 2], [3], [4, 5]], ValueError, r"list of ints, got \[\[1, 2\], \[3\], \[4, 5\]\]"),
    ([1.0, 2.0, 3.0], TypeError, r"forget labels must be ints, got torch.float32"),
    ([12, 0, 1], ValueError, r"must be in \[-1, 10\) \(-1 = forget nothing\), got 12"),
    (torch.tensor([1, 2, 3], device="meta"), ValueError, r"must be on the CPU or on the input's device \(cpu\), got labels on meta"),
])
def test_bad_labels_are_one_line_errors(wf, forget, error, match):
    with pytest.raises(error, match=match) as info:
        wf(X, forget=forget)
    assert str(info.value).startswith("wfkern.WFModel: ") and "\n" not in str(info.value)


# Anything a caller might pass: ints of any size, None, floats, strings, ragged nests.
_atoms = st.one_of(st.integers(min_value=-2 ** 80, max_value=2 ** 80), st.integers(-2, NUM_CLASSES + 1), st.none(),
                   st.floats(allow_nan=True), st.text(max_size=3), st.booleans())
_labels = st.recursive(_atoms, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forget=_labels)
def test_any_forget_value_runs_or_raises_wfkerns_own_error(wf, forget):
    """The class of bug behind every weak message: no input reaches torch's own error text."""
    try:
        out = wf(X, forget=forget)
    except (ValueError, TypeError) as e:
        assert str(e).startswith("wfkern.WFModel: "), str(e)
        assert "\n" not in str(e)
    else:
        if forget is None:
            assert torch.equal(out, wf(X))
        else:
            as_tensor = torch.full((3,), forget) if isinstance(forget, int) else torch.as_tensor(forget, dtype=torch.long)
            assert torch.equal(out, wf(X, forget=as_tensor))


def test_compiled_model_names_a_bad_cpu_label(wf):
    compiled = torch.compile(wf, fullgraph=True)
    good = torch.tensor([1, -1, 2])
    with torch.no_grad():
        torch.testing.assert_close(compiled(X, forget=good), wf(X, forget=good), atol=1e-5, rtol=1e-5)
        for bad, shown in ((torch.tensor([1, 12, 2]), "12"), (torch.tensor([[1, -5], [0, 0], [1, 1]]), "-5")):
            with pytest.raises(ValueError, match=rf"forget labels must be in \[-1, 10\) \(-1 = forget nothing\), got {shown}$"):
                compiled(X, forget=bad)
        # ... and the compiled model keeps serving afterwards.
        torch.testing.assert_close(compiled(X, forget=good), wf(X, forget=good), atol=1e-5, rtol=1e-5)


def test_checked_labels_op_passes_opcheck():
    from wfkern.ops import checked_labels

    torch.library.opcheck(checked_labels, (torch.tensor([1, -1, 3]), NUM_CLASSES, "labels"))
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 10\).*got 10"):
        checked_labels(torch.tensor([10]), NUM_CLASSES, "labels")


def test_save_gates_onto_a_directory_is_a_clear_error(wf, tmp_path):
    with pytest.raises(IsADirectoryError, match=r"must be a file path, got a directory"):
        wf.save_gates(str(tmp_path))
    with pytest.raises(IsADirectoryError, match=r"must be a file path, got a directory"):
        wf.save_gates(str(tmp_path) + os.sep)
    assert os.listdir(tmp_path) == []
