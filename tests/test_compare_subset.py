"""python/compare_seeds.py's reduced runs: --subset keeps a seeded, class-stratified fraction of each split, registered
as ``<dataset>_subset`` so every command (and every manifest) reads exactly that subset."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wfkern.data import dataset_targets, get_dataset
from wfkern.metrics.manifest import dataset_fingerprint

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_seeds", ROOT / "python" / "compare_seeds.py")
compare_seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_seeds)


def test_parse_subset():
    assert compare_seeds.parse_subset("train=0.04,test=1") == {"train": 0.04, "test": 1.0}
    for bad in ("train", "train=0", "train=1.5", "tr=0.5", "train=x"):
        with pytest.raises(ValueError, match="--subset must be SPLIT=FRACTION items"):
            compare_seeds.parse_subset(bad)


@pytest.fixture
def registry(monkeypatch):
    """The dataset registry, restored afterwards (a registered subset does not outlive its test)."""
    from wfkern.data import registry as reg

    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))


def test_the_subset_is_stratified_seeded_and_named(registry):
    name = compare_seeds.register_subset("digits", {"train": 0.25, "test": 0.5}, seed=0)
    assert name == "digits_subset"
    full = get_dataset("digits", split="train")
    part = get_dataset(name, split="train")
    assert part.info.name == "digits_subset" and part.info.num_classes == 10
    full_counts = torch.bincount(dataset_targets(full), minlength=10)
    part_counts = torch.bincount(dataset_targets(part), minlength=10)
    assert torch.equal(part_counts, torch.round(full_counts * 0.25).long())  # a quarter of every class
    assert len(get_dataset(name, split="val")) == len(get_dataset("digits", split="val"))  # not named: kept whole
    test_counts = torch.bincount(dataset_targets(get_dataset("digits", split="test")), minlength=10)
    assert len(get_dataset(name, split="test")) == int(torch.round(test_counts * 0.5).sum()) == 223
    # every row is a row of the full split, the same rows each time, other rows with another subset seed
    xs, _ = part.get_batch(torch.arange(len(part)))
    xf, _ = full.get_batch(torch.arange(len(full)))
    assert all((xf == x).flatten(1).all(1).any() for x in xs[:20])
    assert dataset_fingerprint(part) == dataset_fingerprint(get_dataset(name, split="train"))
    compare_seeds.register_subset("digits", {"train": 0.25}, seed=1)
    assert dataset_fingerprint(get_dataset(name, split="train")) != dataset_fingerprint(part)


def test_commands_run_on_the_subset(tmp_path):
    """`compare_seeds.py wfkern SPEC train ...` trains on the subset; the checkpoint names it."""
    spec = json.dumps({"dataset": "digits", "fractions": {"train": 0.2}, "seed": 0})
    ck = tmp_path / "m.safetensors"
    out = subprocess.run([sys.executable, str(ROOT / "python" / "compare_seeds.py"), "wfkern", spec, "train",
                          "--dataset", "digits_subset", "--model-arg", "widths=[4,8,8]", "--epochs", "1",
                          "--out", str(ck), "--no-progress", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "trained small_cnn on digits_subset" in out.stdout
    from wfkern.train import load_checkpoint

    _, config = load_checkpoint(str(ck))
    assert config.dataset == "digits_subset"
