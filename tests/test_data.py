"""wfkern.data: the digits, seeded splits, local-root loaders and their error messages."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from wfkern.data import (DatasetInfo, TensorImageDataset, get_dataset, iter_batches, list_datasets, read_idx,
                         stratified_split)


def test_digits_splits_are_disjoint_complete_and_stratified():
    parts = [get_dataset("digits", split=s, seed=0) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [1078, 269, 450]
    for p in parts:
        counts = torch.bincount(p.targets, minlength=10)
        share = counts.float() / len(p)
        assert share.min() > 0.09 and share.max() < 0.11  # every class about 10% of every split
    imgs = torch.cat([p.images.flatten(1) for p in parts])
    assert imgs.shape == (1797, 64)
    assert torch.unique(imgs, dim=0).shape[0] >= 1797 - 30  # the digits hold a few exact duplicates
    x, y = parts[0].get_batch(torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_digits_split_depends_only_on_seed():
    a, b = get_dataset("digits", split="test", seed=3), get_dataset("digits", split="test", seed=3)
    c = get_dataset("digits", split="test", seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)


def test_digits_upscale_and_normalisation():
    d = get_dataset("digits", split="train", image_size=16)
    x, _ = d.get_batch(torch.arange(len(d)))
    assert x.shape[-2:] == (16, 16)
    x8, _ = get_dataset("digits", split="train").get_batch(torch.arange(len(d)))
    assert abs(x8.mean().item()) < 0.05 and abs(x8.std().item() - 1) < 0.05


def test_stratified_split_fractions_and_errors():
    y = torch.arange(100) % 4
    a, b = stratified_split(y, (0.2, 0.8), seed=0)
    assert len(a) == 20 and len(b) == 80 and not set(a.tolist()) & set(b.tolist())
    assert torch.bincount(y[a]).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="fractions must be positive"):
        stratified_split(y, (0.7, 0.7), seed=0)


def test_get_dataset_rejects_unknown_names_and_splits():
    with pytest.raises(ValueError, match=r"wfkern.get_dataset: name must be one of .*got 'nope'"):
        get_dataset("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        get_dataset("digits", split="dev")
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "imagefolder"} <= set(list_datasets())


@pytest.mark.parametrize("name,expect", [("mnist", "train-images-idx3-ubyte"), ("cifar10", "data_batch_1")])
def test_missing_local_files_name_the_expected_files(tmp_path, name, expect):
    with pytest.raises(FileNotFoundError, match=expect) as e:
        get_dataset(name, root=str(tmp_path))
    assert "--download" in str(e.value)
    with pytest.raises(ValueError, match="root must be a folder"):
        get_dataset(name, root=None)


def _write_idx(path, arr: np.ndarray, compress: bool):
    header = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:  # close it: a gzip stream is only complete once closed
        f.write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_a_torchvision_layout(tmp_path, compress):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    _write_idx(raw / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 255, (200, 28, 28)), compress)
    _write_idx(raw / f"train-labels-idx1-ubyte{sfx}", np.arange(200) % 10, compress)
    _write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 255, (30, 28, 28)), compress)
    _write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", np.arange(30) % 10, compress)
    tr, va, te = (get_dataset("mnist", root=str(tmp_path), split=s, seed=1) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (180, 20, 30)
    assert torch.bincount(va.targets).tolist() == [2] * 10
    assert read_idx(raw / f"t10k-labels-idx1-ubyte{sfx}").tolist() == [i % 10 for i in range(30)]
    x, _ = tr[0]
    assert x.shape == (1, 28, 28)


def test_read_idx_rejects_other_files(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="unsigned-byte IDX"):
        read_idx(p)


def test_imagefolder_tree_is_carved_per_class(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 20 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    parts = [get_dataset("imagefolder", root=str(tmp_path), split=s, image_size=8) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [14, 2, 4]
    assert parts[0].info.class_names == ("cat", "dog") and parts[0].info.num_classes == 2
    x, y = next(iter_batches(parts[2], [torch.arange(4)]))  # the DataLoader path
    assert x.shape == (4, 3, 8, 8) and sorted(y.tolist()) == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="ImageFolder directory"):
        get_dataset("imagefolder", root=str(tmp_path / "missing"))


def test_tensor_dataset_validates_shapes():
    info = DatasetInfo("t", 2, 1, 4)
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
        TensorImageDataset(torch.zeros(3, 4, 4), torch.zeros(3), info, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="one row per image"):
        TensorImageDataset(torch.zeros(3, 1, 4, 4), torch.zeros(2), info, (0.0,), (1.0,))
