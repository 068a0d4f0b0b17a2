"""SalUn, saliency unlearning (Fan, Liu, Zhang, Wei, Wong, Liu, ICLR 2024).

"SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency". A weight-saliency mask
``m = 1(|grad_theta l_f(theta_o; D_f)| >= gamma)`` keeps the weights whose forget-loss gradient at the original model
is largest (``gamma`` is chosen so that a fraction of all weights, ranked together across every parameter tensor,
is kept: the paper's default 50 %); then random-label unlearning updates only those weights,
``theta_u = m * (theta_o + delta) + (1 - m) * theta_o``: the forget samples with labels drawn uniformly among the
*other* classes, mixed with the retain samples and their true labels, in shuffled mini-batches.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from wfkern._utils import model_device, trainable_copy
from wfkern.data import dataset_targets

from ._common import class_split, loss_gradients, random_label_epochs, resolve_num_classes

__all__ = ["salun", "saliency_mask"]


def saliency_mask(model: nn.Module, data: Dataset, forget: Tensor, *, fraction: float = 0.5, batch_size: int = 128,
                  device=None) -> dict[str, Tensor]:
    """SalUn's hard weight-saliency mask: the top ``fraction`` of all weights by |gradient of the forget loss|.

    The forget loss is the cross-entropy of the forget samples with their true labels, averaged over all of them
    (the gradient of gradient ascent has the same magnitude), at the model as given, in eval mode. Saliencies of
    every parameter tensor are ranked together (one global threshold); ties are broken by position, so exactly
    ``floor(fraction * total)`` elements are selected.

    Args:
        model: the network (not modified; its ``.grad`` untouched).
        data: a single-label dataset.
        forget: (N_f,) indices of the forget samples in ``data``.
        fraction: share of all parameter elements in the mask, in [0, 1].
        batch_size: batch size of the gradient pass (does not change the result beyond float rounding).
        device: where to compute (default the model's device).
    Returns:
        ``{name: bool mask}`` for every parameter of ``model.named_parameters()``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"wfkern.saliency_mask: fraction must be in [0, 1], got {fraction!r}")
    if forget.numel() == 0:
        raise ValueError("wfkern.saliency_mask: forget must hold at least one sample, got none")
    named = list(model.named_parameters())
    grad_sum = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    for grads in loss_gradients(model, data, forget.split(batch_size), model_device(model, device), "sum"):
        for name, grad in grads.items():
            grad_sum[name] += grad
    saliency = torch.cat([grad.abs().flatten() for grad in grad_sum.values()]) / forget.numel()
    k = int(saliency.numel() * fraction)
    keep = torch.zeros(saliency.numel(), dtype=torch.bool, device=saliency.device)
    keep[torch.argsort(saliency, descending=True, stable=True)[:k]] = True
    masks, start = {}, 0
    for name, p in named:
        masks[name] = keep[start:start + p.numel()].view_as(p)
        start += p.numel()
    return masks


def salun(original: nn.Module, train_data: Dataset, c: int, *, num_classes: Optional[int] = None,
          fraction: float = 0.5, epochs: int = 5, lr: float = 1e-3, momentum: float = 0.9,
          weight_decay: float = 5e-4, batch_size: int = 128, retain_ratio: Optional[float] = None, seed: int = 0,
          device=None, progress: bool = False) -> nn.Module:
    """SalUn: random-label fine-tuning of the salient weights only.

    ``saliency_mask`` on the class-``c`` samples, then each epoch: the class-``c`` samples relabelled uniformly among
    the ``Nc - 1`` other classes (fresh draw), together with the retain samples (all of them, or ``retain_ratio`` x
    as many random ones) and their true labels, shuffled into mini-batches; SGD with momentum and weight decay on
    the cross-entropy. Gradients outside the mask are zeroed before each step and the weights outside it are
    restored to the original's exact values after it (their momentum zeroed), so they never change; BatchNorm
    statistics stay frozen (buffers are outside the mask).

    Args:
        original: the trained model (copied, not modified).
        train_data: the training set.
        c: the class to forget.
        num_classes: Nc (default: the largest label + 1).
        fraction: share of all weights in the saliency mask (paper: 50 %).
        epochs: passes over the forget samples (and the retain samples mixed with them).
        lr: SGD learning rate (constant).
        momentum: SGD momentum.
        weight_decay: SGD (L2) weight decay, on the masked weights only.
        batch_size: mixed batch size.
        retain_ratio: retain samples per forget sample in each epoch; None (default): every retain sample, as the
            paper's code concatenates the whole retain set with the forget set.
        seed: relabelling, sampling and order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The unlearned model, in eval mode.
    """
    labels = dataset_targets(train_data, single_label=True)
    num_classes = resolve_num_classes(labels, num_classes, "wfkern.salun")
    forget, retain = class_split(labels, c)
    if forget.numel() == 0:
        raise ValueError(f"wfkern.salun: train_data must hold samples of class {c} to forget, got none")
    model, dev = trainable_copy(original, device)
    masks = saliency_mask(model, train_data, forget, fraction=fraction, batch_size=batch_size, device=dev)
    params = [(p, masks[name].to(p.device), p.detach().clone()) for name, p in model.named_parameters()]
    opt = torch.optim.SGD([p for p, _, _ in params], lr=lr, momentum=momentum, weight_decay=weight_decay)
    n_retain = retain.numel()
    if retain_ratio is not None:
        n_retain = min(n_retain, int(round(retain_ratio * forget.numel())))

    @torch.no_grad()
    def mask_grads() -> None:
        for p, mask, _ in params:
            if p.grad is not None:
                p.grad.mul_(mask)

    @torch.no_grad()
    def restore_outside_mask() -> None:
        for p, mask, original_value in params:
            p.copy_(torch.where(mask, p, original_value))
            momentum_buffer = opt.state.get(p, {}).get("momentum_buffer")
            if momentum_buffer is not None:
                momentum_buffer.mul_(mask)

    random_label_epochs(model, opt, train_data, labels, c, num_classes, n_retain, epochs=epochs, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(int(seed)), device=dev, desc=f"salun class {c}",
                        progress=progress, after_backward=mask_grads, after_step=restore_outside_mask)
    return model.eval()
