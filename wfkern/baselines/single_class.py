"""Single-class unlearning baselines (docs/method.md §4): retrain without the class, fine-tuning on the retain set, random
labels, negative gradient.

Each returns a new plain model that has forgotten one class ``c``; the original is never modified. Random labels and
negative gradients keep BatchNorm statistics frozen (BN layers in eval mode) so single-class batches cannot skew
them; fine-tuning on the retain set continues training as training does (retain batches mix classes).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wfkern._utils import trainable_copy
from wfkern.data import dataset_targets, iter_batches, subset_of
from wfkern.train.trainer import train_model

from ._common import class_split, fine_tune_mode, random_label_epochs, resolve_num_classes, retain_fine_tune

__all__ = ["retrain", "fine_tune", "random_labels", "neg_grad", "subset_of"]


def retrain(model_fn: Callable[[], nn.Module], train_data: Dataset, c: int, *, val_data: Optional[Dataset] = None,
            seed: int = 0, **train_kwargs) -> nn.Module:
    """Train a fresh model from scratch on every training sample not of class ``c`` (the gold standard).

    Args:
        model_fn: builds an untrained model of the original architecture (``Nc`` outputs, class ``c`` unseen).
        train_data: the full training set.
        c: the class to leave out.
        val_data: optional validation set (class ``c`` removed as well).
        seed: initialisation and shuffling seed.
        **train_kwargs: passed to ``wfkern.train.train_model`` (epochs, lr, batch_size, device, ...): use the
            original model's recipe.
    Returns:
        The trained model, in eval mode.
    """
    keep = class_split(dataset_targets(train_data, single_label=True), c)[1]
    val = None
    if val_data is not None:
        val = subset_of(val_data, class_split(dataset_targets(val_data, single_label=True), c)[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = model_fn()
    train_model(model, subset_of(train_data, keep), val, seed=seed, **train_kwargs)
    return model.eval()


def random_labels(original: nn.Module, train_data: Dataset, c: int, *, num_classes: Optional[int] = None,
                  epochs: int = 5, lr: float = 5e-4, batch_size: int = 128, retain_ratio: float = 2.0, seed: int = 0,
                  device=None, progress: bool = False) -> nn.Module:
    """Fine-tune on the class-``c`` samples relabelled with random *other* classes, mixed with retain samples.

    Every epoch relabels each forget sample uniformly among the ``Nc - 1`` other classes (fresh draw), adds
    ``retain_ratio`` x as many random retain samples with their true labels, shuffles, and takes Adam steps on
    the cross-entropy of all weights.

    Args:
        original: the trained model (copied, not modified).
        train_data: the training set.
        c: the class to forget.
        num_classes: Nc (default: the largest label + 1).
        epochs: passes over the forget samples.
        lr: Adam learning rate.
        batch_size: mixed batch size.
        retain_ratio: retain samples per forget sample in each epoch.
        seed: relabelling, sampling and order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The unlearned model, in eval mode.
    """
    labels = dataset_targets(train_data, single_label=True)
    num_classes = resolve_num_classes(labels, num_classes, "wfkern.random_labels")
    model, dev = trainable_copy(original, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget, retain = class_split(labels, c)
    n_retain = min(retain.numel(), int(round(retain_ratio * forget.numel())))
    random_label_epochs(model, opt, train_data, labels, c, num_classes, n_retain, epochs=epochs, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(int(seed)), device=dev,
                        desc=f"random-labels class {c}", progress=progress)
    return model.eval()


def neg_grad(original: nn.Module, train_data: Dataset, c: int, *, max_epochs: int = 20, lr: float = 1e-4,
             batch_size: int = 128, stop_acc: float = 0.0, seed: int = 0, device=None,
             progress: bool = False) -> nn.Module:
    """Gradient ascent on the cross-entropy of the class-``c`` training samples, stopped as soon as they are forgotten.

    Before each step the batch's accuracy is read from the same forward pass; the run stops (without that
    step) once it is ``<= stop_acc``, because ascent without a stop destroys the model. ``max_epochs`` caps it.

    Args:
        original: the trained model (copied, not modified).
        train_data: the training set.
        c: the class to forget.
        max_epochs: cap on passes over the forget samples.
        lr: Adam learning rate.
        batch_size: batch size.
        stop_acc: forget-batch training accuracy at which to stop.
        seed: order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The unlearned model, in eval mode.
    """
    forget = class_split(dataset_targets(train_data, single_label=True), c)[0]
    model, dev = trainable_copy(original, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    for _ in tqdm(range(max_epochs), desc=f"neg-grad class {c}", leave=False, disable=not progress):
        fine_tune_mode(model)
        order = forget[torch.randperm(forget.numel(), generator=generator)]
        for x, y in iter_batches(train_data, order.split(batch_size)):
            y = torch.as_tensor(y).long().to(dev)
            logits = model(x.to(dev))
            if float((logits.argmax(1) == y).float().mean()) <= stop_acc:
                return model.eval()
            loss = -nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def fine_tune(original: nn.Module, train_data: Dataset, c: int, *, epochs: int = 10, lr: float = 0.1,
              momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 128, seed: int = 0, device=None,
              progress: bool = False) -> nn.Module:
    """FT: continue training the original model on the retain set only (every sample not of class ``c``).

    The class-``c`` samples are never drawn: each epoch is a fresh seeded permutation of the retain indices, cut
    into batches; SGD with momentum and weight decay on the cross-entropy of all weights, the model in train mode
    (BatchNorm statistics update on the retain batches, as in training). Forgetting comes only from catastrophic
    forgetting: nothing pushes the class away (Golatkar et al., CVPR 2020; the SalUn / l1-sparse protocol).

    Args:
        original: the trained model (copied, not modified).
        train_data: the training set.
        c: the class to forget.
        epochs: passes over the retain set.
        lr: SGD learning rate (constant).
        momentum: SGD momentum.
        weight_decay: SGD (L2) weight decay.
        batch_size: batch size.
        seed: order seed.
        device: where to train (default the original's device).
        progress: tqdm bar over epochs.
    Returns:
        The unlearned model, in eval mode.
    """
    return retain_fine_tune(original, train_data, c, name="fine_tune", epochs=epochs, lr=lr, momentum=momentum,
                            weight_decay=weight_decay, batch_size=batch_size, seed=seed, device=device, progress=progress)
