"""Relearn time (RT): epochs of fine-tuning on fresh random training samples until the forget class is back."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern._utils import trainable_copy

from ._data import index_batches
from .accuracy import accuracy

__all__ = ["relearn_time", "fine_tune_epoch", "class_accuracy"]


@torch.no_grad()
def class_accuracy(model: nn.Module, dataset: Dataset, indices: Tensor, c: int, batch_size: int,
                    device: torch.device) -> float:
    model.eval()
    preds = [model(x.to(device)).argmax(dim=1).cpu() for x, _ in index_batches(dataset, indices, batch_size)]
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return accuracy(pred, torch.full_like(pred, c))


def relearn_time(model: nn.Module, train_data: Dataset, eval_data: Dataset, eval_indices: Tensor,
                 forget_class: int, target_acc: float, *, samples_per_epoch: int = 500, lr: float = 1e-3,
                 batch_size: int = 128, max_epochs: int = 100, seed: int = 0,
                 device: Optional[torch.device | str] = None, progress: bool = True) -> dict:
    """Fine-tune a copy of ``model`` and count the epochs until it recognises ``forget_class`` again.

    Every epoch draws ``samples_per_epoch`` fresh training samples uniformly without replacement (all classes),
    takes Adam steps of ``batch_size`` on the cross-entropy of all weights, then measures the accuracy on the
    forget-class samples ``eval_data[eval_indices]``. RT is the first epoch whose accuracy is
    ``>= target_acc`` (0 when the model already is there before any step); ``max_epochs`` when it never gets
    there (``capped``). ``model`` itself is not modified.

    Args:
        model: the single-class unlearned model, a plain module mapping (B, ...) to (B, Nc) logits.
        train_data: the training set, yields ``(x, y)``.
        eval_data: the set the accuracy is measured on (the test set).
        eval_indices: (Nf,) int64 indices of the forget-class samples in ``eval_data``.
        forget_class: the class ``c``.
        target_acc: accuracy to reach, e.g. 0.95 x the original model's accuracy on ``c``.
        samples_per_epoch: fresh training samples per epoch (500 in the paper).
        lr: Adam learning rate.
        batch_size: fine-tuning batch size.
        max_epochs: the cap (100 in the paper).
        seed: seeds the sample draws and the batch order.
        device: where to train; default the model's device.
        progress: show a tqdm bar over epochs.
    Returns:
        ``{"rt": int epochs, "capped": bool, "acc_history": [accuracy after each epoch, epoch 0 first]}``.
    """
    if max_epochs < 0 or samples_per_epoch < 1 or batch_size < 1:
        raise ValueError(f"wfkern.relearn_time: max_epochs >= 0, samples_per_epoch >= 1 and batch_size >= 1 "
                         f"must hold, got {max_epochs}, {samples_per_epoch}, {batch_size}")
    work, device = trainable_copy(model, device)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    history = [class_accuracy(work, eval_data, eval_indices, forget_class, 256, device)]
    if history[0] >= target_acc:
        return {"rt": 0, "capped": False, "acc_history": history}
    bar = tqdm(range(1, max_epochs + 1), desc=f"relearn class {forget_class}", leave=False, disable=not progress)
    for epoch in bar:
        fine_tune_epoch(work, opt, train_data, None, samples_per_epoch, batch_size, gen, device)
        history.append(class_accuracy(work, eval_data, eval_indices, forget_class, 256, device))
        bar.set_postfix(acc=f"{history[-1]:.3f}", target=f"{target_acc:.3f}")
        if history[-1] >= target_acc:
            bar.close()
            return {"rt": epoch, "capped": False, "acc_history": history}
    bar.close()
    return {"rt": max_epochs, "capped": True, "acc_history": history}


def fine_tune_epoch(work: nn.Module, opt: torch.optim.Optimizer, train_data: Dataset, pool: Optional[Tensor],
                    samples_per_epoch: int, batch_size: int, gen: torch.Generator, device: torch.device, *,
                    train_mode: bool = True) -> None:
    """One relearning epoch, in place: ``samples_per_epoch`` fresh samples drawn uniformly without replacement
    from ``pool`` (indices into ``train_data``; None: all of it), shuffled into batches of ``batch_size``, one
    ``opt`` step on the cross-entropy per batch. ``train_mode`` False keeps every module in eval mode."""
    n = len(train_data) if pool is None else pool.numel()
    idx = torch.randperm(n, generator=gen)[: min(samples_per_epoch, n)]
    if pool is not None:
        idx = pool[idx]
    work.train(train_mode)
    for x, y in index_batches(train_data, idx, batch_size, shuffle=True, generator=gen):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(work(x.to(device)), torch.as_tensor(y).long().to(device))
        loss.backward()
        opt.step()
