"""The validation objective: the untraining loss on a held-out split with fixed (seeded) forget/retain rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from wfkern._utils import SEED_SPREAD
from wfkern.data import dataset_targets, iter_batches
from wfkern.train.distributed import DistContext, all_reduce_sum
from wfkern.unlearn.config import UnlearnConfig
from wfkern.unlearn.objective import (expand_labels, gate_regularizer, forget_terms, original_logits,
                                      pick_forget_labels, retain_terms)

__all__ = ["ValidationPlan", "make_validation_plan", "validation_objective"]


@dataclass
class ValidationPlan:
    """Fixed rows for the validation objective (same halving as training: forget half, retain half × χ).

    Attributes:
        forget_idx: (Nf,) indices into the val set evaluated under their own class.
        forget_rows: (Nf,) the class each forgets.
        retain_idx: (Nr,) indices evaluated under other classes' masks.
        retain_rows: (χ, Nr) those classes.
    """

    forget_idx: Tensor
    forget_rows: Tensor
    retain_idx: Tensor
    retain_rows: Tensor


def make_validation_plan(val_data: Dataset, num_classes: int, chi: int, seed: int) -> ValidationPlan:
    """Split the validation set in halves (seeded) and draw its fixed forget / retain rows."""
    generator = torch.Generator().manual_seed(int(seed) + SEED_SPREAD)  # fixed for a run: from the seed, never the step
    targets = dataset_targets(val_data)
    perm = torch.randperm(targets.shape[0], generator=generator)
    half = perm.numel() // 2
    forget_idx, retain_idx = perm[:half].sort().values, perm[half:].sort().values
    rows = pick_forget_labels(targets[forget_idx], generator)
    keep = rows >= 0
    return ValidationPlan(forget_idx[keep], rows[keep], retain_idx,
                          expand_labels(targets[retain_idx], num_classes, chi, generator))


@torch.no_grad()
def validation_objective(wf, val_data: Dataset, plan: ValidationPlan, cfg: UnlearnConfig, device: torch.device,
                         ctx: DistContext, batch_size: int = 512) -> dict:
    """Evaluate the untraining loss (and forget / retain accuracies) on the plan; sharded over processes.

    Args:
        wf: the WF model (eval mode).
        val_data: validation split.  plan: its fixed rows.
        cfg: the resolved settings (the final λ1, never a warm-up value, so evaluations compare).
        device: where to run.  ctx: distributed context.
    Returns:
        dict with objective, retain (mean retain loss), forget_term (mean forget loss as optimised), forget
        (mean L_f), reg, acc_f (forget rows still classified as their class) and acc_r (retain rows classified right).
    """
    sums = torch.zeros(5, dtype=torch.float64)  # forget term, L_f, forget-correct, retain loss, retain-correct
    f_idx, f_rows = plan.forget_idx[ctx.rank::ctx.world_size], plan.forget_rows[ctx.rank::ctx.world_size]
    for chunk in torch.arange(f_idx.numel()).split(batch_size):
        x, y = next(iter_batches(val_data, [f_idx[chunk]]))
        rows = f_rows[chunk]  # host labels: wf checks them for free
        logits = wf(x.to(device), forget=rows)
        rows = rows.to(device, non_blocking=True)
        term, lf = forget_terms(logits, y.to(device), rows, cfg.forget_loss, cfg.margin, cfg.eps)
        sums[0] += term.sum().item()
        sums[1] += lf.sum().item()
        sums[2] += (logits.argmax(1) == rows).sum().item()
    r_idx = plan.retain_idx[ctx.rank::ctx.world_size]
    r_rows = plan.retain_rows[:, ctx.rank::ctx.world_size]
    for chunk in torch.arange(r_idx.numel()).split(max(1, batch_size // r_rows.shape[0])):
        x, y = next(iter_batches(val_data, [r_idx[chunk]]))
        chi = r_rows.shape[0]
        rows = r_rows[:, chunk].reshape(-1)
        x = x.to(device)
        teacher = original_logits(wf, x, cfg.retain_loss, copies=chi)
        xs = x.repeat(chi, *([1] * (x.dim() - 1)))
        ys = y.to(device).repeat(chi, *([1] * (y.dim() - 1)))
        logits = wf(xs, forget=rows)
        sums[3] += retain_terms(logits, ys, teacher, cfg.retain_loss, cfg.temperature).sum().item()
        if ys.dim() == 1:
            sums[4] += (logits.argmax(1) == ys).sum().item()
        else:
            sums[4] += ((logits > 0).float() == ys).float().mean(1).sum().item()
    sums = all_reduce_sum(sums, ctx)
    n_forget = max(plan.forget_idx.numel(), 1)
    n_retain = max(plan.retain_idx.numel() * plan.retain_rows.shape[0], 1)
    reg = gate_regularizer(wf.gate_parameters()).item()
    out = {"forget_term": sums[0].item() / n_forget, "forget": sums[1].item() / n_forget,
           "acc_f": sums[2].item() / n_forget, "retain": sums[3].item() / n_retain, "acc_r": sums[4].item() / n_retain,
           "reg": reg}
    out["objective"] = cfg.lambda0 * out["retain"] + cfg.lambda1 * out["forget_term"] + cfg.lambda2 * reg
    return out
