"""What the single-class baseline tests share: a recording dataset, one intra-op thread, a small trained digits CNN,
the accuracies on a class and on the others, a copy of a model's state, and three 2-D blobs with an MLP for them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from wfkern.data import get_dataset
from wfkern.models import create_model
from wfkern.train import train_model


class Recording(Dataset):
    """A map-style dataset (no ``get_batch``) that records every index read; ``targets`` are labels, not reads."""

    def __init__(self, base):
        self.base, self.targets, self.read = base, base.targets, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.base[i]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the same numbers on every machine, and no spin-waiting when other processes load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """A small CNN (16/32/32 filters) trained on the embedded digits for 10 epochs (< 1 s on an idle CPU), in eval
    mode, with the training split and the test images and labels."""
    train, test = get_dataset("digits", split="train"), get_dataset("digits", split="test")
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, 8, widths=(16, 32, 32))
    train_model(model, train, epochs=10, lr=1e-2, seed=0)
    x, y = test.get_batch(torch.arange(len(test)))
    with torch.no_grad():
        assert float((model.eval()(x).argmax(1) == y).float().mean()) > 0.95  # measured 0.978
    return model, train, x, y


def accs(model, x, y, c):
    """(accuracy on the class-c test images, accuracy on the others)."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    return float((pred[y == c] == c).float().mean()), float((pred[y != c] == y[y != c]).float().mean())


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def blobs():
    """Three Gaussian blobs in 2-D, 60 samples each (labels 0, 1, 2 in turn)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(60)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return TensorDataset(centers[y] + 0.5 * torch.randn(y.numel(), 2, generator=g), y)


def blob_mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
