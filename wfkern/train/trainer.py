"""Train the original classifier (the model a user later unlearns)."""

from __future__ import annotations

import logging
import math
import numbers
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from wfkern._utils import TRAIN_SEED_STRIDE, interactive
from wfkern.data import iter_batches
from wfkern.train.distributed import DistContext, all_reduce_grads, dist_context

__all__ = ["TrainResult", "train_model", "evaluate_accuracy", "random_shift", "train_setting_problem", "TRAIN_SETTINGS"]

log = logging.getLogger("wfkern.train")


@dataclass
class TrainResult:
    """Outcome of ``train_model``.

    Attributes:
        val_acc: accuracy on the validation split after the last epoch (nan without one).
        history: one dict per epoch (epoch, loss, val_acc, seconds).
        seconds: wall time.
    """

    val_acc: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding of the normalised image's edge value).

    Args:
        x: (B, C, H, W) float images.
        max_shift: largest shift in pixels, per axis.
        generator: CPU generator for the shifts.
    Returns:
        (B, C, H, W) shifted images.
    """
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, mode="replicate")
    dx, dy = (torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)).tolist()
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Dataset, batch_size: int = 512, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (multi-label: mean per-class accuracy of the sign of each logit).

    Args:
        model: classifier mapping (B, C, H, W) to (B, Nc) logits.
        data: dataset yielding (image, label).
    Returns:
        Accuracy in [0, 1].
    """
    was_training = model.training
    model.eval()
    n = len(data)
    correct = 0.0
    order = torch.arange(n)
    for x, y in iter_batches(data, order.split(batch_size)):
        logits = model(x.to(device))
        y = y.to(device)
        if y.dim() > 1:
            correct += ((logits > 0).float() == y).float().mean(1).sum().item()
        else:
            correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    return correct / max(n, 1)


# Settings of ``train_model``: (integer?, test, expectation). Numbers must also be finite.
TRAIN_SETTINGS = {
    "epochs": (True, lambda v: v >= 1, "be an integer >= 1"),
    "batch_size": (True, lambda v: v >= 1, "be an integer >= 1"),
    "max_shift": (True, lambda v: v >= 0, "be an integer >= 0"),
    "lr": (False, lambda v: v > 0, "be a positive finite number"),
    "weight_decay": (False, lambda v: v >= 0, "be a finite number >= 0"),
    "label_smoothing": (False, lambda v: 0 <= v < 1, "be in [0, 1)"),
}


def train_setting_problem(name: str, value) -> str | None:
    """None when ``value`` is a valid ``train_model`` setting ``name``, else the expectation ("be ...").

    One rule set for the library and the command line (``wfkern train`` / ``demo`` check before loading data).
    """
    integer, test, expectation = TRAIN_SETTINGS[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        return expectation
    if not math.isfinite(value) or not test(value):
        return expectation
    return None


def _loss(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    if y.dim() > 1:
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def train_model(model: nn.Module, train_data: Dataset, val_data: Dataset | None = None, *, epochs: int = 30,
                batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 5e-4, max_shift: int = 1,
                label_smoothing: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = False, ctx: DistContext | None = None) -> TrainResult:
    """Train a classifier with AdamW + one-cycle cosine schedule (in place).

    Under ``torchrun`` each process takes an equal shard of every global batch and the gradients are
    averaged across processes (the DistributedDataParallel rule), so the result matches one process.

    Args:
        model: the network; trained in place.
        train_data: training split (labels (N,) or multi-hot (N, Nc)).
        val_data: optional validation split, evaluated after each epoch.
        epochs: passes over the training split.
        batch_size: global batch size (split across processes).
        lr: peak learning rate.  weight_decay: AdamW decoupled weight decay.
        max_shift: random-translation augmentation in pixels (0 = off).
        label_smoothing: for single-label cross-entropy.
        seed: seeds the shuffling, augmentation and nothing else (initialise the model yourself).
        device: where to train.  progress: show a tqdm bar.
        ctx: distributed context (default: detected from the environment).
    Returns:
        TrainResult with the final validation accuracy and per-epoch history.
    Raises:
        ValueError: a setting outside ``TRAIN_SETTINGS`` (non-integer counts, NaN / inf / negative rates).
    """
    ctx = ctx or dist_context()
    _check_settings(epochs=epochs, batch_size=batch_size, max_shift=max_shift, lr=lr, weight_decay=weight_decay,
                    label_smoothing=label_smoothing)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n = len(train_data)
    steps = max(1, n // batch_size)
    global_batch = min(batch_size, n)
    sched = _warmup_cosine(opt, epochs * steps)
    result = TrainResult(float("nan"))
    t0 = time.perf_counter()
    bar = _bar(epochs * steps, progress and ctx.rank == 0)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed * TRAIN_SEED_STRIDE + epoch)
        perm = torch.randperm(n, generator=generator)[: steps * global_batch].view(steps, global_batch)
        shards = [row[ctx.rank::ctx.world_size] for row in perm]
        running = _train_epoch(model, train_data, shards, generator, opt, sched, params, ctx, device, max_shift,
                               label_smoothing, bar)
        record = {"epoch": epoch + 1, "loss": running / steps, "seconds": time.perf_counter() - t0}
        if val_data is not None:
            record["val_acc"] = evaluate_accuracy(model, val_data, device=device)
            result.val_acc = record["val_acc"]
        result.history.append(record)
        if ctx.rank == 0:
            log.info("train epoch %d/%d loss %.4f val_acc %s", epoch + 1, epochs, record["loss"], record.get("val_acc"))
    if bar is not None:
        bar.close()
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def _check_settings(**settings) -> None:
    """One-line ValueError naming the first setting outside ``TRAIN_SETTINGS``."""
    for name, value in settings.items():
        expectation = train_setting_problem(name, value)
        if expectation is not None:
            raise ValueError(f"wfkern.train_model: {name} must {expectation}, got {value!r}")


def _warmup_cosine(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0 (one cycle)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * s / total)))


def _train_epoch(model, train_data, shards, generator, opt, sched, params, ctx, device, max_shift: int,
                 label_smoothing: float, bar) -> float:
    """One pass over this process's ``shards`` of the epoch's batches; returns the summed batch losses."""
    running = 0.0
    for x, y in iter_batches(train_data, shards):
        x = random_shift(x, max_shift, generator).to(device)
        loss = _loss(model(x), y.to(device), label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_grads(params, ctx)
        opt.step()
        sched.step()
        running += loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return running


def _bar(total: int, enabled: bool):
    """A tqdm bar on a terminal or in a notebook; None otherwise (a log file gets the per-epoch log lines only,
    never carriage returns or escape codes)."""
    if not enabled or not interactive(sys.stderr):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="train", leave=False, dynamic_ncols=True)
