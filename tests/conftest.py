"""Fixtures shared by the tests (the helpers they import live in tests/helpers.py)."""
from __future__ import annotations

import pytest
import torch

from helpers import exact_fp32, has_kernel


@pytest.fixture(params=["cpu", "cuda"])
def kernel_device(request):
    """A device with a compiled wfkern kernel (skips otherwise)."""
    device = request.param
    if not has_kernel(device):
        pytest.skip(f"wfkern._C has no {device.upper()} kernel")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    return device


@pytest.fixture(params=["cpu", "cuda"])
def any_device(request):
    """cpu always, cuda when a GPU is visible (for model-level tests)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    return request.param


@pytest.fixture(autouse=True)
def _no_tf32():
    """Every test compares float32 results with a reference: TF32 rounding is not what it tests."""
    with exact_fp32():
        yield
