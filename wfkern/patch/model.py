"""WFModel: a patched classifier whose forward takes per-sample forget labels."""
from __future__ import annotations

import math

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from wfkern._utils import renamed
from wfkern.layers import ForgetContext, WFLayer, find_wf_layers
from wfkern.ops import check_label_values, checked_labels, raise_label_errors
from wfkern.patch.gates_io import GATE_KEYS, current_gate_keys, load_gates, save_gates

__all__ = ["WFModel"]

Forget = Union[None, int, Tensor, List[int], Tuple[int, ...]]


class WFModel(nn.Module):
    """A frozen classifier whose WF layers forget, per sample, the class(es) it is told to.

    Build it with :func:`wfkern.patch`. ``wf(x)`` equals the original model exactly;
    ``wf(x, forget=y)`` masks sample b with the gates of class ``y[b]`` (-1: none).

    Attributes:
        model: the patched network (its convs / qkv projections replaced by WF layers).
        num_classes: Nc, rows of every gate matrix.
        skipped: (name, reason) of layers that looked like targets but were not wrapped.
        folded_batchnorms: (conv name, BatchNorm name) pairs applied in one pass in masked inference.
    """

    def __init__(self, model: nn.Module, num_classes: int, context: ForgetContext,
                 skipped: Optional[List[Tuple[str, str]]] = None,
                 folded_batchnorms: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__()
        self.training = model.training
        self.model = model
        self.num_classes = num_classes
        self.skipped = list(skipped or [])
        self.folded_batchnorms = list(folded_batchnorms or [])
        self._context = context
        # A model patched in train mode gets wfkern's train-mode rule too (its BatchNorms stay in eval).
        self.train(model.training)

    def forward(self, x: Tensor, forget: Forget = None, **kwargs) -> Tensor:
        """Run the model; sample b forgets ``forget[b]``.

        Args:
            x: (B, ...) input batch.
            forget: None (forget nothing: the original model, bit for bit); an int (every sample
                forgets that class); or an integer tensor / list of shape (B,) or (B, K) where -1
                means "nothing" and the K labels of a row, a set (a repeated class counts once), combine
                by the product of their gates.
        Returns:
            The model's output (e.g. (B, Nc) logits).
        """
        labels = self.prepare_forget(forget, x.shape[0], x.device)
        if labels is not None and labels.is_cuda and not torch.compiler.is_compiling():
            raise_label_errors()  # a bad GPU label of an earlier call: a plain read, no synchronisation
        # The labels belong to this call: per thread, and restored on return or error (nesting).
        previous = self._context.enter(labels, self.model, _has_unmasked_rows(forget, labels))
        try:
            return self.model(x, **kwargs)
        finally:
            self._context.leave(previous)

    def train(self, mode: bool = True) -> "WFModel":
        """Set train / eval mode; normalisation layers with running statistics stay in eval mode.

        The base is frozen: in train mode a BatchNorm would update its running statistics (and
        normalise with the batch's), so ``wf(x)`` would drift from the original model. Dropout
        and other mode-dependent layers follow ``mode`` as usual.
        """
        super().train(mode)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.train(False)
        return self

    def prepare_forget(self, forget: Forget, batch: int, device: torch.device) -> Optional[Tensor]:
        """Validate ``forget`` once per batch; None when nothing is to be forgotten.

        Host labels (ints, lists, CPU tensors) are checked here, for free, and copied to ``device``
        without blocking. Labels already on a GPU are not read back (no host synchronisation):
        the CUDA kernels check them on the device (see :func:`wfkern.ops.raise_label_errors`).
        """
        if forget is None:
            return None
        if isinstance(forget, bool) or not isinstance(forget, (int, Tensor, list, tuple)):
            raise TypeError(f"wfkern.WFModel: forget must be None, an int or an integer tensor, got {type(forget).__name__}")
        if not isinstance(forget, Tensor):
            forget = self._label_tensor(forget, batch)
        if forget.dtype == torch.bool or forget.is_floating_point() or forget.is_complex():
            raise TypeError(f"wfkern.WFModel: forget must be an integer tensor (int64), got {forget.dtype}")
        if forget.device.type not in ("cpu", device.type):
            raise ValueError(f"wfkern.WFModel: forget must be on the CPU or on the input's device ({device}), "
                             f"got labels on {forget.device}")
        if forget.dim() not in (1, 2) or forget.shape[0] != batch:
            raise ValueError(
                f"wfkern.WFModel: forget must have shape ({batch},) or ({batch}, K) for a batch of {batch}, "
                f"got {tuple(forget.shape)}"
            )
        if forget.device.type == "cpu":
            name = "wfkern.WFModel: forget labels"
            if torch.compiler.is_compiling():  # in the graph, checked when it runs (same message)
                return checked_labels(forget.long(), self.num_classes, name).to(device=device, non_blocking=True)
            check_label_values(forget, self.num_classes, name=name)
            if bool((forget == -1).all()):
                return None
        return forget.to(device=device, dtype=torch.long, non_blocking=True)

    def _label_tensor(self, forget: Union[int, list, tuple], batch: int) -> Tensor:
        """Host labels (an int for the whole batch, or a (B,) / (B, K) list of ints) as an int64 tensor."""
        expectation = (f"wfkern.WFModel: forget labels must be in [-1, {self.num_classes}) (-1 = forget nothing), "
                       "as an int or a (B,) / (B, K) list of ints")
        try:
            if isinstance(forget, int):
                return torch.full((batch,), forget, dtype=torch.long)
            labels = torch.as_tensor(forget)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            shown = repr(forget) if len(repr(forget)) <= 80 else repr(forget)[:77] + "..."
            raise ValueError(f"{expectation}, got {shown}") from None
        if labels.numel() and (labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex()):
            raise TypeError(f"wfkern.WFModel: forget labels must be ints, got {labels.dtype} values")
        return labels.long() if labels.numel() == 0 else labels

    def wf_layers(self) -> Dict[str, WFLayer]:
        """{dotted name inside ``self.model``: WF layer}, in module order."""
        return find_wf_layers(self.model)

    def gate_parameters(self) -> List[nn.Parameter]:
        """Every gate logit matrix: the only parameters that require grad."""
        return list(self._gate_tensors().values())

    def gates_state_dict(self) -> Dict[str, Tensor]:
        """{"<layer>.gates" / "<layer>.bias_gates": detached float32 CPU copy of the gate logits}."""
        return {key: param.detach().float().cpu().clone() for key, param in self._gate_tensors().items()}

    def load_gates_state_dict(self, state: Dict[str, Tensor]) -> None:
        """Copy gate logits in (wfkern 0.1's ``alpha_w`` / ``alpha_b`` keys too); validates every key and shape
        first, so a bad state changes nothing."""
        state = current_gate_keys(state)
        expected = {k: v.shape for k, v in self._gate_tensors().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                "wfkern.WFModel: gates must cover exactly this model's WF layers, got "
                f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        for key, shape in expected.items():
            if tuple(state[key].shape) != tuple(shape):
                raise ValueError(f"wfkern.WFModel: {key} must have shape {tuple(shape)}, got {tuple(state[key].shape)}")
            if not state[key].is_floating_point():
                raise ValueError(f"wfkern.WFModel: {key} must be floating point, got {state[key].dtype}")
        with torch.no_grad():
            for key, param in self._gate_tensors().items():
                param.copy_(state[key])

    def reset_gates(self, value: float = 3.0) -> None:
        """Set every gate logit to ``value`` (3.0: the untraining start, sigmoid(3) ~ 0.95)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"wfkern.WFModel.reset_gates: value must be a finite number, got {value!r}")
        with torch.no_grad():
            for param in self.gate_parameters():
                param.fill_(value)

    def save_gates(self, path: str, extra_metadata: Optional[dict] = None) -> None:
        """Write the gates to a safetensors gates file (atomic); same as ``wfkern.save_gates(self, ...)``."""
        save_gates(self, path, extra_metadata)

    def load_gates(self, path: str, *, check_fingerprint: bool = True) -> dict:
        """Load a gates file into this model; same as ``wfkern.load_gates(self, ...)`` (returns its extra metadata)."""
        return load_gates(self, path, check_fingerprint=check_fingerprint)

    # wfkern 0.1's names, kept for one release.
    alpha_parameters = renamed(gate_parameters, "WFModel.alpha_parameters", "WFModel.gate_parameters")
    filters_state_dict = renamed(gates_state_dict, "WFModel.filters_state_dict", "WFModel.gates_state_dict")
    load_filters_state_dict = renamed(load_gates_state_dict, "WFModel.load_filters_state_dict",
                                      "WFModel.load_gates_state_dict")
    reset_alphas = renamed(reset_gates, "WFModel.reset_alphas", "WFModel.reset_gates")
    save_filters = renamed(save_gates, "WFModel.save_filters", "WFModel.save_gates")

    def _gate_tensors(self) -> Dict[str, nn.Parameter]:
        """{"<layer>.gates" / "<layer>.bias_gates": the layer's gate logit parameter}, in module order."""
        out = {}
        for name, layer in self.wf_layers().items():
            out[f"{name}.{GATE_KEYS[0]}"] = layer.alpha_w
            if layer.alpha_b is not None:
                out[f"{name}.{GATE_KEYS[1]}"] = layer.alpha_b
        return out

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, wf_layers={len(self.wf_layers())}, skipped={len(self.skipped)}"



def _has_unmasked_rows(forget: Forget, labels: Optional[Tensor]) -> bool:
    """Whether some rows of a masked batch forget nothing (all their labels -1); False when that is unknown
    because the labels were given on a GPU (not read back to the host).

    A layer that folds work into its epilogue (a conv with its BatchNorm) then runs unfolded, so those rows
    stay bit for bit the original model's.
    """
    if labels is None or isinstance(forget, int) or torch.compiler.is_compiling():
        return False  # an int forgets the same class in every row
    if isinstance(forget, Tensor) and forget.device.type != "cpu":
        return False
    host = labels if labels.device.type == "cpu" else torch.as_tensor(forget)
    return bool(((host if host.dim() == 2 else host[:, None]) == -1).all(dim=1).any())
