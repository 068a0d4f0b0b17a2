"""``wfkern.unlearn``: one untraining round that teaches the gates to forget every class (docs/method.md §2)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from wfkern._utils import SEED_STRIDE, interactive
from wfkern.data import dataset_targets, iter_batches
from wfkern.train.distributed import DistContext, all_reduce_grads, all_reduce_sum, dist_context
from wfkern.unlearn.config import UnlearnConfig
from wfkern.unlearn.objective import (combine_losses, expand_labels, forget_terms, original_logits, pick_forget_labels,
                                      retain_terms)
from wfkern.unlearn.state import FILTERS_FILE, HISTORY_FILE, STATE_FILE, HistoryLog, Progress, load_state, save_state
from wfkern.unlearn.validation import ValidationPlan, make_validation_plan, validation_objective

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


def _batch_loss(run: _Run, idx: torch.Tensor, step_seed: int, lambda1: float):
    """The untraining loss on this process's share of one global batch: first half forgets, second retains (× χ).

    The random rows are drawn for the whole global batch from ``step_seed`` and then sharded, so any
    number of processes sees the same pairs as one process.
    """
    wf, targets, cfg, ctx, device = run.wf, run.targets, run.cfg, run.ctx, run.device
    g = torch.Generator().manual_seed(step_seed)
    half = idx.numel() // 2
    f_idx, r_idx = idx[:half], idx[half:]
    f_rows = pick_forget_labels(targets[f_idx], g)                              # (B/2,)
    r_rows = expand_labels(targets[r_idx], wf.num_classes, cfg.chi, g)          # (χ, B/2)
    shard = slice(ctx.rank, None, ctx.world_size)
    f_idx, f_rows, r_idx, r_rows = f_idx[shard], f_rows[shard], r_idx[shard], r_rows[:, shard]
    keep = f_rows >= 0                                                          # multi-label rows without positives
    f_idx, f_rows = f_idx[keep], f_rows[keep]
    x, y = next(iter_batches(run.train_data, [torch.cat([f_idx, r_idx])]))
    x, y = x.to(device), y.to(device)
    nf = f_idx.numel()
    teacher = original_logits(wf, x[nf:], cfg.retain_loss, copies=cfg.chi)
    xs = torch.cat([x[:nf], x[nf:].repeat(cfg.chi, *([1] * (x.dim() - 1)))])
    # Host labels: wf checks them for free and copies them without blocking (no sync per step).
    logits = wf(xs, forget=torch.cat([f_rows, r_rows.reshape(-1)]))
    y_r = y[nf:].repeat(cfg.chi, *([1] * (y.dim() - 1)))
    term, loss_f = forget_terms(logits[:nf], y[:nf], f_rows.to(device, non_blocking=True), cfg.forget_loss,
                                cfg.margin, cfg.eps)
    loss_r = retain_terms(logits[nf:], y_r, teacher, cfg.retain_loss, cfg.temperature)
    return combine_losses(term, loss_f, loss_r, wf.alpha_parameters(), cfg.lambda0, lambda1, cfg.lambda2)


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


@dataclass
class _Run:
    """One untraining round, as its steps share it (built by ``_open_run``)."""

    wf: torch.nn.Module
    train_data: Dataset
    val_data: Dataset
    targets: torch.Tensor        # the training labels, read once
    cfg: UnlearnConfig           # λ1 resolved
    device: torch.device
    ctx: DistContext
    params: list                 # the gate logits (the only trained tensors)
    opt: torch.optim.Optimizer
    state_path: str | None       # the resumable checkpoint, None without out_dir
    out_dir: str | None
    prog: Progress
    best_filters: dict           # the gates of the best validation so far
    history: HistoryLog
    plan: ValidationPlan         # the fixed validation rows
    reporter: _Reporter
    batch: int                   # global batch size (at most the training set)
    steps: int                   # optimiser steps an epoch
    total: int                   # optimiser steps of the whole run
    evals_at: set[int]           # steps within an epoch after which to validate


def unlearn(wf, train_data: Dataset, val_data: Dataset, config: UnlearnConfig | None = None, *,
            device: str | torch.device | None = None, out_dir: str | None = None, resume: bool = False,
            progress: bool = True, **overrides) -> UnlearnResult:
    """Untrain every class in one round: train only the gates so that ``wf(x, forget=c)`` forgets class c.

    Each global batch of ``batch_size`` is halved. The forget half is masked with each sample's own
    class; the retain half is copied ``chi`` times, each copy masked with a class drawn uniformly from the
    others. Loss: ``λ0·mean(retain) + λ1·mean(forget) + λ2·mean(1−σ(alpha))``. By default the retain
    rows are distilled from the original model (``T²·KL`` at temperature T: each class's mask must leave
    the other classes' outputs as they were) and the forget rows take the margin loss
    ``relu(z_c − max_{j≠c} z_j + margin)`` (the class must lose by ``margin`` logits, then it stops
    pushing); the paper's Eq. 3 (CE retain loss, ``1/(L_f + ε)`` forget loss) is ``**PAPER_RECIPE``.
    Multi-label targets ((N, Nc) multi-hot): the forget row is a random positive label (margin:
    ``relu(z_c + margin)``; L_f its ``-log σ(z)``), the retain rows a Bernoulli KL per class (or BCE).
    The same loss is evaluated on ``val_data`` (fixed rows) ``evals_per_epoch`` times an epoch;
    after ``patience`` evaluations without improvement the run stops; the best gates are kept.
    Under torchrun each process takes an equal shard of every global batch; gradients are averaged.

    Args:
        wf: a ``wfkern.patch``-ed model; its gates are trained in place and end at the best ones.
        train_data, val_data: datasets yielding (image, label) (``wfkern.data`` datasets are fastest).
        config: the hyperparameters, an ``UnlearnConfig`` (default ``UnlearnConfig()``: the measured recipe,
            docs/untraining.md); each field's meaning and default are written there, once.
        **overrides: fields of ``UnlearnConfig`` by name, replacing ``config``'s (``lr=10``, ``max_epochs=5``,
            ``**PAPER_RECIPE`` for the paper's literal setting). An unknown name is a TypeError that lists the
            settings. ``lambda1=None`` (the default) is 1 with the margin loss, and with the reciprocal the
            model family's: 10 for CNNs, 100 for ViTs; ``lr=None`` is 0.2 for Adam (the default), 100 for SGD.
        device: where to run (default: the gates' device).  out_dir: writes ``unlearn_state.safetensors``
            (at every validation, atomically), ``history.jsonl`` and the final ``filters.safetensors``.
        resume: continue from ``out_dir``'s checkpoint (same settings: same result as one run).
        progress: show progress (rank 0 only): on a terminal (or in a notebook) a tqdm bar whose postfix holds
            the running loss and the last validation; otherwise (a log file, a pipe) a plain line every 10% of
            the steps (at most one a minute apart, at least 5 s apart), never escape codes. The full line of every
            validation is logged at DEBUG while progress shows (``wfkern -v``), at INFO without it.
    Returns:
        UnlearnResult; the best gates are loaded into ``wf``.
    Raises:
        ValueError / TypeError: bad arguments.  UnlearnDiverged: NaN/inf loss or gradient.
    """
    _check_inputs(wf, train_data, val_data, out_dir, resume)
    cfg = _resolve_config(wf, config, overrides)
    targets = _check_data(wf, train_data, val_data)  # before anything touches the gates (reset_alphas, resume)
    run = _open_run(wf, train_data, val_data, targets, cfg, device, out_dir, resume, progress)
    _train(run)
    return _finish(run)


def _resolve_config(wf, config: UnlearnConfig | None, overrides: dict) -> UnlearnConfig:
    """``config`` (default ``UnlearnConfig()``) with ``overrides`` in place and λ1 / lr resolved (``for_model``).

    The values as given: ``UnlearnConfig`` refuses a fractional batch size rather than truncating it.
    """
    if config is None:
        config = UnlearnConfig()
    elif not isinstance(config, UnlearnConfig):
        raise TypeError(f"wfkern.unlearn: config must be an UnlearnConfig (or leave it out and pass settings as "
                        f"keywords), got {type(config).__name__}")
    return config.replace(**overrides).for_model(wf)


def _open_run(wf, train_data: Dataset, val_data: Dataset, targets: torch.Tensor, cfg: UnlearnConfig, device,
              out_dir: str | None, resume: bool, progress: bool) -> _Run:
    """Place the model, make the optimiser, start (fresh gates or the checkpoint's), lay out the epochs."""
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
    batch = min(cfg.batch_size, n)
    steps = max(1, n // batch)
    total = steps * cfg.max_epochs
    return _Run(wf=wf, train_data=train_data, val_data=val_data, targets=targets, cfg=cfg, device=device, ctx=ctx,
                params=params, opt=opt, state_path=state_path, out_dir=out_dir, prog=prog, best_filters=best_filters,
                history=history, plan=make_validation_plan(val_data, wf.num_classes, cfg.chi, cfg.seed),
                reporter=_Reporter(total, prog.step, progress and ctx.rank == 0), batch=batch, steps=steps,
                total=total, evals_at=_eval_points(steps, cfg.evals_per_epoch))


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


def _train(run: _Run) -> None:
    """Optimiser steps until the epoch cap or patience runs out, validating ``evals_per_epoch`` times an epoch."""
    prog = run.prog
    t_start = time.perf_counter() - prog.seconds
    perm_epoch, perm = -1, None
    with run.reporter:
        while not prog.done and prog.step < run.total:
            epoch, k = divmod(prog.step, run.steps)
            if epoch != perm_epoch:  # the batch order is a function of (seed, epoch) only
                perm_epoch = epoch
                g = torch.Generator().manual_seed(run.cfg.seed * SEED_STRIDE + epoch)
                perm = torch.randperm(run.targets.shape[0], generator=g)
            lam1 = _lambda1_at(run.cfg, prog.step, run.total)
            _step(run, perm[k * run.batch:(k + 1) * run.batch], lam1, epoch)
            if k + 1 in run.evals_at:
                prog.seconds = time.perf_counter() - t_start
                _validate(run, lam1, epoch)
    prog.seconds = time.perf_counter() - t_start


def _step(run: _Run, idx: torch.Tensor, lam1: float, epoch: int) -> None:
    """One optimiser step on the global batch ``idx``; every process stops together on a NaN/inf loss or gradient."""
    prog, ctx = run.prog, run.ctx
    # The drawn rows are a function of (seed, step) only; 7 × total keeps their seeds off the epochs' orders.
    parts = _batch_loss(run, idx, run.cfg.seed * SEED_STRIDE + 7 * run.total + prog.step, lam1)
    run.opt.zero_grad(set_to_none=True)
    parts.total.backward()
    all_reduce_grads(run.params, ctx)
    clip = run.cfg.clip_norm
    gnorm = torch.nn.utils.clip_grad_norm_(run.params, clip if clip else float("inf"))
    terms = [parts.total.item(), parts.retain.item(), parts.forget.item(), parts.reg.item()]
    ok = float(math.isfinite(terms[0]) and math.isfinite(gnorm.item()))
    if all_reduce_sum(torch.tensor([ok]), ctx).item() != ctx.world_size:
        _diverged(run, terms[0], epoch)
    run.opt.step()
    prog.step += 1
    prog.running = terms if not prog.running else [0.9 * r + 0.1 * t for r, t in zip(prog.running, terms)]
    run.reporter.step(prog.step, prog.running)


def _finish(run: _Run) -> UnlearnResult:
    """Load the best gates; write the final checkpoint (marked done) and filters.safetensors; the result."""
    prog, cfg = run.prog, run.cfg
    stopped_early = prog.done and prog.step < run.total
    prog.done = True
    run.wf.load_filters_state_dict({k: v.to(run.device) for k, v in run.best_filters.items()})
    if run.out_dir and run.ctx.rank == 0:
        save_state(run.state_path, run.wf.filters_state_dict(), run.best_filters, run.opt, prog)
        run.wf.save_filters(os.path.join(run.out_dir, FILTERS_FILE), extra_metadata={
            "unlearn_config": cfg.to_dict(), "best_objective": prog.best_objective, "best_step": prog.best_step})
    return UnlearnResult(best_objective=prog.best_objective, best_step=prog.best_step, steps=prog.step,
                         epochs=math.ceil(prog.step / run.steps), stopped_early=stopped_early, seconds=prog.seconds,
                         history=list(run.history.records), config=cfg.to_dict())


def _validate(run: _Run, lam1: float, epoch: int) -> None:
    """One validation: record it, keep the best gates, update patience, checkpoint."""
    cfg, prog, ctx, reporter = run.cfg, run.prog, run.ctx, run.reporter
    v = validation_objective(run.wf, run.val_data, run.plan, cfg, run.device, ctx)
    prog.evals += 1
    improved = v["objective"] < prog.best_objective
    if improved:
        prog.best_objective, prog.best_step, prog.bad_evals = v["objective"], prog.step, 0
        run.best_filters = run.wf.filters_state_dict()
    else:
        prog.bad_evals += 1
        prog.done = prog.bad_evals >= cfg.patience
    rec = {"eval": prog.evals, "step": prog.step, "epoch": epoch + 1, "seconds": round(prog.seconds, 3),
           "lambda1": lam1, "train_loss": prog.running[0], "train_retain": prog.running[1],
           "train_forget": prog.running[2],
           **{f"val_{k}": val for k, val in v.items()}, "best": improved}
    run.history.append(rec)
    if ctx.rank == 0:
        verdict = "best so far" if improved else f"no improvement ({prog.bad_evals}/{cfg.patience} before stopping)"
        line = (f"unlearn validation {prog.evals} (epoch {epoch + 1}, step {prog.step}): "
                f"objective {_num(v['objective'])} (retain {_num(v['retain'])}, forget {_num(v['forget_term'])}, "
                f"R {_num(v['reg'])}), acc_r {_pct(v['acc_r'])} acc_f {_pct(v['acc_f'])}; {verdict}")
        # Progress shown (bar or plain lines): the validation goes into it, the full line only with -v (DEBUG).
        log.log(logging.DEBUG if reporter.mode else logging.INFO, line)
        reporter.validation(prog.step, v, improved, prog.best_step, prog.best_objective)
    if run.state_path and ctx.rank == 0:
        save_state(run.state_path, run.wf.filters_state_dict(), run.best_filters, run.opt, prog)


def _diverged(run: _Run, value: float, epoch: int) -> None:
    """Stop on a NaN/inf loss: keep the best gates in memory and the last good checkpoint on disk."""
    wf, prog, state_path = run.wf, run.prog, run.state_path
    if state_path and run.ctx.rank == 0 and not os.path.isfile(state_path):
        save_state(state_path, wf.filters_state_dict(), run.best_filters, run.opt, prog)  # gates before the bad step
    wf.load_filters_state_dict({k: v.to(wf.alpha_parameters()[0].device) for k, v in run.best_filters.items()})
    where = f"; the last good filters are in {state_path}" if state_path else ""
    raise UnlearnDiverged(f"wfkern.unlearn: loss must stay finite, got {value} (or a non-finite gradient) at step "
                          f"{prog.step + 1} (epoch {epoch + 1}){where}; lower lr or set clip_norm")


def _num(x: float) -> str:
    """A loss-like number with sensible precision: 3 significant digits, never scientific for 1e-3..1e6."""
    if x is None or not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1e-3:
        return f"{x:#.3g}"
    return f"{x:.1e}"


def _pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.9667 -> "96.7%"."""
    return f"{100 * x:.1f}%" if x is not None and math.isfinite(x) else str(x)


def _clock(seconds: float) -> str:
    m, sec = divmod(int(round(max(0.0, seconds))), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"



# Plain progress lines (no terminal): one per this fraction of the steps, at least _LINE_MIN_S apart, and one at
# least every _LINE_MAX_S.
_LINE_FRACTION = 0.1
_LINE_MIN_S = 5.0
_LINE_MAX_S = 60.0


class _Reporter:
    """How the untraining round shows its progress on rank 0.

    ``mode``: "bar" (a terminal or a notebook: a tqdm bar; its postfix holds the running loss and the last
    validation; log records, e.g. ``-v``'s full validation lines, are written above it, not through it),
    "lines" (anything else, e.g. a log file: plain periodic lines, no carriage returns or escape codes) or None
    (progress off: nothing).
    """

    def __init__(self, total: int, initial: int, enabled: bool, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = None if not enabled else ("bar" if interactive(self.stream) else "lines")
        self.total, self.initial, self.step_now = total, initial, initial
        self.t0 = time.monotonic()
        self.last_t, self.last_step = self.t0, initial
        self.loss = None
        self.val = ""
        self.bar = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "_Reporter":
        if self.mode == "bar":
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, desc="unlearn", leave=False, dynamic_ncols=True,
                            file=self.stream)
            self._stack.enter_context(logging_redirect_tqdm())  # -v lines above the bar, not through it
        elif self.mode == "lines":
            self._print(f"unlearn: {self.total} steps" + (f", resuming at step {self.initial}" if self.initial else ""))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stack.close()
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and exc_type is None and self.step_now > self.last_step:
            self._line()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _postfix(self) -> str:
        parts = [f"loss {_num(self.loss)}"] if self.loss is not None else []
        return " | ".join(parts + ([self.val] if self.val else []))

    def _line(self) -> None:
        now = time.monotonic()
        done = self.step_now - self.initial
        el = now - self.t0
        rest = self.total - self.step_now
        left = f", ~{_clock(el / done * rest)} left" if done > 0 and rest > 0 else ""
        pct = 100.0 * self.step_now / max(1, self.total)
        self._print(f"unlearn: step {self.step_now}/{self.total} ({pct:.0f}%), {_clock(el)} elapsed{left}; "
                    f"{self._postfix()}")
        self.last_t, self.last_step = now, self.step_now

    def step(self, step: int, running: list) -> None:
        """After an optimiser step: ``running`` = the running (loss, L_r, L_f, R)."""
        self.step_now, self.loss = step, running[0] if running else None
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix_str(self._postfix(), refresh=False)
        elif self.mode == "lines":
            since = time.monotonic() - self.last_t
            due = (step - self.last_step) >= _LINE_FRACTION * self.total and since >= _LINE_MIN_S
            if due or since >= _LINE_MAX_S:
                self._line()

    def validation(self, step: int, v: dict, improved: bool, best_step: int, best_objective: float) -> None:
        """After a validation: its accuracies and the best objective so far go into the postfix / next line."""
        best = "best" if improved else f"best {_num(best_objective)} @ {best_step}"
        self.val = f"val acc_r {_pct(v['acc_r'])} acc_f {_pct(v['acc_f'])} obj {_num(v['objective'])} ({best})"
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix())
