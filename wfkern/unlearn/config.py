"""Untraining hyperparameters, the per-family defaults, and the paper's literal recipe."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch.nn as nn

__all__ = ["UnlearnConfig", "PAPER_RECIPE", "LAMBDA1_DEFAULTS", "model_family_of", "RESUME_KEYS"]

# λ1 per model family (SPEC §2.3): CNNs 10, ViTs 100.
LAMBDA1_DEFAULTS = {"cnn": 10.0, "vit": 100.0}

# The paper's setting taken literally (SPEC §2.4): plain SGD at lr 100, nothing clipped, no warm-up.
# It collapses on the digits (docs/untraining.md); pass ``**PAPER_RECIPE`` to ``unlearn`` to run it.
PAPER_RECIPE = {"optimizer": "sgd", "lr": 100.0, "momentum": 0.0, "clip_norm": None, "lambda1_warmup": 0.0}

# Settings that must match for --resume to continue a run (the others may change, e.g. progress).
RESUME_KEYS = ("lambda0", "lambda1", "lambda2", "eps", "chi", "batch_size", "optimizer", "lr", "momentum",
               "clip_norm", "lambda1_warmup", "alpha_init", "max_epochs", "evals_per_epoch", "patience", "seed")


@dataclass
class UnlearnConfig:
    """Every hyperparameter of ``wfkern.unlearn`` (see its docstring for each one's meaning)."""

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

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        checks = [
            ("chi", self.chi >= 1, "be >= 1"), ("batch_size", self.batch_size >= 2, "be >= 2"),
            ("optimizer", self.optimizer in ("sgd", "adam"), "be 'sgd' or 'adam'"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "be a positive number"),
            ("clip_norm", self.clip_norm is None or self.clip_norm > 0, "be positive or None (no clipping)"),
            ("lambda1_warmup", 0.0 <= self.lambda1_warmup <= 1.0, "be a fraction of the run in [0, 1]"),
            ("max_epochs", self.max_epochs >= 1, "be >= 1"), ("evals_per_epoch", self.evals_per_epoch >= 1, "be >= 1"),
            ("patience", self.patience >= 1, "be >= 1"), ("eps", self.eps > 0, "be > 0"),
            ("momentum", 0.0 <= self.momentum < 1.0, "be in [0, 1)"),
        ]
        for name, ok, expectation in checks:
            if not ok:
                raise ValueError(f"wfkern.unlearn: {name} must {expectation}, got {getattr(self, name)!r}")

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
