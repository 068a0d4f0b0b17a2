"""--num-workers / wfkern.loader_options: worker processes, pinned memory and persistent workers never change a
batch (same samples, same order, same values, same global RNG), on a generated ImageFolder and on the digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import wfkern
from wfkern.cli.main import main
from wfkern.data import LoaderOptions, current_loader_options, get_dataset, iter_batches, loader_options
from wfkern.data import loader as loader_mod


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 10 random 12x12 PNGs: one class tree, carved 70/10/20 per class (Subsets of one ImageFolder)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cow"):
        (root / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return str(root)


def _batches(n: int, size: int, seed: int = 1) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(size))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) and ya.dtype == yb.dtype
                                    for (xa, ya), (xb, yb) in zip(a, b))


def test_workers_give_identical_batches_on_an_imagefolder(tree):
    ds = get_dataset("imagefolder", root=tree, split="train", image_size=8)
    batches = _batches(len(ds), 5)  # uneven: the last batch is smaller than the others
    plain = list(iter_batches(ds, batches))
    assert len(plain) == 5 and plain[0][0].shape == (5, 3, 8, 8) and plain[0][1].dtype == torch.int64
    rng = torch.get_rng_state()
    with loader_options(2) as opts:
        assert opts == LoaderOptions(2) and current_loader_options().num_workers == 2
        workers = list(iter_batches(ds, batches))
        again = list(iter_batches(ds, batches))       # the same persistent workers, a second pass
        one = next(iter_batches(ds, [batches[0]]))    # one batch at a time, as untraining reads
        single = next(iter_batches(ds, [torch.tensor([4])]))  # fewer samples than workers
    assert torch.equal(torch.get_rng_state(), rng)  # reading never draws from the global RNG
    assert _same(plain, workers) and _same(plain, again)
    assert torch.equal(one[0], plain[0][0]) and torch.equal(one[1], plain[0][1])
    assert torch.equal(single[0][0], ds[4][0]) and int(single[1][0]) == ds[4][1]
    assert current_loader_options() == LoaderOptions()  # restored after the block


def test_explicit_num_workers_argument_and_the_digits(tree):
    ds = get_dataset("imagefolder", root=tree, split="test", image_size=8)
    batches = _batches(len(ds), 4, seed=3)
    assert _same(list(iter_batches(ds, batches)), list(iter_batches(ds, batches, num_workers=2)))
    digits = get_dataset("digits", split="val")
    batches = _batches(len(digits), 64)
    plain = list(iter_batches(digits, batches))
    with loader_options(2, pin_memory=True):  # in memory: one indexing op; pinning only where CUDA exists
        assert _same(plain, list(iter_batches(digits, batches)))


def test_persistent_pool_is_reused_nested_reads_and_abandoned_reads(tree):
    ds = get_dataset("imagefolder", root=tree, split="train", image_size=8)
    batches = _batches(len(ds), 7, seed=5)
    plain = list(iter_batches(ds, batches))
    with loader_options(2):
        session = loader_mod._CURRENT.get()
        list(iter_batches(ds, batches))
        pool = next(iter(session.pools.values()))
        workers = [w.pid for w in pool.iterator._workers]
        list(iter_batches(ds, batches))
        assert len(session.pools) == 1 and [w.pid for w in pool.iterator._workers] == workers  # kept, not respawned
        nested = []
        for i, (x, y) in enumerate(iter_batches(ds, batches)):  # a read inside a read of the same dataset
            inner = list(iter_batches(ds, batches[:2]))
            assert _same(inner, plain[:2])
            nested.append((x, y))
            if i == 1:
                break  # abandoned half way: the workers' leftovers must not leak into the next read
        assert _same(nested, plain[:2])
        assert _same(list(iter_batches(ds, batches)), plain)
        procs = list(pool.iterator._workers)
    assert session.pools == {} and all(not p.is_alive() for p in procs)  # shut down with the block


def test_loader_options_are_checked():
    for bad, match in (({"num_workers": -1}, "num_workers must be an integer >= 0 and <= 256, got -1"),
                       ({"num_workers": 1.5}, "num_workers must be an integer"),
                       ({"num_workers": True}, "num_workers must be an integer"),
                       ({"prefetch_factor": 0}, "prefetch_factor must be an integer >= 1"),
                       ({"pin_memory": "yes"}, "pin_memory must be True or False")):
        with pytest.raises(ValueError, match=f"wfkern.loader_options: {match}"):
            with wfkern.loader_options(**bad):
                pass


def test_cli_num_workers_is_checked_first(capsys, tmp_path):
    rc = main(["train", "--out", str(tmp_path / "m.safetensors"), "--num-workers", "-2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["wfkern train: error: --num-workers must be an integer >= 0 and <= 256, got -2; "
                               "0 reads in the command's own process"]
    assert not (tmp_path / "m.safetensors").exists()


def test_training_on_an_imagefolder_is_identical_with_workers(tree, tmp_path, capsys):
    """End to end: `wfkern train` with 0 and 2 workers writes bit-identical weights."""
    outs = []
    for n in (0, 2):
        out = tmp_path / f"m{n}.safetensors"
        assert main(["train", "--dataset", "imagefolder", "--data-root", tree, "--image-size", "8",
                     "--model-arg", "widths=[4,8]", "--model-arg", "pool_after=[0]", "--epochs", "2",
                     "--batch-size", "6", "--no-progress", "--device", "cpu", "--num-workers", str(n),
                     "--out", str(out)]) == 0
        outs.append(load_file(str(out)))
    capsys.readouterr()
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_live_worker_pools_are_capped(tree):
    datasets = [get_dataset("imagefolder", root=tree, split="test", image_size=8)
                for _ in range(loader_mod.MAX_POOLS + 1)]
    expected = [list(iter_batches(d, [torch.arange(3)])) for d in datasets]
    with loader_options(1):
        session = loader_mod._CURRENT.get()
        for d, want in zip(datasets, expected):
            assert _same(list(iter_batches(d, [torch.arange(3)])), want)
        assert len(session.pools) == loader_mod.MAX_POOLS and id(datasets[0]) not in session.pools  # oldest closed
