"""``wfkern.unlearn``: one untraining round that teaches the gates to forget every class (docs/method.md §2)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from wfkern._utils import SEED_STRIDE, usable_device
from wfkern.data import iter_batches
from wfkern.patch import base_fingerprint
from wfkern.train.distributed import DistContext, all_reduce_grads, all_reduce_sum, dist_context
from wfkern.unlearn.checks import check_data, check_inputs
from wfkern.unlearn.config import UnlearnConfig
from wfkern.unlearn.objective import (combine_losses, expand_labels, forget_terms, original_logits, pick_forget_labels,
                                      retain_terms)
from wfkern.unlearn.progress import Reporter, format_loss, format_pct
from wfkern.unlearn.state import (GATES_FILE, HISTORY_FILE, STATE_FILE, HistoryLog, Progress, ResumeMismatch,
                                  load_state, resume_differences, save_state)
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
    generator = torch.Generator().manual_seed(step_seed)
    half = idx.numel() // 2
    forget_idx, retain_idx = idx[:half], idx[half:]
    forget_rows = pick_forget_labels(targets[forget_idx], generator)                           # (B/2,)
    retain_rows = expand_labels(targets[retain_idx], wf.num_classes, cfg.chi, generator)       # (χ, B/2)
    shard = slice(ctx.rank, None, ctx.world_size)
    forget_idx, forget_rows = forget_idx[shard], forget_rows[shard]
    retain_idx, retain_rows = retain_idx[shard], retain_rows[:, shard]
    keep = forget_rows >= 0                                                     # multi-label rows without positives
    forget_idx, forget_rows = forget_idx[keep], forget_rows[keep]
    x, y = next(iter_batches(run.train_data, [torch.cat([forget_idx, retain_idx])]))
    x, y = x.to(device), y.to(device)
    n_forget = forget_idx.numel()
    teacher = original_logits(wf, x[n_forget:], cfg.retain_loss, copies=cfg.chi)
    xs = torch.cat([x[:n_forget], x[n_forget:].repeat(cfg.chi, *([1] * (x.dim() - 1)))])
    # Host labels: wf checks them for free and copies them without blocking (no sync per step).
    logits = wf(xs, forget=torch.cat([forget_rows, retain_rows.reshape(-1)]))
    y_retain = y[n_forget:].repeat(cfg.chi, *([1] * (y.dim() - 1)))
    term, loss_f = forget_terms(logits[:n_forget], y[:n_forget], forget_rows.to(device, non_blocking=True),
                                cfg.forget_loss, cfg.margin, cfg.eps)
    loss_r = retain_terms(logits[n_forget:], y_retain, teacher, cfg.retain_loss, cfg.temperature)
    return combine_losses(term, loss_f, loss_r, wf.gate_parameters(), cfg.lambda0, lambda1, cfg.lambda2)


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
    best_gates: dict           # the gates of the best validation so far
    history: HistoryLog
    plan: ValidationPlan         # the fixed validation rows
    reporter: Reporter
    batch: int                   # global batch size (at most the training set)
    steps: int                   # optimiser steps an epoch
    total: int                   # optimiser steps of the whole run
    evals_at: set[int]           # steps within an epoch after which to validate


def unlearn(wf, train_data: Dataset, val_data: Dataset, config: UnlearnConfig | None = None, *,
            device: str | torch.device | None = None, out_dir: str | None = None, resume: bool = False,
            progress: bool = True, data_settings: dict | None = None, **overrides) -> UnlearnResult:
    """Untrain every class in one round: train only the gates so that ``wf(x, forget=c)`` forgets class c.

    Each batch is halved: the forget half is masked with each sample's own class, the retain half (``chi``
    copies) with other classes. The losses, their weights, the optimiser and the run's length are the fields
    of ``UnlearnConfig``; docs/untraining.md explains the default recipe and the paper's (``PAPER_RECIPE``).
    The loss on ``val_data`` is evaluated ``evals_per_epoch`` times an epoch; the run stops after ``patience``
    evaluations without improvement and keeps the best gates. Under torchrun each process takes an equal
    shard of every batch.

    Args:
        wf: a ``wfkern.patch``-ed model; its gates are trained in place and end at the best ones.
        train_data, val_data: datasets yielding (image, label), or multi-hot (Nc,) targets for multi-label data
            (``wfkern.data`` datasets are fastest).
        config: the settings (default ``UnlearnConfig()``); a field left None takes the model family's value
            (``UnlearnConfig.for_model``).
        **overrides: fields of ``UnlearnConfig`` by name, replacing ``config``'s (``max_epochs=5``,
            ``**PAPER_RECIPE``); an unknown name is a TypeError that lists the settings.
        device: where to run (default: the gates' device).
        out_dir: where to write ``unlearn_state.safetensors`` (at every validation, atomically), ``history.jsonl``
            and the final ``gates.safetensors``; None writes nothing.
        resume: continue from ``out_dir``'s state, ending where one uninterrupted run would. A resume from
            another base model, precision, dataset size or ``data_settings`` is a ``ResumeMismatch`` naming each
            difference, raised before anything changes.
        progress: a progress bar on a terminal, plain periodic lines otherwise (rank 0 only).
        data_settings: how the datasets were made, where they cannot show it (``{"split_seed": 0}``: names ->
            JSON numbers, strings, booleans or None), recorded and compared on resume.
    Returns:
        UnlearnResult; the best gates are loaded into ``wf``.
    Raises:
        ValueError / TypeError: bad arguments.  ResumeMismatch: a resume from another base, data or precision.
        UnlearnDiverged: NaN/inf loss or gradient.
    """
    check_inputs(wf, train_data, val_data, out_dir, resume)
    _check_data_settings(data_settings)
    cfg = _resolve_config(wf, config, overrides)
    targets = check_data(wf, train_data, val_data)  # before anything touches the gates (reset_gates, resume)
    run = _open_run(wf, train_data, val_data, targets, cfg, device, out_dir, resume, progress, data_settings)
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
              out_dir: str | None, resume: bool, progress: bool, data_settings: dict | None) -> _Run:
    """Place the model, make the optimiser, start (fresh gates or the checkpoint's), lay out the epochs."""
    ctx = dist_context()
    params = wf.gate_parameters()
    device = usable_device(device, "wfkern.unlearn") if device is not None else params[0].device
    wf.to(device).eval()  # the base is frozen: BN uses its running statistics, dropout is off
    opt = _make_optimizer(params, cfg)
    state_path = os.path.join(out_dir, STATE_FILE) if out_dir else None
    history_path = os.path.join(out_dir, HISTORY_FILE) if out_dir and ctx.rank == 0 else None
    world = _run_record(wf, train_data, val_data, device, data_settings)
    prog, best_gates, history = _start(wf, opt, cfg, world, state_path, history_path, resume, device)
    n = targets.shape[0]
    batch = min(cfg.batch_size, n)
    steps = max(1, n // batch)
    total = min(steps * cfg.max_epochs, cfg.max_steps)
    return _Run(wf=wf, train_data=train_data, val_data=val_data, targets=targets, cfg=cfg, device=device, ctx=ctx,
                params=params, opt=opt, state_path=state_path, out_dir=out_dir, prog=prog, best_gates=best_gates,
                history=history, plan=make_validation_plan(val_data, wf.num_classes, cfg.chi, cfg.seed),
                reporter=Reporter(total, prog.step, progress and ctx.rank == 0), batch=batch, steps=steps,
                total=total, evals_at=_eval_points(steps, cfg.evals_per_epoch))


def _check_data_settings(data_settings) -> None:
    if data_settings is None:
        return
    if not isinstance(data_settings, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
            for k, v in data_settings.items()):
        raise TypeError(f"wfkern.unlearn: data_settings must be a dict of names to numbers, strings, booleans or "
                        f"None, got {data_settings!r:.80}")
    taken = sorted(set(data_settings) & set(_RECORDED))
    if taken:
        raise ValueError(f"wfkern.unlearn: data_settings must leave {', '.join(_RECORDED)} to unlearn (it records "
                         f"them itself), got {', '.join(taken)}")


# What unlearn records itself of the world a run starts from (``_run_record``), before the caller's data settings.
_RECORDED = ("base_fingerprint", "precision", "train_samples", "val_samples")


def _precision_now(device: torch.device) -> str:
    """The precision forward passes run in on ``device``: "fp32", or the autocast dtype in force ("bf16")."""
    if not torch.is_autocast_enabled(device.type):
        return "fp32"
    dtype = torch.get_autocast_dtype(device.type)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def _run_record(wf, train_data: Dataset, val_data: Dataset, device: torch.device, data_settings: dict | None) -> dict:
    """What the run starts from besides its settings (``Progress.run``), compared on resume."""
    return {"base_fingerprint": base_fingerprint(wf), "precision": _precision_now(device),
            "train_samples": len(train_data), "val_samples": len(val_data), **(data_settings or {})}


def _start(wf, opt, cfg: UnlearnConfig, world: dict, state_path: str | None, history_path: str | None, resume: bool,
           device) -> tuple[Progress, dict, HistoryLog]:
    """Fresh gates (gate_init) and history, or the checkpoint's gates and optimiser state and the history up to
    its step; returns (progress, best gates, history). A resume checks the checkpoint's settings and record
    (``world``: ``_run_record``) and every history record before the gates change."""
    if not resume:
        wf.reset_gates(cfg.gate_init)
        return Progress(config=cfg.to_dict(), run=world), wf.gates_state_dict(), HistoryLog(history_path)
    current, best, opt_state, prog = load_state(state_path)
    bad = cfg.resume_mismatch(prog.config)
    if bad:
        raise ValueError(f"wfkern.unlearn: resume settings must match the checkpoint, got different {bad}")
    if not prog.run:
        log.warning(f"wfkern.unlearn: the checkpoint {state_path} records no base model fingerprint, data or "
                    "precision (an older wfkern wrote it): resuming without comparing them; they are recorded from "
                    "now on")
        prog.run = world
    differences = resume_differences(prog.run, world)
    if differences:
        raise ResumeMismatch(differences)
    history = HistoryLog(history_path, keep_until_step=prog.step)
    wf.load_gates_state_dict({k: v.to(device) for k, v in current.items()})
    opt.load_state_dict(opt_state)
    return prog, best, history


def _train(run: _Run) -> None:
    """Optimiser steps until a cap (epochs, steps) or patience runs out, validating ``evals_per_epoch`` times an
    epoch and after the last step (a step cap can end the run between two validations)."""
    prog = run.prog
    t_start = time.perf_counter() - prog.seconds
    perm_epoch, perm = -1, None
    with run.reporter:
        while not prog.done and prog.step < run.total:
            epoch, batch_in_epoch = divmod(prog.step, run.steps)
            if epoch != perm_epoch:  # the batch order is a function of (seed, epoch) only
                perm_epoch = epoch
                generator = torch.Generator().manual_seed(run.cfg.seed * SEED_STRIDE + epoch)
                perm = torch.randperm(run.targets.shape[0], generator=generator)
            lambda1 = _lambda1_at(run.cfg, prog.step, run.total)
            _step(run, perm[batch_in_epoch * run.batch:(batch_in_epoch + 1) * run.batch], lambda1, epoch)
            if batch_in_epoch + 1 in run.evals_at or prog.step == run.total:
                prog.seconds = time.perf_counter() - t_start
                _validate(run, lambda1, epoch)
    prog.seconds = time.perf_counter() - t_start


def _step(run: _Run, idx: torch.Tensor, lambda1: float, epoch: int) -> None:
    """One optimiser step on the global batch ``idx``; every process stops together on a NaN/inf loss or gradient."""
    prog, ctx = run.prog, run.ctx
    # The drawn rows are a function of (seed, step) only; 7 × total keeps their seeds off the epochs' orders.
    parts = _batch_loss(run, idx, run.cfg.seed * SEED_STRIDE + 7 * run.total + prog.step, lambda1)
    run.opt.zero_grad(set_to_none=True)
    parts.total.backward()
    all_reduce_grads(run.params, ctx)
    clip = run.cfg.clip_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, clip if clip else float("inf"))
    terms = [parts.total.item(), parts.retain.item(), parts.forget.item(), parts.reg.item()]
    ok = float(math.isfinite(terms[0]) and math.isfinite(grad_norm.item()))
    if all_reduce_sum(torch.tensor([ok]), ctx).item() != ctx.world_size:
        _diverged(run, terms[0], epoch)
    run.opt.step()
    prog.step += 1
    prog.running = terms if not prog.running else [0.9 * old + 0.1 * new for old, new in zip(prog.running, terms)]
    run.reporter.step(prog.step, prog.running)


def _finish(run: _Run) -> UnlearnResult:
    """Load the best gates; write the final checkpoint (marked done) and gates.safetensors; the result."""
    prog, cfg = run.prog, run.cfg
    stopped_early = prog.done and prog.step < run.total
    prog.done = True
    run.wf.load_gates_state_dict({k: v.to(run.device) for k, v in run.best_gates.items()})
    if run.out_dir and run.ctx.rank == 0:
        save_state(run.state_path, run.wf.gates_state_dict(), run.best_gates, run.opt, prog)
        run.wf.save_gates(os.path.join(run.out_dir, GATES_FILE), extra_metadata={
            "unlearn_config": cfg.to_dict(), "best_objective": prog.best_objective, "best_step": prog.best_step})
    return UnlearnResult(best_objective=prog.best_objective, best_step=prog.best_step, steps=prog.step,
                         epochs=math.ceil(prog.step / run.steps), stopped_early=stopped_early, seconds=prog.seconds,
                         history=list(run.history.records), config=cfg.to_dict())


def _validate(run: _Run, lambda1: float, epoch: int) -> None:
    """One validation: record it, keep the best gates, update patience, checkpoint."""
    cfg, prog, ctx, reporter = run.cfg, run.prog, run.ctx, run.reporter
    scores = validation_objective(run.wf, run.val_data, run.plan, cfg, run.device, ctx)
    prog.evals += 1
    improved = scores["objective"] < prog.best_objective
    if improved:
        prog.best_objective, prog.best_step, prog.bad_evals = scores["objective"], prog.step, 0
        run.best_gates = run.wf.gates_state_dict()
    else:
        prog.bad_evals += 1
        prog.done = prog.bad_evals >= cfg.patience
    record = {"eval": prog.evals, "step": prog.step, "epoch": epoch + 1, "seconds": round(prog.seconds, 3),
              "lambda1": lambda1, "train_loss": prog.running[0], "train_retain": prog.running[1],
              "train_forget": prog.running[2],
              **{f"val_{name}": value for name, value in scores.items()}, "best": improved}
    run.history.append(record)
    if ctx.rank == 0:
        verdict = "best so far" if improved else f"no improvement ({prog.bad_evals}/{cfg.patience} before stopping)"
        line = (f"unlearn validation {prog.evals} (epoch {epoch + 1}, step {prog.step}): "
                f"objective {format_loss(scores['objective'])} (retain {format_loss(scores['retain'])}, "
                f"forget {format_loss(scores['forget_term'])}, R {format_loss(scores['reg'])}), "
                f"acc_r {format_pct(scores['acc_r'])} acc_f {format_pct(scores['acc_f'])}; {verdict}")
        # Progress shown (bar or plain lines): the validation goes into it, the full line only with -v (DEBUG).
        log.log(logging.DEBUG if reporter.mode else logging.INFO, line)
        reporter.validation(prog.step, scores, improved, prog.best_step, prog.best_objective)
    if run.state_path and ctx.rank == 0:
        save_state(run.state_path, run.wf.gates_state_dict(), run.best_gates, run.opt, prog)


def _diverged(run: _Run, value: float, epoch: int) -> None:
    """Stop on a NaN/inf loss: keep the best gates in memory and the last good checkpoint on disk."""
    wf, prog, state_path = run.wf, run.prog, run.state_path
    if state_path and run.ctx.rank == 0 and not os.path.isfile(state_path):
        save_state(state_path, wf.gates_state_dict(), run.best_gates, run.opt, prog)  # gates before the bad step
    wf.load_gates_state_dict({k: v.to(wf.gate_parameters()[0].device) for k, v in run.best_gates.items()})
    where = f"; the last good filters are in {state_path}" if state_path else ""
    raise UnlearnDiverged(f"wfkern.unlearn: loss must stay finite, got {value} (or a non-finite gradient) at step "
                          f"{prog.step + 1} (epoch {epoch + 1}){where}; lower lr or set clip_norm")
