"""Untraining hyperparameters, the per-family defaults, and the paper's literal recipe."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

import torch.nn as nn

__all__ = ["UnlearnConfig", "setting_problem", "PAPER_RECIPE", "LAMBDA1_DEFAULTS", "model_family_of", "RESUME_KEYS"]

# λ1 per model family (docs/method.md §2): CNNs 10, ViTs 100.
LAMBDA1_DEFAULTS = {"cnn": 10.0, "vit": 100.0}

# The paper's setting taken literally (docs/method.md §2.4): plain SGD at lr 100, nothing clipped, no warm-up.
# It collapses on the digits (docs/untraining.md); pass ``**PAPER_RECIPE`` to ``unlearn`` to run it.
PAPER_RECIPE = {"optimizer": "sgd", "lr": 100.0, "momentum": 0.0, "clip_norm": None, "lambda1_warmup": 0.0}

# Settings that must match for --resume to continue a run (the others may change, e.g. progress).
RESUME_KEYS = ("lambda0", "lambda1", "lambda2", "eps", "chi", "batch_size", "optimizer", "lr", "momentum",
               "clip_norm", "lambda1_warmup", "alpha_init", "max_epochs", "evals_per_epoch", "patience", "seed")


# Integer settings: (lowest, highest allowed or None, expectation).
_INT_RULES = {"chi": (1, None, "be >= 1"), "batch_size": (2, None, "be >= 2"), "max_epochs": (1, None, "be >= 1"),
              "evals_per_epoch": (1, None, "be >= 1"), "patience": (1, None, "be >= 1"),
              "seed": (-2**40, 2**40, "be at most 2**40 in absolute value")}
# Number settings: (test, expectation); every one must also be finite (NaN / inf are never a setting).
_FLOAT_RULES = {
    "lambda0": (lambda v: v >= 0, "be a finite number >= 0"),
    "lambda1": (lambda v: v >= 0, "be a finite number >= 0"),
    "lambda2": (lambda v: v >= 0, "be a finite number >= 0"),
    "eps": (lambda v: v > 0, "be a finite number > 0"),
    "lr": (lambda v: v > 0, "be a positive finite number"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "be in [0, 1)"),
    "clip_norm": (lambda v: v > 0, "be positive or None (no clipping), and finite"),
    "lambda1_warmup": (lambda v: 0.0 <= v <= 1.0, "be a fraction of the run in [0, 1]"),
    "alpha_init": (lambda v: True, "be a finite number"),
}


def setting_problem(name: str, value) -> tuple[type[Exception], str] | None:
    """What is wrong with one ``unlearn`` setting: None, or (TypeError / ValueError, "be ...").

    The one rule set for the library (``UnlearnConfig``) and the command line (``wfkern unlearn``),
    which words the same expectation with its flag name. ``clip_norm=None`` turns clipping off.
    """
    if name == "optimizer":
        return None if isinstance(value, str) and value in ("sgd", "adam") else (ValueError, "be 'sgd' or 'adam'")
    if name in _INT_RULES:
        lo, hi, expectation = _INT_RULES[name]
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return TypeError, "be an integer" + expectation[2:].replace(" at most", " of at most")
        if value < lo or (hi is not None and value > hi):
            return ValueError, expectation
        return None
    if name in _FLOAT_RULES:
        test, expectation = _FLOAT_RULES[name]
        if name == "clip_norm" and value is None:
            return None
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return TypeError, expectation
        if not math.isfinite(value) or not test(value):
            return ValueError, expectation
        return None
    raise KeyError(f"wfkern.unlearn: name must be a setting of UnlearnConfig, got {name!r}")


@dataclass
class UnlearnConfig:
    """Every hyperparameter of ``wfkern.unlearn`` (see its docstring for each one's meaning).

    Checked on construction (and by ``validate``): integers must be integers (2.5 is refused, never
    truncated), numbers must be finite (NaN / inf are refused up front, not reported later as a
    divergence), loss weights must be >= 0, and ``clip_norm`` is a positive number or None (no clipping).
    """

    lambda0: float = 1.0
    lambda1: float = 10.0
    lambda2: float = 1.0
    eps: float = 1e-6
    chi: int = 3
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 100.0
    momentum: float = 0.0
    clip_norm: float | None = 0.5
    lambda1_warmup: float = 0.0
    alpha_init: float = 3.0
    max_epochs: int = 30
    evals_per_epoch: int = 5
    patience: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _INT_RULES:
                setattr(self, f.name, int(value))
            elif f.name in _FLOAT_RULES and value is not None:
                setattr(self, f.name, float(value))

    def validate(self) -> None:
        """Raise ValueError (a bad value) or TypeError (a wrong type) naming the first bad setting."""
        for f in fields(self):
            value = getattr(self, f.name)
            problem = setting_problem(f.name, value)
            if problem is not None:
                kind, expectation = problem
                raise kind(f"wfkern.unlearn: {f.name} must {expectation}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_mismatch(self, saved: dict) -> list[str]:
        """Names of settings that differ from a checkpoint's saved config."""
        return [k for k in RESUME_KEYS if k in saved and saved[k] != getattr(self, k)]


def model_family_of(wf: nn.Module) -> str:
    """"vit" when any WF layer wraps something other than a convolution (attention qkv), else "cnn"."""
    for layer in wf.wf_layers().values():
        if not isinstance(layer.base, nn.Conv2d):
            return "vit"
    return "cnn"
