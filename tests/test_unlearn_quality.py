"""The quality targets on the embedded digits, with the default recipe: every class forgotten in one round.

For each model trained from scratch here (seed 0): mean Acc_f <= 1%, mean Acc_r within 1 point of the
original model's test accuracy, and the worst class's Acc_r within 3 points of it and of the original's
accuracy on the same retain set. ViTs with their defaults (every linear layer of each block gated, margin 4) meet
tighter ones: Acc_f <= 0.5%, the mean within 0.5 points, every class within 1 point of the original on the same
retain set, untraining cheaper than training. Minutes each on a CPU, so they
are ``slow`` (``make test-all``); ``make test`` keeps the fast demo check (tests/test_cli_demo.py).
The same rows, with wall times, come from ``python python/quality.py --row <name>`` (docs/untraining.md).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from quality import parse_settings, trained_model, untrain_and_measure  # noqa: E402


def test_quality_set_reads_each_value_as_json_or_text():
    assert parse_settings(["temperature=4", "margin=2.5", "lr=null", "forget_loss=margin", "seed=1"]) == {
        "temperature": 4, "margin": 2.5, "lr": None, "forget_loss": "margin", "seed": 1}
    assert parse_settings(["x=a=b"]) == {"x": "a=b"}
    for bad in ("temperature", "=4"):
        with pytest.raises(ValueError, match="--set must be KEY=VALUE"):
            parse_settings([bad])


@pytest.mark.slow
@pytest.mark.parametrize("row", ["small_cnn_digits", "small_vgg_digits"])  # SmallVGG also: test_unlearn_targets
def test_cnn_rows_meet_the_targets(row):
    model, splits, _ = trained_model(row)
    got = untrain_and_measure(model, splits)
    assert got["original"] >= 0.97
    assert got["acc_f"] <= 0.01
    assert got["acc_r"] >= got["original"] - 0.01
    assert got["acc_r_worst"] >= got["original"] - 0.03
    assert got["drop_worst"] <= 0.03  # every class against the original on the same retain set


@pytest.mark.slow
def test_small_vit_with_the_papers_qkv_gates_keeps_its_old_targets():
    # The paper's placement (gates on the qkv projections only) with the old margin 3: 1-3 points short of the ViT
    # targets below (docs/untraining.md, ViT sweep), within the looser ones it always had.
    model, splits, _ = trained_model("vit_digits")
    got = untrain_and_measure(model, splits, gate_mlp="qkv", margin=3.0)
    assert got["placement"] == "qkv"
    assert got["original"] >= 0.96
    assert got["acc_f"] <= 0.01
    assert got["acc_r"] >= got["original"] - 0.01
    assert got["acc_r_worst"] >= got["original"] - 0.03
    assert got["drop_worst"] <= 0.03  # every class against the original on the same retain set


def _one_thread_row(row: str) -> tuple[dict, float]:
    """The row's seed-0 original trained and untrained with the defaults on one thread (the runs are deterministic
    there); (measures, training seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, splits, train_s = trained_model(row)
        return untrain_and_measure(model, splits), train_s
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("row", ["vit_digits", "vit_tv_digits"])  # timm and torchvision blocks
def test_vits_forget_as_cleanly_as_the_cnns_with_the_defaults(row):
    # The defaults for a ViT: gates on every linear layer of each block (patch's "auto") and margin 4. On the timm
    # row's original (one thread, 98.00%) untraining seeds 0, 1 and 2 all met these targets (docs/untraining.md).
    got, train_s = _one_thread_row(row)
    assert got["placement"] == "all" and got["margin"] == 4.0
    assert got["original"] >= 0.97
    assert got["acc_f"] <= 0.005
    assert got["acc_r"] >= got["original"] - 0.005
    assert got["drop_worst"] <= 0.01  # the worst class against the original on the same retain set
    assert got["untrain_s"] < train_s
