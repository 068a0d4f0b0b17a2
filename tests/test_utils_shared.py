"""The helpers every layer shares (wfkern._utils) and the loop the random-label baselines share."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wfkern._utils import SEED_SPREAD, SEED_STRIDE, TRAIN_SEED_STRIDE, model_device, trainable_copy
from wfkern.baselines._common import class_split, fine_tune_mode, random_label_epochs, resolve_num_classes
from wfkern.metrics.per_class import class_seed


def test_model_device_reads_parameters_then_buffers_and_takes_an_override():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    bn = nn.BatchNorm1d(2, affine=False)  # buffers only
    assert model_device(bn) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # neither: the CPU
    meta = nn.Linear(2, 2, device="meta")
    assert model_device(meta) == torch.device("meta")
    assert model_device(meta, "cpu") == torch.device("cpu")  # the override wins


def test_trainable_copy_leaves_the_original_alone():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    for p in model.parameters():
        p.requires_grad_(False)
    work, dev = trainable_copy(model)
    assert dev == torch.device("cpu") and work is not model
    assert all(p.requires_grad for p in work.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    for a, b in zip(model.parameters(), work.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_seed_constants_keep_their_values():
    # the derived seeds decide every published number: changing a constant changes every run
    assert (SEED_STRIDE, SEED_SPREAD, TRAIN_SEED_STRIDE) == (1_000_003, 7919, 100_003)
    assert class_seed(2, 3) == 2 * 1_000_003 + 7919 * 4


def test_class_split_and_num_classes():
    forget, retain = class_split(torch.tensor([1, 0, 1, 2]), 1)
    assert forget.tolist() == [0, 2] and retain.tolist() == [1, 3]
    assert resolve_num_classes(torch.tensor([0, 3]), None, "wfkern.x") == 4
    assert resolve_num_classes(torch.tensor([0, 3]), 6, "wfkern.x") == 6
    with pytest.raises(ValueError, match=r"^wfkern\.x: num_classes must be >= 2, got 1$"):
        resolve_num_classes(torch.tensor([0, 0]), None, "wfkern.x")


def test_fine_tune_mode_freezes_batchnorm_statistics():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).eval()
    fine_tune_mode(model)
    assert model.training and model[0].training and not model[1].training


def test_random_label_epochs_never_targets_the_class_and_calls_the_hooks_per_step(monkeypatch):
    labels = torch.arange(12) % 3                                   # 4 samples of class 1, 8 others
    data = TensorDataset(torch.randn(12, 2), labels)
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, calls = [], []
    real = nn.functional.cross_entropy

    def spy(logits, target):
        seen.append(target.clone())
        return real(logits, target)

    monkeypatch.setattr(nn.functional, "cross_entropy", spy)
    random_label_epochs(model, opt, data, labels, 1, 3, 4, epochs=2, batch_size=3,
                        generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), desc="t",
                        progress=False, after_backward=lambda: calls.append("b"), after_step=lambda: calls.append("s"))
    targets = torch.cat(seen)
    assert targets.numel() == 2 * (4 + 4)                            # forget + n_retain samples, each epoch
    assert int((targets == 1).sum()) == 0                            # retain samples are not of class 1 either
    assert calls == ["b", "s"] * 6                                   # ceil(8 / 3) steps per epoch, hooks in order


def test_state_differences_and_few_keys():
    from wfkern.models.importing import few_keys, state_differences

    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    have = {"b": torch.zeros(4), "c": torch.zeros(1), "d": torch.zeros(1)}
    assert state_differences(have, expected) == (["a"], ["d"], ["b"])
    assert state_differences(expected, expected) == ([], [], [])
    assert few_keys(["k1", "k2"]) == "k1, k2"
    assert few_keys([f"k{i}" for i in range(6)]) == "k0, k1, k2, k3 and 2 more"


def test_model_config_builds_what_the_registry_builds():
    from wfkern.models import DEFAULT_MODEL, create_model
    from wfkern.train import ModelConfig

    config = ModelConfig(DEFAULT_MODEL, 4, 1, 8, {"widths": [8, 16, 16]})
    torch.manual_seed(0)
    built = config.build()
    torch.manual_seed(0)
    direct = create_model(DEFAULT_MODEL, 4, 1, 8, widths=[8, 16, 16])
    assert built is not config.build() and type(built) is type(direct)
    a, b = built.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_gradients_per_batch_leave_the_model_alone():
    from wfkern.baselines._common import loss_gradients

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.unused = nn.Linear(1, 1)  # parameters the loss never reaches: left out

        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(0)
    model = Model()
    data = TensorDataset(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1]))
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3, 4])]
    out = list(loss_gradients(model, data, batches, torch.device("cpu"), "sum"))
    assert len(out) == 2 and set(out[0]) == {"fc.weight", "fc.bias"}
    x, y = data.tensors
    ref = model.fc(x[2:]).log_softmax(1).gather(1, y[2:, None]).sum().neg()
    ref.backward()
    assert torch.allclose(out[1]["fc.weight"], model.fc.weight.grad) and not model.training
    model.fc.weight.grad = None
    list(loss_gradients(model, data, batches, torch.device("cpu")))
    assert model.fc.weight.grad is None  # .grad untouched
