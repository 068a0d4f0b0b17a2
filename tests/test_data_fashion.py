"""Integration: the real Fashion-MNIST from Debian's dataset-fashion-mnist package (slow; skipped when absent)."""

from __future__ import annotations

import os

import pytest
import torch

from wfkern.data import DEBIAN_FASHION_ROOT, get_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isfile(os.path.join(DEBIAN_FASHION_ROOT, "train-images-idx3-ubyte.gz")),
                       reason=f"Fashion-MNIST not installed under {DEBIAN_FASHION_ROOT} (apt-get install dataset-fashion-mnist)"),
]


def test_debian_fashion_mnist_loads_with_seeded_splits():
    tr, va, te = (get_dataset("fashion_mnist", split=s, seed=0) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (54000, 6000, 10000)
    assert torch.bincount(va.targets).tolist() == [600] * 10
    assert torch.bincount(te.targets).tolist() == [1000] * 10
    x, y = te.get_batch(torch.arange(256))
    assert x.shape == (256, 1, 28, 28) and abs(x.mean().item()) < 0.2
    assert te.info.class_names[9] == "Ankle boot"
