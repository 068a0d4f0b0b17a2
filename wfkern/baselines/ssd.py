"""SSD, Selective Synaptic Dampening (Foster, Schoepf, Brintrup, AAAI 2024): training-free single-class unlearning.

"Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening". The importance of a parameter
on a data set is its diagonal Fisher information, estimated as the reference implementation does: the squared
gradient of each mini-batch's mean cross-entropy (true labels, the model in eval mode), averaged over the
mini-batches. With ``I_D`` on the full training set and ``I_Df`` on the forget set, every parameter with
``I_Df > alpha * I_D`` is multiplied by ``beta = min(lambda * I_D / I_Df, 1)``; every other parameter is left
exactly as it was. Nothing is trained. Defaults: the paper's lambda = 1, and its alpha = 10 capped at half the
largest ratio the data allows (``default_alpha``; docs/evaluation.md).
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from wfkern._utils import model_device, trainable_copy
from wfkern.data import dataset_targets

from ._common import class_split, loss_gradients

__all__ = ["ssd", "fisher_diagonal", "ssd_dampen", "default_alpha"]


def fisher_diagonal(model: nn.Module, data: Dataset, index_batches: Iterable[Tensor], device=None) -> dict[str, Tensor]:
    """Diagonal Fisher importance of every parameter: mean over the batches of (d mean-CE / d theta)^2.

    Args:
        model: the network (put in eval mode; its parameters and ``.grad`` are not modified).
        data: a single-label dataset.
        index_batches: the mini-batches, as (B,) index tensors into ``data``.
        device: where to compute (default the model's device).
    Returns:
        ``{name: importance}`` for every parameter of ``model.named_parameters()`` (zeros where unused), float32.
    """
    importance = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in model.named_parameters()}
    n_batches = 0
    for grads in loss_gradients(model, data, index_batches, model_device(model, device)):
        for name, grad in grads.items():
            importance[name] += grad.pow(2)
        n_batches += 1
    if n_batches == 0:
        raise ValueError("wfkern.fisher_diagonal: index_batches must hold at least one batch, got none")
    for values in importance.values():
        values /= n_batches
    return importance


@torch.no_grad()
def ssd_dampen(model: nn.Module, importance_d: dict[str, Tensor], importance_f: dict[str, Tensor], *,
               alpha: float = 10.0, lam: float = 1.0) -> int:
    """Dampen, in place, the parameters much more important to the forget set than to the whole training set.

    Selection: ``I_Df > alpha * I_D``. Dampening: ``theta <- beta * theta``, ``beta = min(lam * I_D / I_Df, 1)``
    (in [0, 1]: a parameter never grows). Parameters not selected are not written to.

    Args:
        model: the network to modify.
        importance_d: ``fisher_diagonal`` on the full training set.
        importance_f: ``fisher_diagonal`` on the forget set.
        alpha: selection threshold (the paper's alpha).
        lam: dampening constant (the paper's lambda).
    Returns:
        The number of parameter elements selected (dampened).
    """
    if not alpha >= 0 or not lam >= 0:
        raise ValueError(f"wfkern.ssd: alpha and lambda must be >= 0, got alpha={alpha!r}, lambda={lam!r}")
    selected = 0
    for n, p in model.named_parameters():
        i_d, i_f = importance_d[n].to(p.device), importance_f[n].to(p.device)
        sel = i_f > alpha * i_d  # implies i_f > 0: no division by zero below
        if not bool(sel.any()):
            continue
        beta = (lam * i_d[sel] / i_f[sel]).clamp(max=1.0).to(p.dtype)
        p[sel] = p[sel] * beta
        selected += int(sel.sum())
    return selected


def default_alpha(n_train: int, n_forget: int) -> float:
    """SSD's selection threshold when none is given: the paper's 10, at most half the largest reachable ratio.

    ``I_D`` averages over all N training samples, the N_f forget samples among them, so ``I_Df / I_D`` cannot
    exceed about ``N / N_f`` (exactly, for the per-sample Fisher): with 10 balanced classes no parameter passes
    ``alpha = 10``. The paper's full-class settings (CIFAR-20: N / N_f = 20; CIFAR-100: 100) both give 10 here.
    """
    return min(10.0, 0.5 * n_train / max(1, n_forget))


def ssd(original: nn.Module, train_data: Dataset, c: int, *, alpha: Optional[float] = None, lam: float = 1.0,
        batch_size: int = 64, device=None, progress: bool = False) -> nn.Module:
    """SSD: forget class ``c`` by dampening the parameters specialised to it; no training, no retain pass.

    ``I_D`` is computed on every training sample in the reference implementation's order (the retain samples
    grouped by class, then the class-``c`` samples; mini-batches of ``batch_size``), ``I_Df`` on the class-``c``
    samples; then ``ssd_dampen``.

    Args:
        original: the trained model (copied, not modified).
        train_data: the full training set (D; its class-``c`` samples are D_f).
        c: the class to forget.
        alpha: selection threshold: dampen where ``I_Df > alpha * I_D``; default ``default_alpha(N, N_f)``, the
            paper's 10 capped at ``N / (2 N_f)`` (5 for 10 balanced classes).
        lam: dampening constant: ``beta = min(lam * I_D / I_Df, 1)`` (paper: 1).
        batch_size: mini-batch of the Fisher estimates (the reference code's 64).
        device: where to compute (default the original's device).
        progress: unused (SSD is two passes over the data); accepted for a uniform interface.
    Returns:
        The unlearned model, in eval mode.
    """
    del progress
    labels = dataset_targets(train_data, single_label=True)
    forget, retain = class_split(labels, c)
    if forget.numel() == 0:
        raise ValueError(f"wfkern.ssd: train_data must hold samples of class {c} to forget, got none")
    # D in the reference order: retain samples grouped by class (stable), then the forget samples.
    retain = retain[torch.sort(labels[retain], stable=True).indices]
    full = torch.cat([retain, forget])
    model, dev = trainable_copy(original, device)
    imp_f = fisher_diagonal(model, train_data, forget.split(batch_size), dev)
    imp_d = fisher_diagonal(model, train_data, full.split(batch_size), dev)
    if alpha is None:
        alpha = default_alpha(labels.numel(), forget.numel())
    ssd_dampen(model, imp_d, imp_f, alpha=alpha, lam=lam)
    return model.eval()
