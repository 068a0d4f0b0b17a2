"""Single-class baselines on a toy problem, and the per-class runner's checkpoints and cost record."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern.baselines import (class_checkpoint, load_state, neg_grad, per_class_loader, random_labels, read_cost,
                              retrain, run_baseline, wf_cost)

CENTERS = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])


def _blobs(n_per_class=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat(n_per_class)
    return TensorDataset(CENTERS[y] + 0.5 * torch.randn(y.numel(), 2, generator=g), y)


def _mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _acc(model, data, cls=None, exclude=False):
    x, y = data.tensors
    keep = torch.ones_like(y, dtype=torch.bool) if cls is None else ((y != cls) if exclude else (y == cls))
    with torch.no_grad():
        return float((model(x[keep]).argmax(1) == y[keep]).float().mean())


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = _mlp()
    data = _blobs()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.tensors[0]), data.tensors[1]).backward()
        opt.step()
    assert _acc(model, data) == 1.0
    return model.eval(), data


def test_random_labels_forgets_one_class_and_keeps_the_rest(trained):
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = random_labels(model, data, 1, num_classes=3, epochs=20, lr=1e-2, seed=0)
    assert _acc(out, data, 1) == 0.0
    assert _acc(out, data, 1, exclude=True) >= 0.95
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is not modified


def test_neg_grad_stops_once_the_class_is_forgotten(trained):
    model, data = trained
    out = neg_grad(model, data, 2, lr=1e-2, batch_size=300, max_epochs=200)
    assert _acc(out, data, 2) == 0.0
    assert _acc(model, data, 2) == 1.0
    steps_taken = neg_grad(model, data, 2, lr=1e-2, batch_size=300, max_epochs=1)
    assert _acc(steps_taken, data, 2) > 0.0  # one step is not enough: the cap stops it before the class is gone


def test_retrain_never_sees_the_class():
    data = _blobs()
    out = retrain(_mlp, data, 0, epochs=30, batch_size=64, lr=0.05, max_shift=0, seed=1)
    assert _acc(out, data, 0) == 0.0
    assert _acc(out, data, 0, exclude=True) >= 0.95


KW = {"lr": 1e-2, "batch_size": 300, "max_epochs": 200}


def test_run_baseline_writes_one_checkpoint_per_class_and_the_cost(tmp_path, trained):
    model, data = trained
    rec = run_baseline("neg-grad", original=model, train_data=data, out_dir=tmp_path, num_classes=3,
                       classes=[0, 2], method_kwargs=KW, progress=False)
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["class_00000.safetensors", "class_00002.safetensors"]
    sizes = [class_checkpoint(tmp_path, c).stat().st_size for c in (0, 2)]
    assert rec["bytes_total"] == sum(sizes) and rec["n_files"] == 2 and rec["n_runs"] == 2
    assert rec["all_classes_bytes"] == pytest.approx(sum(sizes) / 2 * 3)
    assert rec["seconds_total"] > 0 and rec["all_classes_runs"] == 3
    assert json.loads((tmp_path / "cost.json").read_text())["bytes_total"] == rec["bytes_total"]
    state, meta = load_state(class_checkpoint(tmp_path, 2))
    assert meta == {"method": "neg-grad", "class": 2, "num_classes": 3}
    loaded = per_class_loader(tmp_path, _mlp)(2)
    assert _acc(loaded, data, 2) == 0.0
    direct = neg_grad(model, data, 2, seed=2, **KW)  # class c runs with seed + c
    for k, v in direct.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    # a rerun resumes: nothing is recomputed, the record is the same
    again = run_baseline("neg-grad", original=model, train_data=data, out_dir=tmp_path, num_classes=3,
                         classes=[0, 2], method_kwargs=KW, progress=False)
    assert again["per_class"] == rec["per_class"]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_wf_cost_is_one_run_and_one_file(tmp_path):
    path = tmp_path / "gates.safetensors"
    path.write_bytes(b"x" * 1234)
    rec = wf_cost(str(path), 12.5, 10, out_dir=str(tmp_path))
    assert (rec["n_runs"], rec["n_files"], rec["bytes_total"], rec["all_classes_bytes"]) == (1, 1, 1234, 1234)
    assert rec["all_classes_seconds"] == 12.5
    assert read_cost(str(tmp_path)) == rec


def test_run_baseline_rejects_bad_input(tmp_path, trained):
    model, data = trained
    with pytest.raises(ValueError, match="wfkern.run_baseline: method must be one of"):
        run_baseline("nope", original=model, train_data=data, out_dir=tmp_path, num_classes=3)
    with pytest.raises(ValueError, match="model_fn must build an untrained model"):
        run_baseline("retrain", original=None, train_data=data, out_dir=tmp_path, num_classes=3, progress=False)
    with pytest.raises(FileNotFoundError, match="wfkern.load_state: path must be a checkpoint file"):
        load_state(tmp_path / "missing.safetensors")
