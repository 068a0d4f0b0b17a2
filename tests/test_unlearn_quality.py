"""The quality targets on the embedded digits, with the default recipe: every class forgotten in one round.

For each model trained from scratch here (seed 0): mean Acc_f <= 1%, mean Acc_r within 1 point of the
original model's test accuracy, and the worst class's Acc_r within 3 points of it and of the original's
accuracy on the same retain set. Minutes each on a CPU, so they
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
def test_small_vit_meets_the_targets_with_its_family_run_length():
    # With a CNN's run length (10 epochs) it was 1.0-1.4 points short; the ViT default is 30 epochs, patience 30.
    model, splits, _ = trained_model("vit_digits")
    got = untrain_and_measure(model, splits)
    assert got["original"] >= 0.96
    assert got["acc_f"] <= 0.01
    assert got["acc_r"] >= got["original"] - 0.01
    assert got["acc_r_worst"] >= got["original"] - 0.03
    assert got["drop_worst"] <= 0.03  # every class against the original on the same retain set


@pytest.mark.slow
def test_small_vit_with_every_block_linear_gated_forgets_as_cleanly_as_the_cnns():
    # Gates on every linear layer of each block (patch(gate_mlp="all")) and margin 4: on this original (trained on
    # one thread, 98.00%) untraining seeds 0, 1 and 2 all met these targets (docs/untraining.md, ViT sweep).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, splits, train_s = trained_model("vit_digits")
        got = untrain_and_measure(model, splits, gate_mlp="all", margin=4.0)
    finally:
        torch.set_num_threads(threads)
    assert got["original"] >= 0.97
    assert got["acc_f"] <= 0.005
    assert got["acc_r"] >= got["original"] - 0.005
    assert got["drop_worst"] <= 0.01  # the worst class against the original on the same retain set
    assert got["untrain_s"] < train_s
