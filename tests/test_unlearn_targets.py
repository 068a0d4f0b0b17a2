"""The untraining defaults generalise: a second small architecture of ours (SmallVGG: 4 biased convs, no BN,
max-pool head, MLP classifier), trained on the digits, untrained with the same defaults, forgets every class
(mean Acc_f <= 1%) and keeps mean Acc_r within 1 point of the original (measured: 98.44% -> 98.05-98.07%,
worst class 95.56-96.05% on one and two threads; docs/untraining.md)."""

from __future__ import annotations

import torch

import wfkern
from wfkern.cli._common import per_class_accuracy
from wfkern.cli.cmd_train import DEMO_TRAIN
from wfkern.data import get_dataset
from wfkern.models import create_model
from wfkern.train import evaluate_accuracy, train_model
from wfkern.unlearn import unlearn


def test_second_architecture_with_the_same_defaults():
    tr, va, te = (get_dataset("digits", split=s, seed=0) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    model = create_model("small_vgg", 10, 1, 8)
    train_model(model, tr, va, seed=0, **{k: v for k, v in DEMO_TRAIN.items()})
    original = evaluate_accuracy(model, te)
    assert original >= 0.95
    wf = wfkern.patch(model, num_classes=10)
    assert all(layer.alpha_b is not None for layer in wf.wf_layers().values())  # biased convs: bias gates too
    unlearn(wf, tr, va, progress=False)
    rows = per_class_accuracy(wf, te, 10, torch.device("cpu"))
    mean_f = sum(f for f, _ in rows) / 10
    mean_r = sum(r for _, r in rows) / 10
    assert mean_f <= 0.01, f"mean Acc_f {mean_f:.4f}"
    assert mean_r >= original - 0.01, f"mean Acc_r {mean_r:.4f}, original {original:.4f}"
    # The worst class's target is 3 points; measured 2.9 below, so the bound leaves room for float-order noise.
    assert min(r for _, r in rows) >= original - 0.035
