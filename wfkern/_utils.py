"""Small helpers every layer shares: where a model lives, a trainable copy of it, the seed arithmetic, the fields
of the settings dataclasses.

Imports nothing from wfkern, so every layer may use it.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import warnings

import torch
from torch import nn

__all__ = ["model_device", "usable_device", "trainable_copy", "interactive", "SEED_STRIDE", "SEED_SPREAD", "TRAIN_SEED_STRIDE", "setting",
           "replace_settings", "renamed",
           "current_setting_names", "accepts_old_setting_names"]

# Seeds derived from a run's seed. Both numbers are primes, so derived streams of neighbouring seeds,
# classes, epochs and steps never coincide within any realistic run.
SEED_STRIDE = 1_000_003
"""Spacing between the derived seeds of consecutive base seeds: ``seed * SEED_STRIDE + k`` (untraining epochs
and steps, per-class evaluation)."""
SEED_SPREAD = 7919
"""Step between sibling streams of one seed: the validation plan (``seed + SEED_SPREAD``) and the evaluation of
class ``c`` (``k = SEED_SPREAD * (c + 1)``)."""
TRAIN_SEED_STRIDE = 100_003
"""Training's spacing of its epoch shuffles, ``seed * TRAIN_SEED_STRIDE + epoch`` (kept: trained checkpoints
reproduce)."""


def usable_device(device: torch.device | str, fn: str = "wfkern") -> torch.device:
    """``device`` as a torch.device, after checking that this machine has it (a one-line ValueError naming ``fn``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{fn}: device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{fn}: device must be available, got {str(dev)!r} on a machine without a usable CUDA GPU; "
                             "use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{fn}: device must be one of the {torch.cuda.device_count()} visible GPUs, got {str(dev)!r}")
    return dev


def model_device(module: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` when given (checked: :func:`usable_device`), else where ``module`` lives: its first parameter's
    device, else its first buffer's (a module without either counts as on the CPU)."""
    if device is not None:
        return usable_device(device)
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def trainable_copy(model: nn.Module, device: torch.device | str | None = None) -> tuple[nn.Module, torch.device]:
    """A deep copy of ``model`` on ``device`` (default: the model's own) with every parameter trainable.

    ``model`` itself is not modified (neither its weights nor its ``requires_grad`` flags).

    Returns:
        (the copy, the device it is on).
    """
    dev = model_device(model, device)
    work = copy.deepcopy(model).to(dev)
    for p in work.parameters():
        p.requires_grad_(True)
    return work, dev


def setting(default, help: str, **extra) -> dataclasses.Field:
    """A field of a settings dataclass (``UnlearnConfig``, ``EvalSettings``): its one default and its help.

    The command line makes the field's flag from them (``wfkern.cli._common.add_settings_flags``). ``extra``
    metadata: ``none`` (what None means), ``choices``, ``metavar``, ``parse`` (the flag's text to the value),
    ``flag=False`` (no flag), ``old_name`` (the field's former name: still accepted for one release, with a
    DeprecationWarning; see ``accepts_old_setting_names``).
    """
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def current_setting_names(cls, given: dict, fn: str) -> dict:
    """``given`` (setting name -> value) with the former names of ``cls``'s fields (``old_name``) replaced by the
    current ones; each former name warns (DeprecationWarning). Both names at once is a one-line TypeError."""
    renames = {f.metadata["old_name"]: f.name for f in dataclasses.fields(cls) if "old_name" in f.metadata}
    out = dict(given)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise TypeError(f"wfkern.{fn}: {new} must be given once, got both {new} and its old name {old}")
            warnings.warn(f"{cls.__name__}.{old} is deprecated and will be removed in the next release; use {new}",
                          DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def accepts_old_setting_names(cls):
    """Class decorator for a settings dataclass: its constructor also takes the fields' former names."""
    dataclass_init = cls.__init__

    @functools.wraps(dataclass_init)
    def __init__(self, *args, **kwargs):
        dataclass_init(self, *args, **current_setting_names(cls, kwargs, cls.__name__))
    cls.__init__ = __init__
    return cls


def replace_settings(settings, fn: str, **overrides):
    """A copy of the settings dataclass ``settings`` with some fields replaced (its ``__post_init__`` checks run
    again); a name that is no field is a one-line TypeError from ``wfkern.<fn>`` that lists the fields."""
    overrides = current_setting_names(type(settings), overrides, fn)
    names = [f.name for f in dataclasses.fields(settings)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise TypeError(f"wfkern.{fn}: settings must be fields of {type(settings).__name__} ({', '.join(names)}), "
                        f"got {', '.join(map(repr, unknown))}")
    return dataclasses.replace(settings, **overrides)


def interactive(stream) -> bool:
    """A bar can redraw itself here: a terminal, or a notebook (where tqdm.auto draws a widget)."""
    try:
        from tqdm.autonotebook import tqdm as notebook_tqdm  # the std class unless running in a notebook
        from tqdm.std import tqdm as std_tqdm
        if notebook_tqdm is not std_tqdm:
            return True
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def renamed(new, old: str, new_name: str):
    """``new`` under its old name ``old``, kept for one release: each call warns (a DeprecationWarning naming
    ``new_name``), then calls ``new``. Works for functions and, defined in a class body, for methods."""
    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new_name}",
                      DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)
    alias.__doc__ = f"Deprecated alias of ``{new_name}`` (kept for one release)."
    return alias
