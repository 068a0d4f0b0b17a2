"""``wfkern.unlearn``: one untraining round that teaches the gates to forget every class (SPEC §2)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from wfkern.data import dataset_targets, iter_batches
from wfkern.train.distributed import DistContext, all_reduce_grads, all_reduce_sum, dist_context
from wfkern.unlearn.config import LAMBDA1_DEFAULTS, UnlearnConfig, model_family_of
from wfkern.unlearn.objective import expand_labels, per_sample_losses, pick_forget_labels, untraining_loss
from wfkern.unlearn.state import FILTERS_FILE, HISTORY_FILE, STATE_FILE, HistoryLog, Progress, load_state, save_state
from wfkern.unlearn.validation import make_validation_plan, validation_objective

__all__ = ["unlearn", "UnlearnResult", "UnlearnDiverged"]

log = logging.getLogger("wfkern.unlearn")


class UnlearnDiverged(RuntimeError):
    """The loss (or its gradient) became NaN/inf; the last good filters are loaded and on disk."""


@dataclass
class UnlearnResult:
    """Outcome of ``unlearn``.

    Attributes:
        best_objective: the lowest validation objective (its filters are loaded into ``wf``).
        best_step: the optimiser step it was reached at.
        steps: optimiser steps run in total.  epochs: epochs started.
        stopped_early: patience ran out before ``max_epochs``.
        seconds: untraining wall time (summed over resumed runs).
        history: one dict per validation (also in ``<out_dir>/history.jsonl``).
        config: the hyperparameters used (λ1 resolved).
    """

    best_objective: float
    best_step: int
    steps: int
    epochs: int
    stopped_early: bool
    seconds: float
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _eval_points(steps: int, evals: int) -> set[int]:
    """Steps (1-based, within an epoch) after which to validate: ``evals`` evenly spaced, the last at the end."""
    return {max(1, round((j + 1) * steps / evals)) for j in range(evals)}


def _make_optimizer(params, cfg: UnlearnConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def _batch_loss(wf, train_data: Dataset, targets: torch.Tensor, idx: torch.Tensor, step_seed: int,
                cfg: UnlearnConfig, lambda1: float, device: torch.device, ctx: DistContext):
    """Eq. 3 on this process's share of one global batch: first half forgets, second half retains (× χ).

    The random rows are drawn for the whole global batch from ``step_seed`` and then sharded, so any
    number of processes sees the same pairs as one process.
    """
    g = torch.Generator().manual_seed(step_seed)
    half = idx.numel() // 2
    f_idx, r_idx = idx[:half], idx[half:]
    f_rows = pick_forget_labels(targets[f_idx], g)                              # (B/2,)
    r_rows = expand_labels(targets[r_idx], wf.num_classes, cfg.chi, g)          # (χ, B/2)
    shard = slice(ctx.rank, None, ctx.world_size)
    f_idx, f_rows, r_idx, r_rows = f_idx[shard], f_rows[shard], r_idx[shard], r_rows[:, shard]
    keep = f_rows >= 0                                                          # multi-label rows without positives
    f_idx, f_rows = f_idx[keep], f_rows[keep]
    x, y = next(iter_batches(train_data, [torch.cat([f_idx, r_idx])]))
    x, y = x.to(device), y.to(device)
    nf = f_idx.numel()
    xs = torch.cat([x[:nf], x[nf:].repeat(cfg.chi, *([1] * (x.dim() - 1)))])
    # Host labels: wf checks them for free and copies them without blocking (no sync per step).
    logits = wf(xs, forget=torch.cat([f_rows, r_rows.reshape(-1)]))
    y_r = y[nf:].repeat(cfg.chi, *([1] * (y.dim() - 1)))
    loss_f = per_sample_losses(logits[:nf], y[:nf], f_rows.to(device, non_blocking=True) if y.dim() > 1 else None)
    loss_r = per_sample_losses(logits[nf:], y_r).view(cfg.chi, -1)
    return untraining_loss(loss_f, loss_r, wf.alpha_parameters(), cfg.lambda0, lambda1, cfg.lambda2, cfg.eps)


def _check_inputs(wf, train_data: Dataset, val_data: Dataset, out_dir: str | None, resume: bool) -> None:
    if not hasattr(wf, "alpha_parameters") or not hasattr(wf, "wf_layers"):
        raise TypeError(f"wfkern.unlearn: wf must be a wfkern.WFModel (from wfkern.patch), got {type(wf).__name__}")
    if not wf.alpha_parameters():
        raise ValueError("wfkern.unlearn: wf must have at least one WF layer, got none (nothing was patched)")
    if wf.num_classes < 2:
        raise ValueError(f"wfkern.unlearn: wf.num_classes must be >= 2, got {wf.num_classes}")
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if len(data) < 2:
            raise ValueError(f"wfkern.unlearn: {name} must hold at least 2 samples, got {len(data)}")
    if resume and out_dir is None:
        raise ValueError("wfkern.unlearn: out_dir must be set to resume, got None")
    if out_dir is not None and not os.path.isdir(out_dir):
        raise FileNotFoundError(f"wfkern.unlearn: out_dir must be an existing directory, got {out_dir!r}")


def _check_targets(name: str, targets: torch.Tensor, num_classes: int) -> None:
    """Labels the objective can use: (N,) class indices in [0, Nc), or (N, Nc) multi-hot in [0, 1]."""
    where = f"wfkern.unlearn: {name} labels"
    shape_rule = f"must be class indices (N,) or multi-hot targets (N, {num_classes})"
    if targets.is_complex() or targets.dim() not in (1, 2) or (targets.dim() == 2 and targets.shape[1] != num_classes):
        raise ValueError(f"{where} {shape_rule}, got {targets.dtype} of shape {tuple(targets.shape)}")
    if targets.dim() == 1:
        if targets.is_floating_point():
            fraction = ((targets != targets.round()) | targets.isinf()).nonzero().flatten()  # NaN included
            if fraction.numel():
                i = int(fraction[0])
                raise ValueError(f"{where} must be integer class indices, got {targets[i].item()} (sample {i})")
        labels = targets.long()
        bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"{where} must be in [0, {num_classes}) (the model's classes), got {int(labels[i])} "
                             f"(sample {i}; {bad.numel()} such samples)")
        return
    for start in range(0, targets.shape[0], 65536):  # bounded temporaries for large (N, Nc) targets
        rows = targets[start:start + 65536]
        outside = (rows < 0) | (rows > 1)
        if rows.is_floating_point():
            outside |= rows.isnan()
        bad = outside.nonzero()
        if bad.numel():
            i, j = (int(v) for v in bad[0])
            raise ValueError(f"{where} must be multi-hot targets in [0, 1], got {rows[i, j].item()} "
                             f"(sample {start + i}, class {j})")
        full = (rows > 0).all(1).nonzero().flatten()
        if full.numel():
            raise ValueError(f"{where} must leave at least one class negative in every sample (each is retained "
                             f"under another class's mask), got sample {start + int(full[0])} with all {num_classes} "
                             "classes positive")


def _check_data(wf, train_data: Dataset, val_data: Dataset) -> torch.Tensor:
    """Labels in range and one small batch of each split through the model, before any gate changes.

    Returns the training targets (read once: some datasets decode every sample to list them).

    The probe runs without grad in eval mode on the model's current device; every module's train /
    eval flag is restored afterwards, and the gates are never written.
    """
    train_targets = dataset_targets(train_data)
    _check_targets("train_data", train_targets, wf.num_classes)
    _check_targets("val_data", dataset_targets(val_data), wf.num_classes)
    device = wf.alpha_parameters()[0].device
    first = next(iter(wf.wf_layers().values())).base
    modes = {m: m.training for m in wf.modules()}
    try:
        wf.eval()
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            idx = torch.arange(min(2, len(data)))
            x, _ = next(iter_batches(data, [idx]))
            try:
                with torch.no_grad():
                    out = wf(x.to(device), forget=torch.zeros(idx.numel(), dtype=torch.long))
            except torch.cuda.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                hint = ""
                if isinstance(first, torch.nn.Conv2d) and x.dim() == 4 and x.shape[1] != first.in_channels:
                    hint = f" (its first conv takes {first.in_channels}-channel images)"
                raise ValueError(f"wfkern.unlearn: {name} must yield images the model can run{hint}, got a batch of "
                                 f"shape {tuple(x.shape)} that fails in the model: {why}") from e
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (idx.numel(), wf.num_classes):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"wfkern.unlearn: wf must return ({idx.numel()}, {wf.num_classes}) logits for a batch "
                                 f"of {idx.numel()} {name} images, got {got}")
    finally:
        for m, mode in modes.items():
            m.training = mode
    return train_targets


def _lambda1_at(cfg: UnlearnConfig, step: int, total: int) -> float:
    """λ1, ramped linearly from 0 over the first ``lambda1_warmup`` fraction of the run."""
    ramp = cfg.lambda1_warmup * total
    return cfg.lambda1 if ramp <= 0 else cfg.lambda1 * min(1.0, (step + 1) / ramp)


def unlearn(wf, train_data: Dataset, val_data: Dataset, *, lambda0: float = 1.0, lambda1: float | None = None,
            lambda2: float = 1.0, eps: float = 1e-6, chi: int = 3, batch_size: int = 128, optimizer: str = "sgd",
            lr: float = 100.0, momentum: float = 0.0, clip_norm: float | None = 0.5, lambda1_warmup: float = 0.0,
            alpha_init: float = 3.0, max_epochs: int = 30, evals_per_epoch: int = 5, patience: int = 10,
            seed: int = 0, device: str | torch.device | None = None, out_dir: str | None = None,
            resume: bool = False, progress: bool = True) -> UnlearnResult:
    """Untrain every class in one round: train only the gates so that ``wf(x, forget=c)`` forgets class c.

    Each global batch of ``batch_size`` is halved. The forget half is masked with each sample's own
    class, L_f = CE; the retain half is copied ``chi`` times, each copy masked with a class drawn
    uniformly from the others, L_r = CE (shape (χ, B/2)). Loss (Eq. 3, averaged):
    ``λ0·mean(L_r) + λ1·mean(1/(L_f+ε)) + λ2·mean(1−σ(alpha))``. Multi-label targets ((N, Nc)
    multi-hot): the forget row is a random positive label and L_f its ``-log σ(z)``, L_r is BCE.
    The same objective is evaluated on ``val_data`` (fixed rows) ``evals_per_epoch`` times an epoch;
    after ``patience`` evaluations without improvement the run stops; the best gates are kept.
    Under torchrun each process takes an equal shard of every global batch; gradients are averaged.

    Args:
        wf: a ``wfkern.patch``-ed model; its gates are trained in place and end at the best ones.
        train_data, val_data: datasets yielding (image, label) (``wfkern.data`` datasets are fastest).
        lambda0: weight of the retain loss.  lambda1: weight of the forget reciprocal (None: 10 for
            CNNs, 100 for ViTs).  lambda2: weight of the gate regulariser.  eps: guard of 1/(L_f + ε).
        chi: retain copies χ.  batch_size: global batch B.
        optimizer: "sgd" (default) or "adam".  lr: learning rate on the gate logits (100, the paper's).
        momentum: SGD momentum.  clip_norm: max global gradient norm; None = the paper's literal setting
            (it collapses: docs/untraining.md).  lambda1_warmup: fraction of the run over which λ1 ramps up.
        alpha_init: initial gate logit (σ(3) ≈ 0.95).  max_epochs: epoch cap.
        evals_per_epoch: validations per epoch.  patience: validations without improvement before stopping.
        seed: seeds the batch order and the drawn rows (nothing else is random).
        device: where to run (default: the gates' device).  out_dir: writes ``unlearn_state.safetensors``
            (at every validation, atomically), ``history.jsonl`` and the final ``filters.safetensors``.
        resume: continue from ``out_dir``'s checkpoint (same settings: same result as one run).
        progress: show a tqdm bar with the running losses (rank 0 only).
    Returns:
        UnlearnResult; the best gates are loaded into ``wf``.
    Raises:
        ValueError / TypeError: bad arguments.  UnlearnDiverged: NaN/inf loss or gradient.
    """
    _check_inputs(wf, train_data, val_data, out_dir, resume)
    # The values as given: UnlearnConfig refuses a fractional batch size rather than truncating it.
    cfg = UnlearnConfig(lambda0, LAMBDA1_DEFAULTS[model_family_of(wf)] if lambda1 is None else lambda1,
                        lambda2, eps, chi, batch_size, optimizer, lr, momentum, clip_norm, lambda1_warmup,
                        alpha_init, max_epochs, evals_per_epoch, patience, seed)
    cfg.validate()
    targets = _check_data(wf, train_data, val_data)  # before anything touches the gates (reset_alphas, resume)
    ctx = dist_context()
    params = wf.alpha_parameters()
    device = torch.device(device) if device is not None else params[0].device
    wf.to(device).eval()  # the base is frozen: BN uses its running statistics, dropout is off
    opt = _make_optimizer(params, cfg)
    state_path = os.path.join(out_dir, STATE_FILE) if out_dir else None
    prog, best_filters = _start(wf, opt, cfg, state_path, resume, device)
    history = HistoryLog(os.path.join(out_dir, HISTORY_FILE) if out_dir and ctx.rank == 0 else None,
                         keep_until_step=prog.step if resume else None)
    n = targets.shape[0]
    gbs = min(cfg.batch_size, n)
    steps = max(1, n // gbs)
    total = steps * cfg.max_epochs
    evals_at = _eval_points(steps, cfg.evals_per_epoch)
    plan = make_validation_plan(val_data, wf.num_classes, cfg.chi, cfg.seed)
    bar = _bar(total, prog.step, progress and ctx.rank == 0)
    t_start = time.perf_counter() - prog.seconds
    perm_epoch, perm = -1, None
    while not prog.done and prog.step < total:
        epoch, k = divmod(prog.step, steps)
        if epoch != perm_epoch:  # the batch order is a function of (seed, epoch) only
            perm_epoch = epoch
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        lam1 = _lambda1_at(cfg, prog.step, total)
        parts = _batch_loss(wf, train_data, targets, perm[k * gbs:(k + 1) * gbs],
                            cfg.seed * 1_000_003 + 7 * total + prog.step, cfg, lam1, device, ctx)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        all_reduce_grads(params, ctx)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm else float("inf"))
        terms = [parts.total.item(), parts.retain.item(), parts.forget.item(), parts.reg.item()]
        ok = float(math.isfinite(terms[0]) and math.isfinite(gnorm.item()))
        if all_reduce_sum(torch.tensor([ok]), ctx).item() != ctx.world_size:  # every process stops together
            _diverged(wf, opt, best_filters, prog, state_path, ctx, terms[0], epoch)
        opt.step()
        prog.step += 1
        prog.running = terms if not prog.running else [0.9 * r + 0.1 * t for r, t in zip(prog.running, terms)]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{prog.running[0]:.3f}", L_r=f"{prog.running[1]:.3f}",
                            L_f=f"{prog.running[2]:.2f}", R=f"{prog.running[3]:.3f}")
        if k + 1 in evals_at:
            prog.seconds = time.perf_counter() - t_start
            best_filters = _validate(wf, val_data, plan, cfg, device, ctx, prog, best_filters, history, lam1, epoch,
                                     opt, state_path)
    if bar is not None:
        bar.close()
    prog.seconds = time.perf_counter() - t_start
    stopped_early = prog.done and prog.step < total
    _finish(wf, opt, cfg, prog, best_filters, out_dir, state_path, ctx, device)
    return UnlearnResult(prog.best_objective, prog.best_step, prog.step, math.ceil(prog.step / steps),
                         stopped_early, prog.seconds, list(history.records), cfg.to_dict())


def _start(wf, opt, cfg: UnlearnConfig, state_path: str | None, resume: bool, device) -> tuple[Progress, dict]:
    """Fresh gates (alpha_init) or the checkpoint's gates and optimiser state; returns (progress, best gates)."""
    if not resume:
        wf.reset_alphas(cfg.alpha_init)
        return Progress(config=cfg.to_dict()), wf.filters_state_dict()
    current, best, opt_state, prog = load_state(state_path)
    bad = cfg.resume_mismatch(prog.config)
    if bad:
        raise ValueError(f"wfkern.unlearn: resume settings must match the checkpoint, got different {bad}")
    wf.load_filters_state_dict({k: v.to(device) for k, v in current.items()})
    opt.load_state_dict(opt_state)
    return prog, best


def _finish(wf, opt, cfg: UnlearnConfig, prog: Progress, best_filters, out_dir, state_path, ctx, device) -> None:
    """Load the best gates; write the final checkpoint (marked done) and filters.safetensors."""
    prog.done = True
    wf.load_filters_state_dict({k: v.to(device) for k, v in best_filters.items()})
    if out_dir and ctx.rank == 0:
        save_state(state_path, wf.filters_state_dict(), best_filters, opt, prog)
        wf.save_filters(os.path.join(out_dir, FILTERS_FILE), extra_metadata={
            "unlearn_config": cfg.to_dict(), "best_objective": prog.best_objective, "best_step": prog.best_step})


def _validate(wf, val_data, plan, cfg: UnlearnConfig, device, ctx, prog: Progress, best_filters, history: HistoryLog,
              lam1, epoch, opt, state_path):
    """One validation: record it, keep the best gates, update patience, checkpoint. Returns the best gates."""
    v = validation_objective(wf, val_data, plan, (cfg.lambda0, cfg.lambda1, cfg.lambda2), cfg.eps, device, ctx)
    prog.evals += 1
    improved = v["objective"] < prog.best_objective
    if improved:
        prog.best_objective, prog.best_step, prog.bad_evals = v["objective"], prog.step, 0
        best_filters = wf.filters_state_dict()
    else:
        prog.bad_evals += 1
        prog.done = prog.bad_evals >= cfg.patience
    rec = {"eval": prog.evals, "step": prog.step, "epoch": epoch + 1, "seconds": round(prog.seconds, 3),
           "lambda1": lam1, "train_loss": prog.running[0], "train_retain": prog.running[1],
           "train_forget": prog.running[2],
           **{f"val_{k}": val for k, val in v.items()}, "best": improved}
    history.append(rec)
    if ctx.rank == 0:
        log.info("unlearn eval %d (epoch %d, step %d): val objective %.4f (L_r %.4f, 1/L_f %.4f, R %.4f) "
                 "acc_r %.4f acc_f %.4f%s", prog.evals, epoch + 1, prog.step, v["objective"], v["retain"], v["recip"],
                 v["reg"], v["acc_r"], v["acc_f"], " *best*" if improved else f" (patience {prog.bad_evals}/{cfg.patience})")
    if state_path and ctx.rank == 0:
        save_state(state_path, wf.filters_state_dict(), best_filters, opt, prog)
    return best_filters


def _diverged(wf, opt, best_filters, prog: Progress, state_path, ctx, value: float, epoch: int) -> None:
    """Stop on a NaN/inf loss: keep the best gates in memory and the last good checkpoint on disk."""
    if state_path and ctx.rank == 0 and not os.path.isfile(state_path):
        save_state(state_path, wf.filters_state_dict(), best_filters, opt, prog)  # gates before the bad step
    wf.load_filters_state_dict({k: v.to(wf.alpha_parameters()[0].device) for k, v in best_filters.items()})
    where = f"; the last good filters are in {state_path}" if state_path else ""
    raise UnlearnDiverged(f"wfkern.unlearn: loss must stay finite, got {value} (or a non-finite gradient) at step "
                          f"{prog.step + 1} (epoch {epoch + 1}){where}; lower lr or set clip_norm")


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="unlearn", leave=False, dynamic_ncols=True)
