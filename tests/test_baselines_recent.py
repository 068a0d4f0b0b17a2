"""FT, SSD and SalUn (docs/evaluation.md): their defining properties, that each forgets a class of a small digits CNN
while keeping the others, and that their runs flow through `wfkern baseline` -> `evaluate` -> `report`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from wfkern.baselines import (BASELINES, class_checkpoint, default_alpha, fine_tune, fisher_diagonal, load_state,
                              per_class_loader, run_baseline, saliency_mask, salun, ssd, ssd_dampen)
from wfkern.cli.main import main

from _baselines_common import Recording, accs, blob_mlp, blobs, digits, one_thread, state_copy  # noqa: F401 - fixtures


# --- FT ---------------------------------------------------------------------------------------------------------


def test_ft_never_draws_a_forget_sample_and_forgets(digits):
    model, train, x, y = digits
    before = state_copy(model)
    data = Recording(train)
    out = fine_tune(model, data, 3, epochs=3, seed=0)
    forget = set(torch.nonzero(train.targets == 3).flatten().tolist())
    assert data.read and not forget & set(data.read)  # not a single class-3 sample was ever read
    assert set(data.read) == set(range(len(train))) - forget  # every retain sample was
    acc_f, acc_r = accs(out, x, y, 3)
    assert accs(model, x, y, 3)[0] > 0.95 and acc_f <= 0.3 and acc_r >= 0.9  # measured: 0.98 -> 0.02, 0.96
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched


# --- SSD --------------------------------------------------------------------------------------------------------


def test_ssd_dampen_by_hand():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -3.0, 5.0, 7.0]]))
    i_d = {"weight": torch.tensor([[1.0, 1.0, 0.0, 1.0]])}
    i_f = {"weight": torch.tensor([[5.0, 20.0, 3.0, 0.0]])}
    assert ssd_dampen(lin, i_d, i_f, alpha=10.0, lam=1.0) == 2  # 20 > 10 * 1 and 3 > 10 * 0
    assert torch.equal(lin.weight, torch.tensor([[2.0, -3.0, 5.0, 7.0]]) * torch.tensor([[1.0, 1.0 / 20.0, 0.0, 1.0]]))
    lin.weight.data.fill_(1.0)
    assert ssd_dampen(lin, i_d, i_f, alpha=2.0, lam=100.0) == 3  # beta = min(100 * I_D / I_Df, 1): never grows
    assert lin.weight.tolist() == [[1.0, 1.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="alpha and lambda must be >= 0"):
        ssd_dampen(lin, i_d, i_f, alpha=-1.0)


def test_ssd_default_alpha_is_the_papers_where_it_can_select():
    assert default_alpha(50000, 500) == 10.0 and default_alpha(50000, 2500) == 10.0  # CIFAR-100, CIFAR-20
    assert default_alpha(1000, 100) == 5.0  # 10 balanced classes: I_Df / I_D <= N / N_f = 10


def test_ssd_touches_only_the_selected_parameters_and_forgets(digits):
    model, train, x, y = digits
    c = 0
    before = state_copy(model)
    out = ssd(model, train, c)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the importances ssd() uses: D in the reference order (retain grouped by class, then the forget class)
    labels = train.targets
    forget, retain = torch.nonzero(labels == c).flatten(), torch.nonzero(labels != c).flatten()
    full = torch.cat([retain[torch.sort(labels[retain], stable=True).indices], forget])
    i_d = fisher_diagonal(model, train, full.split(64))
    i_f = fisher_diagonal(model, train, forget.split(64))
    alpha = default_alpha(len(labels), forget.numel())
    params = dict(model.named_parameters())
    n_sel = n_all = 0
    for name, new in out.named_parameters():
        old = params[name].detach()
        sel = i_f[name] > alpha * i_d[name]
        assert torch.equal(new[~sel], old[~sel])  # bit for bit
        assert (new[sel].abs() <= old[sel].abs()).all() and (new[sel] * old[sel] >= 0).all()  # shrink, never grow
        beta = (i_d[name][sel] / i_f[name][sel]).clamp(max=1.0)
        assert torch.equal(new[sel], old[sel] * beta)
        n_sel, n_all = n_sel + int(sel.sum()), n_all + sel.numel()
    assert 0 < n_sel < 0.05 * n_all
    for k, v in out.state_dict().items():  # buffers (BatchNorm statistics) untouched
        if k not in params:
            assert torch.equal(v, before[k])
    acc_f, acc_r = accs(out, x, y, c)
    assert acc_f <= 0.1 and acc_r >= 0.9  # measured: 1.00 -> 0.00, Acc_r 0.975 -> 0.975


# --- SalUn ------------------------------------------------------------------------------------------------------


def test_saliency_mask_is_the_top_fraction_of_the_forget_gradient(digits):
    model, train, _, _ = digits
    forget = torch.nonzero(train.targets == 5).flatten()
    x, y = train.get_batch(forget)
    named = list(model.named_parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [p for _, p in named])
    sal = {n: g.abs() for (n, _), g in zip(named, grads)}
    total = sum(p.numel() for _, p in named)
    half = saliency_mask(model, train, forget, fraction=0.5)
    quarter = saliency_mask(model, train, forget, fraction=0.25)
    assert sum(int(m.sum()) for m in half.values()) == total // 2
    assert sum(int(m.sum()) for m in quarter.values()) == total // 4
    assert all(bool((quarter[n] <= half[n]).all()) for n in half)  # nested
    inside = torch.cat([sal[n][half[n]] for n in half])
    outside = torch.cat([sal[n][~half[n]] for n in half])
    assert inside.min() >= outside.max() * (1 - 1e-5)  # one global threshold (float rounding of the batched sum)
    assert not any(m.any() for m in saliency_mask(model, train, forget, fraction=0.0).values())
    with pytest.raises(ValueError, match="fraction must be in"):
        saliency_mask(model, train, forget, fraction=1.5)


def test_salun_changes_only_the_salient_weights_and_forgets(digits):
    model, train, x, y = digits
    c = 4
    before = state_copy(model)
    data = Recording(train)
    out = salun(model, data, c, epochs=2, seed=0)
    assert set(data.read) == set(range(len(train)))  # the forget samples mixed with every retain sample
    forget = torch.nonzero(train.targets == c).flatten()
    mask = saliency_mask(model, train, forget, fraction=0.5)
    params = dict(model.named_parameters())
    changed = 0
    for name, new in out.named_parameters():
        old = params[name].detach()
        assert torch.equal(new[~mask[name]], old[~mask[name]])  # bit for bit outside the mask
        changed += int((new[mask[name]] != old[mask[name]]).sum())
    assert changed > 0
    for k, v in out.state_dict().items():  # BatchNorm statistics stay frozen
        assert k in params or torch.equal(v, before[k])
    acc_f, acc_r = accs(out, x, y, c)
    assert acc_f <= 0.1 and acc_r >= 0.9  # measured: 1.00 -> 0.00, Acc_r 0.975 -> 0.98


# --- the runner, the CLI, evaluate and report -------------------------------------------------------------------


@pytest.mark.parametrize("method,kw", [("ft", {"epochs": 2}), ("ssd", {}), ("salun", {"epochs": 2, "lr": 1e-2})])
def test_run_baseline_records_cost_and_checkpoints_like_the_others(tmp_path, method, kw):
    assert method in BASELINES
    torch.manual_seed(0)
    model, data = blob_mlp().eval(), blobs()
    rec = run_baseline(method, original=model, train_data=data, out_dir=tmp_path, num_classes=3, classes=[1, 2],
                       method_kwargs=kw, progress=False)
    sizes = [class_checkpoint(tmp_path, c).stat().st_size for c in (1, 2)]
    assert rec["method"] == method and rec["n_runs"] == rec["n_files"] == 2 and rec["bytes_total"] == sum(sizes)
    assert rec["seconds_total"] > 0 and rec["all_classes_bytes"] == pytest.approx(sum(sizes) / 2 * 3)
    assert rec["method_kwargs"] == kw and json.loads((tmp_path / "cost.json").read_text()) == rec
    assert sorted(json.loads((tmp_path / "cost" / "class_00002.json").read_text())) == ["bytes", "seconds"]
    _, meta = load_state(class_checkpoint(tmp_path, 2))
    assert meta == {"method": method, "class": 2, "num_classes": 3}
    per_class_loader(tmp_path, blob_mlp)(2)  # loads into the original architecture


@pytest.mark.parametrize("kw,match", [({"lr": -1.0}, "lr must be a finite number > 0"),
                                      ({"fraction": 2.0}, "fraction must be a number in"),
                                      ({"alpha": 1.0}, "method_kwargs of 'salun' must be drawn from")])
def test_run_baseline_refuses_bad_settings_before_any_work(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_baseline("salun", original=blob_mlp(), train_data=blobs(), out_dir=tmp_path, num_classes=3, method_kwargs=kw,
                      progress=False)
    assert not list(tmp_path.iterdir())


def _user_error(capsys, argv, match):
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and match in err, err


def test_cli_baseline_evaluate_report(tmp_path, capsys):
    ck = str(tmp_path / "model.safetensors")
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "1", "--out", ck, "--no-progress"]) == 0
    runs = {"ft": ["--epochs", "1"], "ssd": ["--alpha", "3", "--lambda", "1"],
            "salun": ["--epochs", "1", "--saliency-fraction", "0.3", "--retain-ratio", "1"]}
    for method, extra in runs.items():
        assert main(["baseline", "--method", method, "--checkpoint", ck, "--out-dir", str(tmp_path / method),
                     "--classes", "0", "--no-progress", *extra]) == 0
        cost = json.loads((tmp_path / method / "cost.json").read_text())
        assert cost["method"] == method and cost["classes"] == [0] and cost["n_runs"] == 1
    assert json.loads((tmp_path / "salun" / "cost.json").read_text())["method_kwargs"] == \
        {"epochs": 1, "fraction": 0.3, "retain_ratio": 1.0}
    assert main(["evaluate", "--checkpoint", ck, "--baseline-dir", str(tmp_path / "ssd"), "--out", str(tmp_path / "e"),
                 "--classes", "0", "--rt-max-epochs", "1", "--rt-samples", "32", "--mia-max-samples", "50",
                 "--test-per-class", "10", "--no-progress"]) == 0
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["method"] == "ssd" and res["cost"]["n_runs"] == 1 and "acc_f" in res["per_class"]["0"]
    assert main(["report", str(tmp_path / "e"), "--out", str(tmp_path / "rep")]) == 0
    assert "ssd" in (tmp_path / "rep" / "report.md").read_text().lower()
    capsys.readouterr()
    base = ["baseline", "--checkpoint", ck, "--out-dir", str(tmp_path / "bad"), "--no-progress"]
    _user_error(capsys, [*base, "--method", "ft", "--alpha", "3"], "--alpha must not be given for --method ft")
    _user_error(capsys, [*base, "--method", "salun", "--saliency-fraction", "1.5"],
                "--saliency-fraction must be a number in [0, 1], got 1.5")
    _user_error(capsys, [*base, "--method", "ssd", "--lambda", "-1"], "--lambda must be a finite number >= 0")
