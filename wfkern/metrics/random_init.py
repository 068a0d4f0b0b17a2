"""A randomly initialised, untrained copy of a model (the reference of the ZRF score)."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from wfkern._utils import model_device

__all__ = ["random_init_like"]


def random_init_like(module: nn.Module, seed: int = 0, *, skip: Iterable[nn.Parameter] = ()) -> nn.Module:
    """Deep-copy ``module`` and re-initialise every weight from a fixed seed (the global RNG is left untouched).

    Every submodule that owns parameters or buffers and has ``reset_parameters()`` (``nn.Conv2d``, ``nn.Linear``,
    norms: BatchNorm running statistics are reset too) is reset in ``modules()`` order; parameters no such
    method covers (e.g. a ViT's ``pos_embed``/``cls_token``) get a truncated normal with std 0.02, timm's
    default. The work happens on the CPU, so the result does not depend on the device; the copy is then moved
    back to the module's device and put in eval mode.

    Args:
        module: the model whose architecture is copied.
        seed: the initialisation seed.
        skip: parameters to leave as they are (e.g. a WF model's alphas; modules owning them are not reset).
    Returns:
        The new module, on the device of ``module``.
    """
    device = model_device(module)
    skip_ids = {id(p) for p in skip}
    # map the skipped parameters to their copies by name
    skip_names = {name for name, p in module.named_parameters() if id(p) in skip_ids}
    clone = copy.deepcopy(module).cpu()
    skip_ids = {id(p) for name, p in clone.named_parameters() if name in skip_names}
    covered: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for sub in clone.modules():
            own = list(sub.parameters(recurse=False))
            if any(id(p) in skip_ids for p in own):
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset) and (own or list(sub.buffers(recurse=False))):
                reset()
                covered.update(id(p) for p in own)
        with torch.no_grad():
            for p in clone.parameters():
                if id(p) not in covered and id(p) not in skip_ids:
                    nn.init.trunc_normal_(p, std=0.02)
    return clone.to(device).eval()
