"""Untraining hyperparameters, the per-family defaults, and the paper's literal recipe."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

import torch.nn as nn

from wfkern._utils import accepts_old_setting_names, replace_settings, setting
from wfkern.unlearn.objective import FORGET_LOSSES, RETAIN_LOSSES

__all__ = ["UnlearnConfig", "setting_problem", "PAPER_RECIPE", "LAMBDA1_DEFAULTS", "LAMBDA1_MARGIN", "LR_DEFAULTS",
           "MARGIN_DEFAULTS", "MAX_EPOCHS_DEFAULTS", "MAX_STEPS_PER_CLASS", "PATIENCE_DEFAULTS", "model_family_of",
           "RESUME_KEYS"]

# λ1 of the paper's reciprocal forget loss, per model family (docs/method.md §2): CNNs 10, ViTs 100. The margin
# loss is bounded, so one λ1 fits both families.
LAMBDA1_DEFAULTS = {"cnn": 10.0, "vit": 100.0}
LAMBDA1_MARGIN = 1.0


def _per_family(values: dict) -> str:
    """What None means for a setting with a default per model family (the flag's help says it)."""
    return f"the model family's: {values['cnn']:g} for CNNs, {values['vit']:g} for ViTs"


_LAMBDA1_NONE = f"{LAMBDA1_MARGIN:g} with the margin loss; with the reciprocal {_per_family(LAMBDA1_DEFAULTS)}"

# The run's length per model family: a ViT's gates need about three times a CNN's steps (docs/untraining.md,
# "The default recipe", has the measurements).
MAX_EPOCHS_DEFAULTS = {"cnn": 10, "vit": 30}
PATIENCE_DEFAULTS = {"cnn": 10, "vit": 30}
# Steps per class: what the gates need scales with the classes (each class's row learns from the forget rows drawn
# for it), not with the dataset's size, so ``max_steps`` defaults to this times the classes; on a small dataset the
# epoch cap comes first.
MAX_STEPS_PER_CLASS = {"cnn": 100, "vit": 200}

# The margin loss's margin per model family (docs/untraining.md, ViT sweep): 4 logits for ViTs, whose default gates
# sit on every linear layer of each block (``wfkern.patch``'s "auto"); 3 for CNNs.
MARGIN_DEFAULTS = {"cnn": 3.0, "vit": 4.0}

OPTIMIZERS = ("sgd", "adam")
# The learning rate on the gate logits per optimiser (docs/untraining.md): Adam's steps are scale-free, SGD's are
# the paper's lr 100.
LR_DEFAULTS = {"adam": 0.2, "sgd": 100.0}
_LR_NONE = f"the optimizer's: {LR_DEFAULTS['adam']:g} for Adam, {LR_DEFAULTS['sgd']:g} for SGD"

# The paper's setting taken literally (docs/method.md §2.4): its losses (cross-entropy on the retain rows, the
# reciprocal 1/(L_f + ε) on the forget rows, the gate regulariser at λ2 = 1), plain SGD at lr 100, nothing
# clipped. It collapses (docs/untraining.md); pass ``**PAPER_RECIPE`` to ``unlearn`` (or ``--recipe paper``).
PAPER_RECIPE = {"retain_loss": "ce", "forget_loss": "reciprocal", "lambda2": 1.0, "optimizer": "sgd", "lr": 100.0,
                "momentum": 0.0, "clip_norm": None, "lambda1_warmup": 0.0}


# Settings that name one of a few choices.
_CHOICES = {"optimizer": OPTIMIZERS, "retain_loss": RETAIN_LOSSES, "forget_loss": FORGET_LOSSES}

# Integer settings: (lowest, highest allowed or None, expectation).
_INT_RULES = {"chi": (1, None, "be >= 1"), "batch_size": (2, None, "be >= 2"), "max_epochs": (1, None, "be >= 1"),
              "max_steps": (1, None, "be >= 1"),
              "evals_per_epoch": (1, None, "be >= 1"), "patience": (1, None, "be >= 1"),
              "seed": (-2**40, 2**40, "be at most 2**40 in absolute value")}
# Number settings: (test, expectation); every one must also be finite (NaN / inf are never a setting).
_FLOAT_RULES = {
    "temperature": (lambda v: v > 0, "be a finite number > 0"),
    "margin": (lambda v: v >= 0, "be a finite number >= 0"),
    "lambda0": (lambda v: v >= 0, "be a finite number >= 0"),
    "lambda1": (lambda v: v >= 0, "be a finite number >= 0"),
    "lambda2": (lambda v: v >= 0, "be a finite number >= 0"),
    "eps": (lambda v: v > 0, "be a finite number > 0"),
    "lr": (lambda v: v > 0, "be a positive finite number"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "be in [0, 1)"),
    "clip_norm": (lambda v: v > 0, "be positive or None (no clipping), and finite"),
    "lambda1_warmup": (lambda v: 0.0 <= v <= 1.0, "be a fraction of the run in [0, 1]"),
    "gate_init": (lambda v: True, "be a finite number"),
}


def setting_problem(name: str, value) -> tuple[type[Exception], str] | None:
    """What is wrong with one ``unlearn`` setting: None, or (TypeError / ValueError, "be ...").

    The one rule set for the library (``UnlearnConfig``) and the command line (``wfkern unlearn``),
    which words the same expectation with its flag name. ``clip_norm=None`` turns clipping off;
    ``lambda1=None`` is the model family's λ1.
    """
    if name in _CHOICES:
        choices = _CHOICES[name]
        return None if isinstance(value, str) and value in choices else (
            ValueError, "be " + " or ".join(map(repr, choices)))
    if name in _INT_RULES:
        lo, hi, expectation = _INT_RULES[name]
        if value is None and "none" in _FIELDS[name].metadata:  # a field that says what None means
            return None
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return TypeError, "be an integer" + expectation[2:].replace(" at most", " of at most")
        if value < lo or (hi is not None and value > hi):
            return ValueError, expectation
        return None
    if name in _FLOAT_RULES:
        test, expectation = _FLOAT_RULES[name]
        if value is None and "none" in _FIELDS[name].metadata:  # a field that says what None means
            return None
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return TypeError, expectation
        if not math.isfinite(value) or not test(value):
            return ValueError, expectation
        return None
    raise KeyError(f"wfkern.unlearn: name must be a setting of UnlearnConfig, got {name!r}")


@accepts_old_setting_names
@dataclass
class UnlearnConfig:
    """Every hyperparameter of ``wfkern.unlearn``: each field's default and help are written once, here.

    ``wfkern unlearn`` (and ``wfkern demo``) make one flag of each field (``--clip-norm`` for
    ``clip_norm``) with this default and help; ``unlearn(..., **overrides)`` replaces fields by name.

    Checked on construction (and by ``validate``): integers must be integers (2.5 is refused, never
    truncated), numbers must be finite (NaN / inf are refused up front, not reported later as a
    divergence), loss weights must be >= 0, and ``clip_norm`` is a positive number or None (no clipping).
    ``lambda1=None`` is the model family's λ1 (``LAMBDA1_DEFAULTS``), ``max_epochs=None``, ``max_steps=None``
    and ``patience=None`` the family's run length; ``for_model`` fills them in.
    """

    retain_loss: str = setting("distill", "loss of the retain rows: 'distill' (T²·KL to the original model's output "
                               "at temperature T) or 'ce' (cross-entropy on the labels, the paper's)",
                               choices=RETAIN_LOSSES)
    forget_loss: str = setting("margin", "loss of the forget rows: 'margin' (the forgotten class must lose to the best "
                               "other class by MARGIN logits) or 'reciprocal' (1/(L_f + ε), the paper's)",
                               choices=FORGET_LOSSES)
    temperature: float = setting(2.0, "distillation temperature T, > 0")
    margin: float | None = setting(None, "logits by which the forgotten class must lose, >= 0",
                                   none=_per_family(MARGIN_DEFAULTS))
    lambda0: float = setting(1.0, "weight λ0 of the retain loss, >= 0")
    lambda1: float | None = setting(None, "weight λ1 of the forget loss, >= 0", none=_LAMBDA1_NONE)
    lambda2: float = setting(0.0, "weight λ2 of the gate regulariser R = mean(1 − σ(α)), >= 0 (the paper's is 1)")
    eps: float = setting(1e-6, "guard ε of the reciprocal forget loss 1/(L_f + ε), > 0")
    chi: int = setting(3, "retain copies χ of every retain sample, each under another class's mask")
    batch_size: int = setting(64, "global batch size B, >= 2: the first half forgets, the second retains")
    optimizer: str = setting("adam", "optimizer of the gate logits", choices=OPTIMIZERS)
    lr: float | None = setting(None, "learning rate on the gate logits, > 0", none=_LR_NONE)
    momentum: float = setting(0.0, "SGD momentum, in [0, 1)")
    clip_norm: float | None = setting(None, "largest global norm of the gate gradients, > 0", none="no clipping",
                                      metavar="NORM")
    lambda1_warmup: float = setting(0.0, "fraction of the run over which λ1 ramps up from 0, in [0, 1]")
    gate_init: float = setting(3.0, "initial gate logit; σ(3) ≈ 0.95", old_name="alpha_init")
    max_epochs: int | None = setting(None, "epoch cap, >= 1", none=_per_family(MAX_EPOCHS_DEFAULTS))
    max_steps: int | None = setting(None, "optimizer-step cap, >= 1; the run stops at the first cap it reaches",
                                    none=_per_family(MAX_STEPS_PER_CLASS) + " steps per class, times the classes")
    evals_per_epoch: int = setting(5, "validations per epoch, evenly spaced, the last at the epoch's end")
    patience: int | None = setting(None, "validations without improvement before stopping, >= 1",
                                   none=_per_family(PATIENCE_DEFAULTS))
    seed: int = setting(0, "seeds the batch order and the drawn rows; nothing else is random")

    def __post_init__(self) -> None:
        self.validate()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _INT_RULES and value is not None:
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

    def replace(self, **overrides) -> "UnlearnConfig":
        """A copy with some fields replaced (checked); an unknown name is a TypeError that lists the settings."""
        return replace_settings(self, "unlearn", **overrides)

    def for_model(self, wf: nn.Module) -> "UnlearnConfig":
        """This config with every None resolved: ``lambda1`` (``LAMBDA1_MARGIN``, or with the reciprocal ``wf``'s
        family's ``LAMBDA1_DEFAULTS``), ``margin`` (the family's ``MARGIN_DEFAULTS``), ``lr`` (``LR_DEFAULTS`` of
        the optimizer), ``max_epochs``,
        ``max_steps`` and ``patience`` (``wf``'s family's ``MAX_EPOCHS_DEFAULTS``, ``MAX_STEPS_PER_CLASS`` times
        ``wf.num_classes``, ``PATIENCE_DEFAULTS``)."""
        family = model_family_of(wf)
        resolved = {}
        if self.lambda1 is None:
            resolved["lambda1"] = LAMBDA1_MARGIN if self.forget_loss == "margin" else LAMBDA1_DEFAULTS[family]
        if self.margin is None:
            resolved["margin"] = MARGIN_DEFAULTS[family]
        if self.lr is None:
            resolved["lr"] = LR_DEFAULTS[self.optimizer]
        if self.max_epochs is None:
            resolved["max_epochs"] = MAX_EPOCHS_DEFAULTS[family]
        if self.max_steps is None:
            resolved["max_steps"] = MAX_STEPS_PER_CLASS[family] * wf.num_classes
        if self.patience is None:
            resolved["patience"] = PATIENCE_DEFAULTS[family]
        return self.replace(**resolved)

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_mismatch(self, saved: dict) -> list[str]:
        """Names of settings that differ from a checkpoint's saved config (one saved under a former name too)."""
        renames = {f.metadata["old_name"]: f.name for f in fields(self) if "old_name" in f.metadata}
        saved = {renames.get(k, k): v for k, v in saved.items()}
        return [k for k in RESUME_KEYS if k in saved and saved[k] != getattr(self, k)]


_FIELDS = {f.name: f for f in fields(UnlearnConfig)}

# Settings that must match for --resume to continue a run: every one (progress, device and out_dir are
# arguments of ``unlearn``, not settings, and may change).
RESUME_KEYS = tuple(_FIELDS)


def model_family_of(wf: nn.Module) -> str:
    """"vit" when any WF layer wraps something other than a convolution (attention qkv), else "cnn"."""
    for layer in wf.wf_layers().values():
        if not isinstance(layer.base, nn.Conv2d):
            return "vit"
    return "cnn"
