"""Retain-set fine-tuning recovery: how much of a forgotten class comes back when the unlearned model is fine-tuned
on the *other* classes only.

Relearn time (``relearn.py``) fine-tunes on samples of every class, the forgotten one included, and counts epochs;
this fine-tunes for a fixed budget on retain-class samples only (a class-``c`` sample is never read) and reports the
accuracy on class ``c`` afterwards. A method that only suppressed the class at the output can see it return as the
retain-set gradients move the weights that suppress it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern._utils import trainable_copy

from ._data import class_indices, predict_logits
from .accuracy import accuracy_split
from .probe import head_name
from .relearn import class_accuracy, fine_tune_epoch
from .settings import RETAIN_FT_PARTS

__all__ = ["retain_finetune", "retain_recovery"]


def retain_finetune(model: nn.Module, train_data: Dataset, train_labels: Tensor, c: int, num_classes: int, *,
                    part: str = "all", epochs: int = 10, samples_per_epoch: int = 500, lr: float = 1e-3,
                    batch_size: int = 128, seed: int = 0, device: Optional[torch.device | str] = None,
                    on_epoch=None) -> nn.Module:
    """A copy of ``model`` fine-tuned on retain-class samples only (``model`` is not modified).

    Each epoch draws ``samples_per_epoch`` fresh samples uniformly without replacement from the training samples
    whose label is not ``c`` and takes Adam steps on their cross-entropy (``relearn.fine_tune_epoch``).
    ``part="all"``: every weight, the model in train mode (as relearning); ``part="head"``: only the
    classification head (``probe.head_name``), every module in eval mode, every other weight unchanged.

    Args:
        model: the single-class unlearned model, a plain module mapping (B, ...) to (B, Nc) logits.
        train_data: the training set, yields ``(x, y)``; ``train_labels`` its (N,) labels.
        c: the forgotten class.
        num_classes: Nc (finds the head).
        part: "all" or "head".
        epochs / samples_per_epoch / lr / batch_size: the fixed budget.
        seed: seeds the draws and the batch order.
        device: where to train; default the model's device.
        on_epoch: optional callable ``(epoch, model)`` after each epoch (and with epoch 0 before any step).
    Returns:
        The fine-tuned copy, in eval mode.
    """
    if part not in RETAIN_FT_PARTS:
        raise ValueError(f"wfkern.retain_finetune: part must be one of {list(RETAIN_FT_PARTS)}, got {part!r}")
    if epochs < 0 or samples_per_epoch < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"wfkern.retain_finetune: epochs >= 0, samples_per_epoch >= 1, batch_size >= 1 and lr > 0 "
                         f"must hold, got {epochs}, {samples_per_epoch}, {batch_size}, {lr}")
    pool = class_indices(train_labels, c, exclude=True)
    if pool.numel() == 0:
        raise ValueError(f"wfkern.retain_finetune: train_data must hold samples of classes other than {c}, got none")
    work, dev = trainable_copy(model, device)
    params = list(work.parameters())
    if part == "head":
        head = dict(work.named_modules())[head_name(work, num_classes)]
        for p in params:
            p.requires_grad_(False)
        params = list(head.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    if on_epoch is not None:
        on_epoch(0, work)
    for epoch in range(1, epochs + 1):
        fine_tune_epoch(work, opt, train_data, pool, samples_per_epoch, batch_size, gen, dev,
                        train_mode=part == "all")
        if on_epoch is not None:
            on_epoch(epoch, work)
    return work.eval()


def retain_recovery(model: nn.Module, train_data: Dataset, train_labels: Tensor, test_data: Dataset,
                    test_labels: Tensor, c: int, num_classes: int, *, eval_batch_size: int = 256,
                    progress: bool = False, **budget) -> dict:
    """Fine-tune on the retain classes (``retain_finetune``, ``budget`` its keyword settings) and measure class ``c``
    (inference in batches of ``eval_batch_size``).

    Returns:
        ``acc_f``: accuracy on the class-``c`` test samples after the budget; ``acc_r``: on the other test samples;
        ``history``: the class-``c`` accuracy before any step and after each epoch (fractions).
    """
    idx_c = class_indices(test_labels, c)
    history: list[float] = []
    bar = tqdm(total=budget.get("epochs", 10), desc=f"retain-ft class {c}", leave=False, disable=not progress)
    dev = budget.get("device")

    def on_epoch(epoch: int, work: nn.Module) -> None:
        history.append(class_accuracy(work, test_data, idx_c, c, eval_batch_size, next(work.parameters()).device))
        bar.update(1 if epoch else 0)

    work = retain_finetune(model, train_data, train_labels, c, num_classes, on_epoch=on_epoch, **budget)
    bar.close()
    dev = next(work.parameters()).device if dev is None else dev
    logits, _ = predict_logits(work, test_data, None, batch_size=eval_batch_size, device=dev)
    acc_f, acc_r = accuracy_split(logits.argmax(dim=1), test_labels, c)
    return {"acc_f": acc_f, "acc_r": acc_r, "history": history}
