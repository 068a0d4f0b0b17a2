"""Untraining: one round that teaches a WF model's gates to forget every class (docs/method.md §2)."""

from wfkern.unlearn.config import LAMBDA1_DEFAULTS, LAMBDA1_MARGIN, LR_DEFAULTS, PAPER_RECIPE, UnlearnConfig
from wfkern.unlearn.loop import UnlearnDiverged, UnlearnResult, unlearn
from wfkern.unlearn.objective import alpha_regularizer, expand_labels, gate_regularizer, pick_forget_labels, untraining_loss
from wfkern.unlearn.state import ResumeMismatch

__all__ = ["unlearn", "UnlearnResult", "UnlearnDiverged", "ResumeMismatch", "UnlearnConfig", "PAPER_RECIPE",
           "LAMBDA1_DEFAULTS", "LAMBDA1_MARGIN", "LR_DEFAULTS",
           "alpha_regularizer", "expand_labels", "gate_regularizer", "pick_forget_labels", "untraining_loss"]
