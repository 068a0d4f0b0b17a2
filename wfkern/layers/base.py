"""What every WF layer shares: the per-class alpha logits and the batch's forget labels."""
from __future__ import annotations

import threading
import weakref
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from wfkern._utils import model_device
from wfkern.ops import mask_epilogue, mask_epilogue_, mask_epilogue_ref

__all__ = ["ForgetContext", "WFLayer", "find_wf_layers"]


class _CallState(threading.local):
    """What one thread's forward in flight has set: its labels, whether some rows forget nothing, its model,
    folded-BatchNorm hand-overs."""

    def __init__(self) -> None:
        self.labels: Optional[Tensor] = None
        self.has_unmasked_rows = False
        self.root: Optional[nn.Module] = None
        self.handed_over: Dict[str, Tensor] = {}


class ForgetContext:
    """The forget labels of the forward in flight, shared by every WF layer of one model.

    The state is per thread, so concurrent calls on one model (a model server's threads,
    ``nn.DataParallel`` replicas, which share this object) never see each other's labels, and
    :meth:`WFModel.forward` restores the previous state when it returns or raises, so nested calls
    see their own. ``labels`` is None outside a masked forward (the layers then run their base
    layer untouched), else a (B,) or (B, K) int64 tensor on the activations' device.
    ``has_unmasked_rows``: some (not all) rows forget nothing (every label -1), known for labels
    given on the host; layers then fold no work that would round those rows differently.
    """

    def __init__(self) -> None:
        self._state = _CallState()
        # {model: {dotted name: module}}: folded BatchNorms looked up in the model being run, so a
        # DataParallel replica finds its own copy. Weak keys: replicas come and go every call.
        self._modules_by_root: "weakref.WeakKeyDictionary[nn.Module, Dict[str, nn.Module]]" = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict:
        return {}  # a copy (deepcopy, pickle) starts with no forward in flight

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    @property
    def labels(self) -> Optional[Tensor]:
        return self._state.labels

    @property
    def has_unmasked_rows(self) -> bool:
        return self._state.has_unmasked_rows

    def enter(self, labels: Optional[Tensor], root: nn.Module, has_unmasked_rows: bool = False) -> tuple:
        """Make ``labels`` this thread's while ``root`` runs; returns what :meth:`leave` restores."""
        state = self._state
        previous = (state.labels, state.has_unmasked_rows, state.root, state.handed_over)
        state.labels, state.has_unmasked_rows, state.root, state.handed_over = labels, has_unmasked_rows, root, {}
        return previous

    def leave(self, previous: tuple) -> None:
        state = self._state
        state.labels, state.has_unmasked_rows, state.root, state.handed_over = previous

    def module(self, name: str) -> Optional[nn.Module]:
        """The module at dotted ``name`` in the model this thread is running (None outside a forward)."""
        root = self._state.root
        if root is None:
            return None
        table = self._modules_by_root.get(root)
        if table is None:
            table = self._modules_by_root.setdefault(root, {})
        found = table.get(name)
        if found is None:
            found = table[name] = root.get_submodule(name)
        return found

    def hand_over(self, name: str, y: Tensor) -> None:
        """Tell the folded BatchNorm at ``name`` that ``y`` already carries its affine."""
        self._state.handed_over[name] = y

    def take_handed_over(self, name: str) -> Optional[Tensor]:
        return self._state.handed_over.pop(name, None)


def check_batch(labels: Tensor, y: Tensor) -> None:
    """The labels were made for the batch the model was called with; a layer must see that batch."""
    if y.dim() < 2 or y.shape[0] != labels.shape[0]:
        raise ValueError(
            f"wfkern.WFModel: a WF layer's output must have the batch of {labels.shape[0]} the forget labels were "
            f"given for, got shape {tuple(y.shape)}; an unbatched input? call the model on x[None]"
        )


class WFLayer(nn.Module):
    """Base of the WF layers: holds ``base`` (frozen) and the gates of its ``channels`` outputs.

    Attributes:
        base: the wrapped layer, unchanged (its parameters are frozen by ``wfkern.patch``).
        alpha_w: (Nc, C) float32 weight-gate logits, one row per class.
        alpha_b: (Nc, C) bias-gate logits, or None when the base layer has no bias.
    """

    kind = "layer"
    # Under torch.compile: True hands inductor the epilogue as tensor ops (gate table, multiply-add),
    # which it fuses with the BatchNorm and activation after a convolution; False keeps the kernel.
    # Convolutions set it; linear layers keep the kernel, since nothing precedes attention to fuse
    # with (docs/performance.md, "Compiled", has the measurements).
    compile_as_tensor_ops = False

    def __init__(self, base: nn.Module, num_classes: int, channels: int, has_bias: bool,
                 context: ForgetContext, init: float) -> None:
        super().__init__()
        self.training = base.training  # a wrapper takes the mode of what it wraps
        self.base = base
        self.context = context
        device = model_device(base)
        self.alpha_w = nn.Parameter(torch.full((num_classes, channels), float(init), device=device))
        self.alpha_b = (
            nn.Parameter(torch.full((num_classes, channels), float(init), device=device)) if has_bias else None
        )

    def _apply(self, fn, recurse=True):
        # wf.half() / wf.to(torch.bfloat16) cast the frozen base; the gate logits (and their grads)
        # stay float32: sigmoid gates near 0 or 1 need the precision, and the kernels take fp32 logits.
        gate_tensors = {id(t) for p in (self.alpha_w, self.alpha_b) if p is not None for t in (p, p.grad) if t is not None}

        def keep_gates_fp32(t):
            out = fn(t)
            if id(t) in gate_tensors and out.dtype in (torch.float16, torch.bfloat16):
                return t.to(device=out.device)
            return out

        return super()._apply(keep_gates_fp32, recurse)

    @property
    def num_classes(self) -> int:
        return self.alpha_w.shape[0]

    @property
    def channels(self) -> int:
        return self.alpha_w.shape[1]

    def gates(self, cls: int) -> tuple:
        """(weight gates (C,), bias gates (C,) or None) of class ``cls``, detached, float32."""
        with torch.no_grad():
            gate_b = torch.sigmoid(self.alpha_b[cls]) if self.alpha_b is not None else None
            return torch.sigmoid(self.alpha_w[cls]), gate_b

    def labels_for(self, forget: Optional[Tensor]) -> Optional[Tensor]:
        """The labels this call masks with: ``forget`` when given (a layer called on its own),
        else those of the :class:`WFModel` forward in flight on this thread (None: no masking)."""
        return self.context.labels if forget is None else forget

    def masked(self, y: Tensor, labels: Optional[Tensor], bias: Optional[Tensor], channel_dim: int,
               alpha_w: Optional[Tensor] = None, alpha_b: Optional[Tensor] = None, save_output: bool = False) -> Tensor:
        """Apply the gates of ``labels`` to ``y`` (the base output including ``bias``); None: ``y`` as is.

        ``save_output``: see :func:`wfkern.ops.mask_epilogue` (True where nothing downstream
        modifies the output in place).
        """
        if labels is None:
            return y
        check_batch(labels, y)
        alpha_w = self.alpha_w if alpha_w is None else alpha_w
        alpha_b = (self.alpha_b if alpha_b is None else alpha_b) if bias is not None else None
        if self.compile_as_tensor_ops and torch.compiler.is_compiling():
            return mask_epilogue_ref(y, alpha_w, labels, alpha_b, bias, channel_dim)
        op = self.epilogue_op(y)
        if op is mask_epilogue:
            return op(y, alpha_w, labels, alpha_b, bias, channel_dim, save_output=save_output)
        return op(y, alpha_w, labels, alpha_b, bias, channel_dim)

    def epilogue_op(self, y: Tensor):
        """``mask_epilogue_`` (in place) when nothing will differentiate through ``y``, the base layer's fresh
        output, else ``mask_epilogue``; under torch.compile the functional op lets inductor re-inplace (and
        avoids its mutation paths)."""
        needs_grad = torch.is_grad_enabled() and (y.requires_grad or self.alpha_w.requires_grad)
        return mask_epilogue if needs_grad or torch.compiler.is_compiling() else mask_epilogue_

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, channels={self.channels}, bias_gates={self.alpha_b is not None}"


def find_wf_layers(module: nn.Module) -> dict:
    """{dotted name: WF layer} for every WF layer inside ``module`` (in module order)."""
    return {name: m for name, m in module.named_modules() if isinstance(m, WFLayer)}
