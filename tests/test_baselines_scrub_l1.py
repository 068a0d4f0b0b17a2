"""SCRUB and l1-sparse (docs/evaluation.md): their defining properties, that each forgets a class of a small digits CNN
while keeping the others, and that they run through `wfkern baseline` like the other single-class methods."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from wfkern.baselines import (BASELINES, class_checkpoint, distill_kl, fine_tune, l1_norm, l1_schedule, l1_sparse,
                              load_state, run_baseline, scrub)
from wfkern.cli.main import main

from _baselines_common import Recording, accs, blob_mlp, blobs, digits, one_thread, state_copy  # noqa: F401 - fixtures


# --- SCRUB ------------------------------------------------------------------------------------------------------


def test_distill_kl_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    T = 2.0

    def sm(v):
        e = [math.exp(a / T) for a in v]
        return [a / sum(e) for a in e]

    kl = []
    for si, ti in zip(s.tolist(), t.tolist()):
        p, q = sm(si), sm(ti)
        kl.append(sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q)))
    assert float(distill_kl(s, t, T)) == pytest.approx(T * T * sum(kl) / 2)
    assert kl[1] == 0.0 and float(distill_kl(t, t, T)) == pytest.approx(0.0, abs=1e-12)


def test_scrub_reads_forget_samples_only_in_max_epochs(digits):
    model, train, _, _ = digits
    c = 3
    before = state_copy(model)
    data = Recording(train)
    out = scrub(model, data, c, epochs=3, forget_epochs=2, seed=0)
    forget = torch.nonzero(train.targets == c).flatten()
    reads = torch.tensor(data.read)
    n_forget = int(torch.isin(reads, forget).sum())
    assert n_forget == 2 * forget.numel()  # one pass over the forget samples in each of the 2 max-epochs
    assert reads.numel() - n_forget == 3 * (len(train) - forget.numel())  # every retain sample in each min-epoch
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the teacher is untouched
    params = dict(model.named_parameters())
    for k, v in out.state_dict().items():
        if k not in params:
            assert torch.equal(v, before[k]), k  # BatchNorm statistics frozen
    assert any(not torch.equal(v, before[k]) for k, v in out.state_dict().items())


def test_scrub_forgets_with_its_defaults(digits):
    model, train, x, y = digits
    out = scrub(model, train, 3, seed=0)
    acc_f, acc_r = accs(out, x, y, 3)
    assert accs(model, x, y, 3)[0] > 0.95 and acc_f <= 0.1 and acc_r >= 0.9  # measured: 0.98 -> 0.0, Acc_r 0.978


def test_scrub_without_max_epochs_never_reads_the_class(digits):
    model, train, _, _ = digits
    data = Recording(train)
    scrub(model, data, 5, epochs=1, forget_epochs=0, seed=0)
    assert data.read and not set(data.read) & set(torch.nonzero(train.targets == 5).flatten().tolist())


def test_scrub_undoes_a_diverged_epoch_and_ends_the_max_steps(digits):
    """At lr 0.02 the second max-epoch drives the loss to inf / NaN (measured): that epoch is undone, the run goes on
    with min-steps and ends finite, a working model; at lr 0.05 the min-steps diverge too, which is an error."""
    model, train, x, y = digits
    with pytest.warns(RuntimeWarning, match=r"epoch 1 of class 3 diverged .* max-steps end after 1 of 2 max-epochs"):
        out = scrub(model, train, 3, lr=0.02, epochs=3, forget_epochs=2, seed=0)
    assert all(bool(torch.isfinite(v).all()) for v in out.state_dict().values() if v.is_floating_point())
    acc_f, acc_r = accs(out, x, y, 3)
    assert acc_f < accs(model, x, y, 3)[0] and acc_r >= 0.9, (acc_f, acc_r)  # measured: 0.52 (from 0.98), 0.95
    with pytest.warns(RuntimeWarning), pytest.raises(FloatingPointError, match="lower lr .got 0.05."):
        scrub(model, train, 3, lr=0.05, epochs=3, forget_epochs=2, seed=0)


def test_scrub_that_stays_finite_is_the_reference_loop_bit_for_bit(digits):
    """The undo only keeps a copy of the state before each max-epoch: a run that never diverges gives the weights of
    the reference code's loop, restated here from its definition (max-epoch, then min-epoch, one SGD optimiser)."""
    from wfkern._utils import trainable_copy
    from wfkern.baselines._common import class_split, fine_tune_mode
    from wfkern.data import dataset_targets, iter_batches

    model, train, _, _ = digits
    c, epochs, forget_epochs, lr, temperature, seed = 4, 2, 1, 5e-4, 4.0, 4
    out = scrub(model, train, c, epochs=epochs, forget_epochs=forget_epochs, seed=seed)

    forget, retain = class_split(dataset_targets(train, single_label=True), c)
    student, _ = trainable_copy(model, None)
    teacher, _ = trainable_copy(model, None)
    teacher.eval().requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)

    def passes(idx, batch_size, loss_of):
        order = idx[torch.randperm(idx.numel(), generator=generator)]
        for xb, yb in iter_batches(train, order.split(batch_size)):
            s, t = student(xb), teacher(xb).detach()
            loss = loss_of(s, t, torch.as_tensor(yb).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for epoch in range(epochs):
        fine_tune_mode(student)
        if epoch < forget_epochs:
            passes(forget, 32, lambda s, t, yb: -distill_kl(s, t, temperature))
        retain_drawn = retain[torch.randperm(retain.numel(), generator=generator)]
        passes(retain_drawn, 128, lambda s, t, yb: 0.001 * distill_kl(s, t, temperature)
               + 0.99 * nn.functional.cross_entropy(s, yb))
    expected = student.eval().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in out.state_dict().items())


# --- l1-sparse --------------------------------------------------------------------------------------------------


def test_l1_schedule_and_norm_by_hand():
    assert [l1_schedule(1e-3, e, 4) for e in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.5, -2.0]]))
        lin.bias.fill_(-0.25)
    assert float(l1_norm(lin).detach()) == 3.75


def test_l1_sparse_without_penalty_is_ft_and_with_it_is_sparser(digits):
    model, train, x, y = digits
    kw = dict(epochs=2, lr=0.05, seed=1)
    ft = fine_tune(model, train, 2, **kw)
    zero = l1_sparse(model, train, 2, l1=0.0, **kw)
    assert all(torch.equal(v, ft.state_dict()[k]) for k, v in zero.state_dict().items())  # FT's loop, bit for bit
    data = Recording(train)
    sparse = l1_sparse(model, data, 2, l1=1e-3, **kw)
    assert data.read and not set(data.read) & set(torch.nonzero(train.targets == 2).flatten().tolist())
    assert float(l1_norm(sparse).detach()) < 0.97 * float(l1_norm(ft).detach())  # measured: 1118 against 1169


def test_l1_sparse_forgets(digits):
    model, train, x, y = digits
    out = l1_sparse(model, train, 6, seed=0)
    acc_f, acc_r = accs(out, x, y, 6)
    assert accs(model, x, y, 6)[0] > 0.95 and acc_f <= 0.1 and acc_r >= 0.9  # measured: 1.0 -> 0.0, Acc_r 0.993


# --- the runner and the CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,kw", [("scrub", {"epochs": 2, "forget_epochs": 1, "temperature": 2.0}),
                                       ("l1-sparse", {"epochs": 2, "l1": 1e-4})])
def test_run_baseline_records_cost_and_checkpoints_like_the_others(tmp_path, method, kw):
    assert method in BASELINES
    torch.manual_seed(0)
    model = blob_mlp().eval()
    rec = run_baseline(method, original=model, train_data=blobs(), out_dir=tmp_path, num_classes=3, classes=[1],
                       method_kwargs=kw, progress=False)
    assert rec["method"] == method and rec["n_runs"] == 1 and rec["method_kwargs"] == kw
    assert json.loads((tmp_path / "cost.json").read_text()) == rec
    assert load_state(class_checkpoint(tmp_path, 1))[1] == {"method": method, "class": 1, "num_classes": 3}
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        run_baseline("scrub", original=model, train_data=blobs(), out_dir=tmp_path / "bad", num_classes=3,
                     method_kwargs={"temperature": 0.0}, progress=False)


def test_a_baseline_that_diverges_saves_nothing_for_that_class(tmp_path, monkeypatch, capsys):
    """Any method whose model comes back with NaN / inf weights: an error naming the method, the class and the
    tensor; the classes before it keep their checkpoints; `wfkern baseline` says it in one line, exit 1."""
    import wfkern.baselines.runner as runner

    real = runner._unlearn_one

    def nan_for_class_2(method, c, *args):
        out = real(method, c, *args)
        if c == 2:
            with torch.no_grad():
                out[0].weight[0, 0] = float("nan")
        return out

    monkeypatch.setattr(runner, "_unlearn_one", nan_for_class_2)
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=r"ft diverged on class 2: .*1 NaN .*'0.weight'"):
        run_baseline("ft", original=blob_mlp().eval(), train_data=blobs(), out_dir=tmp_path, num_classes=3,
                     method_kwargs={"epochs": 1}, progress=False)
    assert class_checkpoint(tmp_path, 1).exists() and not class_checkpoint(tmp_path, 2).exists()
    assert not (tmp_path / "cost.json").exists()

    ck = str(tmp_path / "model.safetensors")
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    monkeypatch.setattr(runner, "_unlearn_one", lambda method, c, *args: _nan_model(real(method, c, *args)))
    capsys.readouterr()
    rc = main(["baseline", "--method", "ft", "--checkpoint", ck, "--out-dir", str(tmp_path / "cli"), "--classes", "0",
               "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "wfkern baseline: failed: wfkern.run_baseline: ft diverged on class 0" in err, err
    assert "Traceback" not in err


def _nan_model(model):
    with torch.no_grad():
        next(p for p in model.parameters() if p.is_floating_point()).view(-1)[0] = float("nan")
    return model


def test_cli_flags(tmp_path, capsys):
    ck = str(tmp_path / "model.safetensors")
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    assert main(["baseline", "--method", "l1-sparse", "--checkpoint", ck, "--out-dir", str(tmp_path / "l1"),
                 "--classes", "0", "--epochs", "1", "--l1", "1e-4", "--no-progress"]) == 0
    assert json.loads((tmp_path / "l1" / "cost.json").read_text())["method_kwargs"] == {"epochs": 1, "l1": 1e-4}
    capsys.readouterr()
    base = ["baseline", "--checkpoint", ck, "--out-dir", str(tmp_path / "bad"), "--no-progress"]
    for argv, match in ([["--method", "ft", "--l1", "1"], "--l1 must not be given for --method ft"],
                        [["--method", "scrub", "--forget-epochs", "-1"], "--forget-epochs must be an integer >= 0"]):
        rc = main([*base, *argv])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err, err
