"""Accuracy on the forget class (Acc_f) and on the retained classes (Acc_r)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["accuracy", "accuracy_split"]


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Fraction of ``pred == labels`` (both (N,) int64); NaN when N == 0."""
    if pred.shape != labels.shape:
        raise ValueError(f"wfkern.accuracy: pred must have the shape of labels {tuple(labels.shape)}, "
                         f"got {tuple(pred.shape)}")
    if labels.numel() == 0:
        return float("nan")
    return float((pred == labels).double().mean())


def accuracy_split(pred: Tensor, labels: Tensor, forget_class: int) -> tuple[float, float]:
    """Split accuracy into the forget class and the rest.

    Args:
        pred: (N,) int64 predicted classes of the model unlearned on ``forget_class``.
        labels: (N,) int64 true classes.
        forget_class: the class ``c``.
    Returns:
        ``(acc_f, acc_r)``: accuracy on samples of class ``c`` and on samples of every other class.
    """
    mask = labels == forget_class
    return accuracy(pred[mask], labels[mask]), accuracy(pred[~mask], labels[~mask])
