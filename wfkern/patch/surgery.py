"""wfkern.patch: find a classifier's convs and attention qkv projections and wrap them."""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, List, Optional, Tuple

from torch import nn

from wfkern.layers import FoldedBatchNorm2d, ForgetContext, WFConv2d, WFLayer, WFLinear, WFMultiheadAttention
from wfkern.layers.attention import unsupported_reason
from wfkern.layers.fusion import conv_batchnorm_pairs
from wfkern.patch.model import WFModel

__all__ = ["patch", "set_submodule", "gate_placement", "gates_mlp", "GATE_MLP_CHOICES", "VIT_PLACEMENT"]


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at dotted ``name`` under ``root``; returns the (possibly new) root."""
    if name == "":
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
    return root


# The first linear layer of a transformer block's MLP: timm ``Mlp.fc1``, torchvision ``MLPBlock``'s ``0``.
_MLP_FIRST = ("mlp.fc1", "mlp.0")
# The other linear layers of a block: the MLP's second (timm ``fc2``, torchvision ``3``) and the attention's output
# projection (timm ``attn.proj``; torchvision's sits inside the wrapped nn.MultiheadAttention).
_BLOCK_REST = ("mlp.fc2", "mlp.3", "attn.proj")
# Where the gates sit besides the convs and qkv projections, per placement: "qkv" (the paper's), "fc1" (+ the
# MLP's first layer), "all" (every linear layer of the block).
GATE_PLACEMENTS = {"qkv": (), "fc1": _MLP_FIRST, "all": _MLP_FIRST + _BLOCK_REST}
# The older spellings of ``gate_mlp``: False = the paper's qkv only, True = + the MLP's first layer.
_OLD_VALUES = {False: "qkv", True: "fc1"}
# What ``gate_mlp=None`` ("auto", the default) picks for a model with attention blocks; CNNs have no choice to make.
# Every linear layer: on the ViTs of docs/untraining.md only it kept every class within 1 point of the original.
VIT_PLACEMENT = "all"
GATE_MLP_CHOICES = ("auto",) + tuple(GATE_PLACEMENTS)


def gate_placement(gate_mlp) -> str | None:
    """``gate_mlp``'s placement name ("qkv", "fc1" or "all"), or None for "auto" / None; raises for anything else."""
    if gate_mlp is None or (isinstance(gate_mlp, str) and gate_mlp == "auto"):
        return None
    if isinstance(gate_mlp, bool):
        return _OLD_VALUES[gate_mlp]
    if isinstance(gate_mlp, str) and gate_mlp in GATE_PLACEMENTS:
        return gate_mlp
    raise ValueError(f"wfkern.patch: gate_mlp must be None ('auto'), 'qkv', 'fc1', 'all', False or True, "
                     f"got {gate_mlp!r}")


def gates_mlp(layer_names: Iterable[str]) -> bool | str:
    """The ``gate_mlp`` these WF layer names were patched with: ``"all"`` when they include a block's second MLP
    layer or attention output projection, True (``"fc1"``) when only a transformer MLP's first layer, else False
    (``"qkv"``, and every CNN). How the CLI, the server and export patch a model again to match saved gates
    (``load_gates`` then checks the whole layer table); never "auto", so a file keeps its own placement."""
    names = list(layer_names)
    if any(name.endswith(_BLOCK_REST) for name in names):
        return "all"
    return any(name.endswith(_MLP_FIRST) for name in names)


def _has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has a transformer block that patch gates (a qkv Linear or an nn.MultiheadAttention)."""
    return any(cls in (WFLinear, WFMultiheadAttention) for cls, _ in
               (_target(name, module) for name, module in model.named_modules()))


def _target(name: str, module: nn.Module, placement: str = "qkv") -> Tuple[Optional[type], Optional[str]]:
    """(WF layer class to wrap ``module`` with, or None; skip reason worth reporting, or None)."""
    if isinstance(module, nn.Conv2d):
        return WFConv2d, None
    if isinstance(module, nn.Linear) and name.rpartition(".")[2] == "qkv":
        return WFLinear, None
    if GATE_PLACEMENTS[placement] and isinstance(module, nn.Linear) and name.endswith(GATE_PLACEMENTS[placement]):
        return WFLinear, None
    if isinstance(module, nn.MultiheadAttention):
        reason = unsupported_reason(module)
        return (None, reason) if reason else (WFMultiheadAttention, None)
    if isinstance(module, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
        return None, f"{type(module).__name__} is not wrapped (only Conv2d, qkv Linear, MultiheadAttention)"
    return None, None


_HEAD_NAMES = ("fc", "classifier", "head", "heads")  # torchvision and timm classifiers


def classifier_head(model: nn.Module) -> Optional[Tuple[str, int]]:
    """(dotted name, outputs) of the classifier's final nn.Linear where the model shows one, else None.

    Looks at the usual attributes (``fc``, ``classifier``, ``head``, ``heads``: torchvision and timm)
    and takes the last Linear inside; a head replaced by ``nn.Identity`` shows none.
    """
    for attr in _HEAD_NAMES:
        head = getattr(model, attr, None)
        if not isinstance(head, nn.Module):
            continue
        linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            name, layer = linears[-1]
            return (f"{attr}.{name}" if name else attr), layer.out_features
    return None


def patch(
    model: nn.Module,
    num_classes: int,
    *,
    init: float = 3.0,
    inplace: bool = False,
    include: Optional[Callable[[str, nn.Module], bool]] = None,
    fold_batchnorm: bool = True,
    gate_mlp: bool | str | None = None,
) -> WFModel:
    """Wrap every ``nn.Conv2d`` and ViT attention qkv projection of ``model`` in a WF layer.

    Targets: ``nn.Conv2d`` (and subclasses), ``nn.Linear`` modules named ``qkv`` (timm
    ``Attention``), and ``nn.MultiheadAttention`` with a packed in-projection (torchvision ViTs).
    The base model's parameters are frozen; the gate logits are the only trainable parameters.

    Args:
        model: a trained classifier with ``num_classes`` outputs.
        num_classes: Nc, one gate row per class (>= 1).
        init: initial gate logit (3.0: sigmoid(3) ~ 0.95).
        inplace: patch ``model`` itself instead of a deep copy.
        include: optional ``(name, module) -> bool`` filter; targets it rejects are skipped.
        fold_batchnorm: where tracing proves that a BatchNorm2d reads only a wrapped conv's output,
            let masked inference apply it inside the conv's epilogue (one pass instead of two).
            Outputs are unchanged; ``wf.folded_batchnorms`` lists the pairs.
        gate_mlp: where a transformer block gets gates besides its qkv projection. None or ``"auto"`` (the
            default): ``"all"`` for a model with attention blocks (``VIT_PLACEMENT``), nothing more for CNNs.
            ``"qkv"`` (or False): the qkv projections only, the paper's. ``"fc1"`` (or True): also the first
            linear layer of its MLP (timm ``mlp.fc1``, torchvision ``mlp.0``), one gate per hidden unit.
            ``"all"``: every linear layer of the block, i.e. also the MLP's second (``mlp.fc2`` / ``mlp.3``) and
            timm's attention output projection (``attn.proj``). Not in the paper; on small ViTs they closed the
            gap to the original's accuracy (docs/untraining.md), at the cost of one ("fc1") or three ("all",
            timm) more masked layers per block.
    Returns:
        A :class:`WFModel`; ``.skipped`` lists (name, reason) of targets left unwrapped.
    Raises:
        TypeError / ValueError: bad ``num_classes`` or ``init`` (NaN/inf), an already patched model, nothing to wrap.
    """
    init = _check_patch_args(model, num_classes, init)
    placement = gate_placement(gate_mlp)
    if placement is None:
        placement = VIT_PLACEMENT if _has_attention(model) else "qkv"
    if not inplace:
        model = copy.deepcopy(model)
    plan, skipped = _plan(model, include, placement)
    for param in model.parameters():
        param.requires_grad_(False)
    pairs = conv_batchnorm_pairs(model) if fold_batchnorm else {}
    context = ForgetContext()
    wrapped = {}
    for name, cls in plan:
        base = model.get_submodule(name) if name else model
        wrapped[name] = cls(base, num_classes, context, init)
        model = set_submodule(model, name, wrapped[name])
    folded = []
    for conv_name, bn_name in pairs.items():
        if conv_name in wrapped:
            model = set_submodule(model, bn_name, FoldedBatchNorm2d(model.get_submodule(bn_name), bn_name, context))
            wrapped[conv_name].fold_batchnorm(bn_name)
            folded.append((conv_name, bn_name))
    return WFModel(model, num_classes, context, skipped, folded)


def _check_patch_args(model: nn.Module, num_classes: int, init: float) -> float:
    """Raise for a bad class count, gate logit or model; returns ``init`` as a float."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"wfkern.patch: num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"wfkern.patch: num_classes must be >= 1, got {num_classes}")
    try:
        if isinstance(init, (bool, str, bytes)):
            raise TypeError
        init_value = float(init)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"wfkern.patch: init must be a real number (a gate logit), got {type(init).__name__}") from None
    if not math.isfinite(init_value):
        raise ValueError(f"wfkern.patch: init must be a finite gate logit, got {init_value}; "
                         "use e.g. 3.0 (sigmoid(3) ~ 0.95, the untraining start)")
    if not isinstance(model, nn.Module):
        raise TypeError(f"wfkern.patch: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, WFModel) or any(isinstance(m, WFLayer) for m in model.modules()):
        raise ValueError("wfkern.patch: model must not be patched already, got a model with WF layers; "
                         "patch the original model, or use the WFModel you have")
    head = classifier_head(model)
    if head is not None and head[1] != num_classes:
        raise ValueError(f"wfkern.patch: num_classes must match the model's classifier head ({head[0]}: {head[1]} "
                         f"outputs), got {num_classes}; one gate row per class the model predicts")
    return init_value


def _plan(model: nn.Module, include: Optional[Callable[[str, nn.Module], bool]],
          placement: str = "qkv") -> Tuple[list, list]:
    """([(name, WF layer class)] to wrap, [(name, reason)] skipped); raises when there is nothing to wrap."""
    plan: List[Tuple[str, type]] = []
    skipped: List[Tuple[str, str]] = []
    for name, module in model.named_modules():
        if any(name.startswith(planned + ".") for planned, _ in plan):
            continue  # inside a module that is wrapped whole
        cls, reason = _target(name, module, placement)
        if cls is not None and include is not None and not include(name, module):
            cls, reason = None, "excluded by include()"
        if cls is not None:
            plan.append((name, cls))
        elif reason is not None:
            skipped.append((name, reason))
    if not plan:
        raise ValueError(
            f"wfkern.patch: model must contain an nn.Conv2d, a qkv nn.Linear or an nn.MultiheadAttention to wrap, "
            f"got none in {type(model).__name__}" + (f" (skipped: {skipped[:3]})" if skipped else "")
        )
    return plan, skipped
