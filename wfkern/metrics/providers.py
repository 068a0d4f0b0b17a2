"""What is evaluated: one model per forgotten class, seen through one small interface.

``WFUnlearned`` wraps a WF model (``wf(x, forget=c)``; all classes in one model). ``PerClassModels`` wraps the
single-class baselines (one plain model per class). ``OriginalModel`` is the trained model, no unlearning.
The evaluation only calls the methods below, so any other unlearning method plugs in the same way.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from wfkern._utils import model_device

from .random_init import random_init_like

__all__ = ["Unlearned", "WFUnlearned", "PerClassModels", "OriginalModel", "as_unlearned", "is_wf_model"]


def is_wf_model(obj: object) -> bool:
    """True for a WF model (has ``wf_layers()`` and ``num_classes``)."""
    return callable(getattr(obj, "wf_layers", None)) and hasattr(obj, "num_classes")


class Unlearned:
    """Interface of an unlearned-model family. Subclasses set ``num_classes``, ``device`` and ``method``."""

    num_classes: int
    device: torch.device
    method: str = "unlearned"
    wf: Optional[nn.Module] = None  # a WF model, for insertion/deletion and filter relations

    def logits(self, x: Tensor, c: int) -> Tensor:
        """Logits (B, Nc) of the model unlearned on class ``c`` for inputs (B, ...)."""
        raise NotImplementedError

    def original_logits(self, x: Tensor) -> Tensor:
        """Logits (B, Nc) of the original model (nothing forgotten)."""
        raise NotImplementedError

    def relearn_model(self, c: int) -> Optional[nn.Module]:
        """A plain module to fine-tune for the relearn time of ``c``; None when RT does not apply."""
        raise NotImplementedError

    def random_model(self, seed: int) -> Callable[[Tensor], Tensor]:
        """A randomly initialised, untrained model of the same architecture (fixed seed)."""
        raise NotImplementedError

    def feature_root(self, c: int) -> Optional[nn.Module]:
        """The module whose submodules run, under their plain-model names, when ``logits(x, c)`` is called (the
        linear probe hooks them); None when there is none to hook."""
        return None

    def plain_model(self, c: int) -> Optional[nn.Module]:
        """A plain module that computes ``logits(x, c)`` (fine-tuned on a copy by the retain recovery); default
        ``relearn_model(c)``."""
        return self.relearn_model(c)

    def fingerprint(self) -> dict:
        """JSON-able facts that identify what is evaluated (checked when a run resumes)."""
        return {"method": self.method, "num_classes": self.num_classes}

    def set_eval(self) -> None:
        """Put every module in eval mode."""


class WFUnlearned(Unlearned):
    """A WF model: the model unlearned on ``c`` is ``wf(x, forget=c)``; the original is ``wf(x)``."""

    method = "wfnet"

    def __init__(self, wf: nn.Module):
        if not is_wf_model(wf):
            raise TypeError(f"wfkern.WFUnlearned: wf must be a WF model (wfkern.patch), got {type(wf).__name__}")
        self.wf = wf
        self.num_classes = int(wf.num_classes)
        self.device = model_device(wf)

    def logits(self, x: Tensor, c: int) -> Tensor:
        return self.wf(x, forget=int(c))

    def original_logits(self, x: Tensor) -> Tensor:
        return self.wf(x)

    def relearn_model(self, c: int) -> nn.Module:
        from wfkern.patch import bake

        return bake(self.wf, forget=int(c))

    def feature_root(self, c: int) -> nn.Module:
        return self.wf.model  # the base model: wrapped layers keep their names, gated while forget=c runs

    def random_model(self, seed: int) -> Callable[[Tensor], Tensor]:
        skip = list(self.wf.gate_parameters()) if hasattr(self.wf, "gate_parameters") else []
        return random_init_like(self.wf, seed, skip=skip)

    def fingerprint(self) -> dict:
        digest = hashlib.sha256()
        for p in self.wf.gate_parameters():
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return {**super().fingerprint(), "alphas_sha256": digest.hexdigest()[:16]}

    def set_eval(self) -> None:
        self.wf.eval()


class PerClassModels(Unlearned):
    """One plain model per forgotten class (single-class baselines), loaded on demand, one at a time.

    Args:
        original: the trained model (for the original accuracy and the random-init architecture).
        models: a mapping class -> module, or a callable class -> module (e.g. loading a checkpoint).
        num_classes: Nc; default ``len(models)`` for a mapping.
        method: the name shown in reports.
    """

    def __init__(self, original: nn.Module, models: Union[Mapping[int, nn.Module], Callable[[int], nn.Module]],
                 num_classes: Optional[int] = None, method: str = "baseline"):
        self.original = original
        self._models = models
        if num_classes is None:
            if not isinstance(models, Mapping):
                raise ValueError("wfkern.PerClassModels: num_classes must be given when models is a callable, got None")
            num_classes = len(models)
        self.num_classes = int(num_classes)
        self.method = method
        self.device = model_device(original)
        self._cached: tuple[int, nn.Module] | None = None

    def _get(self, c: int) -> nn.Module:
        if self._cached is None or self._cached[0] != c:
            module = self._models[c] if isinstance(self._models, Mapping) else self._models(c)
            self._cached = (c, module.to(self.device).eval())
        return self._cached[1]

    def logits(self, x: Tensor, c: int) -> Tensor:
        return self._get(int(c))(x)

    def original_logits(self, x: Tensor) -> Tensor:
        return self.original(x)

    def relearn_model(self, c: int) -> nn.Module:
        return self._get(int(c))

    def feature_root(self, c: int) -> nn.Module:
        return self._get(int(c))

    def plain_model(self, c: int) -> nn.Module:
        return self._get(int(c))

    def random_model(self, seed: int) -> Callable[[Tensor], Tensor]:
        return random_init_like(self.original, seed)

    def set_eval(self) -> None:
        self.original.eval()


class OriginalModel(PerClassModels):
    """The original model as the "unlearned" model of every class (Table 1's "Original" row); RT does not apply."""

    def __init__(self, original: nn.Module, num_classes: int):
        super().__init__(original, lambda c: original, num_classes=num_classes, method="original")

    def relearn_model(self, c: int) -> None:
        return None


def as_unlearned(model: object, num_classes: Optional[int] = None) -> Unlearned:
    """Accept a WF model, an ``Unlearned``, or a plain module (evaluated as the original, needs ``num_classes``)."""
    if isinstance(model, Unlearned):
        return model
    if is_wf_model(model):
        return WFUnlearned(model)
    if isinstance(model, nn.Module):
        if num_classes is None:
            raise ValueError("wfkern.evaluate: num_classes must be given for a plain module, got None")
        return OriginalModel(model, num_classes)
    raise TypeError(f"wfkern.evaluate: model must be a WF model, an Unlearned or an nn.Module, "
                    f"got {type(model).__name__}")
