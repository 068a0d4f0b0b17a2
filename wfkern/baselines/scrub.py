"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou, NeurIPS 2023, "Towards unbounded machine unlearning"):
a student initialised as the original (the teacher) is trained in alternating min-max epochs.

Max-steps (the first ``forget_epochs`` epochs): on forget-class batches, gradient ascent on
``KL(teacher || student)`` (the student moves away from the teacher on the forget data). Min-steps (every epoch,
after the max-steps): on retain batches, ``kl_weight * KL(teacher || student) + ce_weight * CE`` (the student stays
close to the teacher and correct on the retain data). The KL is the distillation loss of the reference code:
``T^2 * KL(softmax(t / T) || softmax(s / T))`` summed over classes, averaged over the batch.

The ascent on the KL is unbounded: at some learning rates a max-epoch drives the weights to inf / NaN (Fashion-MNIST
at the reference's lr did). An epoch whose max- or min-steps give a non-finite loss is undone: the student and the
optimiser go back to their state before that epoch's max-steps, the max-steps end for the run, and the epoch's
min-steps run again from there (a warning says so). A run that stays finite is unchanged by this.
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern._utils import trainable_copy
from wfkern.data import dataset_targets, iter_batches

from ._common import class_split, fine_tune_mode

__all__ = ["scrub", "distill_kl"]


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * mean_b sum_i q_i (ln q_i - ln p_i)`` with ``q = softmax(t / T)``, ``p = softmax(s / T)``."""
    log_p = torch.log_softmax(student_logits / temperature, dim=1)
    q = torch.softmax(teacher_logits / temperature, dim=1)
    return nn.functional.kl_div(log_p, q, reduction="sum") * temperature ** 2 / student_logits.shape[0]


def _steps(student: nn.Module, teacher: nn.Module, opt: torch.optim.Optimizer, data: Dataset, idx: Tensor,
           batch_size: int, generator: torch.Generator, device: torch.device, loss_fn) -> bool:
    """One pass over ``idx`` in shuffled batches; False (and the pass stops) at the first non-finite loss."""
    order = idx[torch.randperm(idx.numel(), generator=generator)]
    for x, y in iter_batches(data, order.split(batch_size)):
        x, y = x.to(device), torch.as_tensor(y).long().to(device)
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = loss_fn(student(x), teacher_logits, y)
        if not torch.isfinite(loss):
            return False
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return True


def scrub(original: nn.Module, train_data: Dataset, c: int, *, epochs: int = 10, forget_epochs: int = 3,
          lr: float = 5e-4, momentum: float = 0.9, weight_decay: float = 5e-4, temperature: float = 4.0,
          kl_weight: float = 0.001, ce_weight: float = 0.99, batch_size: int = 128, forget_batch_size: int = 32,
          retain_ratio: Optional[float] = None, seed: int = 0, device=None, progress: bool = False) -> nn.Module:
    """SCRUB: teacher-student min-max unlearning of class ``c``.

    Each epoch ``e``: when ``e < forget_epochs`` a max-epoch over the class-``c`` samples (shuffled, batches of
    ``forget_batch_size``, loss ``-distill_kl``), then a min-epoch over the retain samples (all of them, or
    ``retain_ratio`` x as many random ones; batches of ``batch_size``, loss ``kl_weight * distill_kl + ce_weight *
    CE``). One SGD optimiser (momentum, weight decay, constant lr) for both; BatchNorm statistics frozen (the
    max-steps see one class only). The teacher is the original, frozen, in eval mode. An epoch that gives a
    non-finite loss is undone and the max-steps end there (the module docstring).

    Args:
        original: the trained model (the teacher; copied into the student, not modified).
        train_data: the training set.
        c: the class to forget.
        epochs: min-epochs (passes over the retain samples).
        forget_epochs: the first epochs that also take a max-epoch ("msteps").
        lr / momentum / weight_decay: SGD.
        temperature: distillation temperature T.
        kl_weight: weight of the KL term of the min-steps (alpha).
        ce_weight: weight of the cross-entropy of the min-steps (gamma).
        batch_size: retain batch size.
        forget_batch_size: forget batch size.
        retain_ratio: None (every retain sample each epoch) or retain samples per forget sample.
        seed: order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The student, in eval mode.
    Raises:
        FloatingPointError: the min-steps alone gave a non-finite loss (nothing left to undo: lower ``lr``).
    """
    forget, retain = class_split(dataset_targets(train_data, single_label=True), c)
    if forget.numel() == 0 or retain.numel() == 0:
        raise ValueError(f"wfkern.scrub: train_data must hold samples of class {c} and of other classes, got "
                         f"{forget.numel()} and {retain.numel()}")
    student, dev = trainable_copy(original, device)
    teacher, _ = trainable_copy(original, dev)
    teacher.eval().requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    n_retain = retain.numel()
    if retain_ratio is not None:
        n_retain = min(n_retain, int(round(retain_ratio * forget.numel())))
    def away(student_logits: Tensor, teacher_logits: Tensor, y: Tensor) -> Tensor:
        return -distill_kl(student_logits, teacher_logits, temperature)

    def close(student_logits: Tensor, teacher_logits: Tensor, y: Tensor) -> Tensor:
        return (kl_weight * distill_kl(student_logits, teacher_logits, temperature)
                + ce_weight * nn.functional.cross_entropy(student_logits, y))

    max_steps_end = forget_epochs
    for epoch in tqdm(range(epochs), desc=f"scrub class {c}", leave=False, disable=not progress):
        fine_tune_mode(student)
        finite, saved = True, None
        if epoch < max_steps_end:
            saved = copy.deepcopy((student.state_dict(), opt.state_dict()))
            finite = _steps(student, teacher, opt, train_data, forget, forget_batch_size, generator, dev, away)
        retain_drawn = retain[torch.randperm(retain.numel(), generator=generator)[:n_retain]]
        finite = finite and _steps(student, teacher, opt, train_data, retain_drawn, batch_size, generator, dev, close)
        if finite:
            continue
        def min_steps_diverged(when: str) -> FloatingPointError:
            return FloatingPointError(f"wfkern.scrub: the min-steps of epoch {epoch} (class {c}) gave a non-finite "
                                      f"loss {when}; lower lr (got {lr})")

        if saved is None:
            raise min_steps_diverged("with no max-step to undo")
        warnings.warn(f"wfkern.scrub: epoch {epoch} of class {c} diverged (a non-finite loss); undone, the max-steps "
                      f"end after {epoch} of {forget_epochs} max-epochs", RuntimeWarning, stacklevel=2)
        student.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        max_steps_end = epoch
        if not _steps(student, teacher, opt, train_data, retain_drawn, batch_size, generator, dev, close):
            raise min_steps_diverged("after the diverged max-steps were undone")
    return student.eval()
