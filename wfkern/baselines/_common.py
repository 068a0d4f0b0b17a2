"""What the single-class baselines share: the class split, the fine-tuning mode, the random-label epochs, the
per-batch gradients of the loss."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern._utils import trainable_copy
from wfkern.data import dataset_targets, iter_batches

__all__ = ["class_split", "resolve_num_classes", "fine_tune_mode", "random_label_epochs", "retain_epochs",
           "loss_gradients"]


def class_split(labels: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """(indices of the class-``c`` samples, indices of all others), each in index order."""
    return torch.nonzero(labels == c).flatten(), torch.nonzero(labels != c).flatten()


def resolve_num_classes(labels: Tensor, num_classes: Optional[int], where: str) -> int:
    """``num_classes``, or the largest label + 1 when None; at least 2 (``where`` names the caller in the error)."""
    count = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if count < 2:
        raise ValueError(f"{where}: num_classes must be >= 2, got {count}")
    return count


def fine_tune_mode(model: nn.Module) -> None:
    """Train mode with every BatchNorm in eval mode: single-class batches must not skew the running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def random_label_epochs(model: nn.Module, opt: torch.optim.Optimizer, train_data: Dataset, labels: Tensor, c: int,
                        num_classes: int, n_retain: int, *, epochs: int, batch_size: int, generator: torch.Generator,
                        device: torch.device, desc: str, progress: bool,
                        after_backward: Optional[Callable[[], None]] = None,
                        after_step: Optional[Callable[[], None]] = None) -> None:
    """Random-label fine-tuning, in place: the loop of ``random_labels`` and SalUn.

    Each epoch relabels every class-``c`` sample uniformly among the ``num_classes - 1`` other classes (a fresh
    draw), adds ``n_retain`` random retain samples with their true labels, shuffles, and takes one ``opt`` step on
    the cross-entropy per mini-batch of ``batch_size``, the model in ``fine_tune_mode``. ``after_backward`` runs
    between the backward pass and the step (e.g. masking the gradients), ``after_step`` after the step.
    Every draw comes from ``generator``, in a fixed order.
    """
    forget, retain = class_split(labels, c)
    for _ in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        retain_drawn = retain[torch.randperm(retain.numel(), generator=generator)[:n_retain]]
        idx = torch.cat([forget, retain_drawn])
        shift = torch.randint(1, num_classes, (forget.numel(),), generator=generator)
        target = torch.cat([(c + shift) % num_classes, labels[retain_drawn]])  # never c for the forget samples
        chunks = torch.randperm(idx.numel(), generator=generator).split(batch_size)
        fine_tune_mode(model)
        for pos, (x, _) in zip(chunks, iter_batches(train_data, [idx[p] for p in chunks])):
            loss = nn.functional.cross_entropy(model(x.to(device)), target[pos].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if after_step is not None:
                after_step()


def retain_epochs(model: nn.Module, opt: torch.optim.Optimizer, train_data: Dataset, retain: Tensor, *, epochs: int,
                  batch_size: int, generator: torch.Generator, device: torch.device, desc: str, progress: bool,
                  extra_loss: Optional[Callable[[int], Tensor]] = None) -> None:
    """Training on the retain samples only, in place: the loop of FT and l1-sparse.

    Each epoch is a fresh permutation (from ``generator``) of the ``retain`` indices cut into batches of
    ``batch_size``; one ``opt`` step per batch on the cross-entropy plus ``extra_loss(epoch)`` when given (epoch
    counted from 0), the model in train mode (BatchNorm statistics update: the batches mix the retain classes). A
    trailing batch of one sample is skipped (BatchNorm cannot train on it).
    """
    model.train()
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        order = retain[torch.randperm(retain.numel(), generator=generator)]
        for x, y in iter_batches(train_data, order.split(batch_size)):
            if x.shape[0] < 2 < retain.numel():
                continue
            loss = nn.functional.cross_entropy(model(x.to(device)), torch.as_tensor(y).long().to(device))
            if extra_loss is not None:
                loss = loss + extra_loss(epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def retain_fine_tune(original: nn.Module, train_data: Dataset, c: int, *, name: str, epochs: int, lr: float,
                     momentum: float, weight_decay: float, batch_size: int, seed: int, device, progress: bool,
                     penalty: Optional[Callable[[nn.Module, int], Tensor]] = None) -> nn.Module:
    """A trainable copy of ``original`` after :func:`retain_epochs` with SGD (momentum, weight decay), plus
    ``penalty(model, epoch)`` on each step's loss when given: FT and l1-sparse. ``name`` prefixes errors
    ("wfkern.<name>") and the progress bar. Returns the copy in eval mode."""
    retain = class_split(dataset_targets(train_data, single_label=True), c)[1]
    if retain.numel() == 0:
        raise ValueError(f"wfkern.{name}: train_data must hold samples of classes other than {c}, got none")
    model, dev = trainable_copy(original, device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    extra = None if penalty is None else (lambda epoch: penalty(model, epoch))
    retain_epochs(model, opt, train_data, retain, epochs=epochs, batch_size=batch_size,
                  generator=torch.Generator().manual_seed(int(seed)), device=dev, desc=f"{name} class {c}",
                  progress=progress, extra_loss=extra)
    return model.eval()


def loss_gradients(model: nn.Module, data: Dataset, index_batches: Iterable[Tensor], device: torch.device,
                   reduction: str = "mean") -> Iterator[dict[str, Tensor]]:
    """Per mini-batch, the gradient of its cross-entropy (true labels, ``reduction`` over the batch) with respect to
    every parameter, as ``{name: float32 gradient}`` (parameters the loss does not reach are left out).

    The model is put in eval mode; its parameters and ``.grad`` are not modified (SalUn's saliency, SSD's Fisher).
    """
    model.eval()
    named = list(model.named_parameters())
    for x, y in iter_batches(data, index_batches):
        loss = nn.functional.cross_entropy(model(x.to(device)), torch.as_tensor(y).long().to(device),
                                           reduction=reduction)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        yield {name: grad.detach().float() for (name, _), grad in zip(named, grads) if grad is not None}
