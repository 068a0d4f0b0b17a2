"""l1-sparse unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu, NeurIPS 2023, "Model sparsity can simplify
machine unlearning"): fine-tuning on the retain set with an l1 penalty on the weights whose strength decays.

The loss of every step is ``CE(retain batch) + gamma_e * ||theta||_1`` with ``||theta||_1`` the sum of the absolute
values of every parameter element and ``gamma_e = gamma * (1 - e / E)`` in epoch ``e = 0 .. E - 1`` (a linearly
decaying scheduler: sparsity is pushed early, accuracy is recovered late). As in FT, a class-``c`` sample is never
read; forgetting comes from the retain-only training and the sparsity the penalty induces.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ._common import retain_fine_tune

__all__ = ["l1_sparse", "l1_norm", "l1_schedule"]


def l1_norm(model: nn.Module) -> torch.Tensor:
    """``sum |theta|`` over every parameter element of ``model`` (differentiable)."""
    return sum(p.abs().sum() for p in model.parameters())


def l1_schedule(l1: float, epoch: int, epochs: int) -> float:
    """The penalty strength of epoch ``epoch`` (from 0) of ``epochs``: ``l1 * (1 - epoch / epochs)``."""
    return l1 * (1.0 - epoch / epochs)


def l1_sparse(original: nn.Module, train_data: Dataset, c: int, *, epochs: int = 20, lr: float = 0.1,
              l1: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 128,
              seed: int = 0, device=None, progress: bool = False) -> nn.Module:
    """l1-sparse: fine-tune on the retain set (every sample not of class ``c``) with a decaying l1 penalty.

    FT's loop (``_common.retain_epochs``: a fresh seeded permutation of the retain indices each epoch, SGD with
    momentum and weight decay, train mode) with ``l1_schedule(l1, e, epochs) * l1_norm(model)`` added to each
    step's cross-entropy.

    Args:
        original: the trained model (copied, not modified).
        train_data: the training set.
        c: the class to forget.
        epochs: passes over the retain set.
        lr: SGD learning rate (constant).
        l1: the penalty's initial strength gamma.
        momentum: SGD momentum.
        weight_decay: SGD (L2) weight decay.
        batch_size: batch size.
        seed: order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The unlearned model, in eval mode.
    """
    return retain_fine_tune(original, train_data, c, name="l1_sparse", epochs=epochs, lr=lr, momentum=momentum,
                            weight_decay=weight_decay, batch_size=batch_size, seed=seed, device=device, progress=progress,
                            penalty=lambda model, e: l1_schedule(l1, e, epochs) * l1_norm(model))
