"""Bring your own weights: a safetensors / torch state-dict file (or the library's pretrained weights) into a
model that the registry rebuilds (``create_model``), ready to be saved as a wfkern checkpoint.

    model, info = import_model("torchvision:resnet18", "resnet18-finetuned.pth", num_classes=10)

Files are read without unpickling anything but tensors (``torch.load(..., weights_only=True)``). Wrapper
prefixes (``module.`` from DataParallel / DDP, ``_orig_mod.`` from ``torch.compile``, ``model.`` from Lightning
and friends) are stripped, the classifier head is found, and every missing / unexpected key and shape
mismatch is named in one error. Imports no other wfkern module than ``wfkern.models``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn
from torch import Tensor

from wfkern.models.registry import check_model_args, create_model, json_model_kwargs
from wfkern.models.weights import (SHOWN_KEYS, ImportWeightsError, few_keys, first_line, non_finite_weights,
                                   read_weights, state_differences)

__all__ = ["import_model", "read_weights", "ImportInfo", "ImportWeightsError", "classifier_name",
           "library_preprocess", "WRAPPER_PREFIXES", "DEFAULT_WEIGHTS", "few_keys", "state_differences",
           "non_finite_weights"]

DEFAULT_WEIGHTS = "default"
# Prefixes that wrappers add to every key: DataParallel / DDP, torch.compile, Lightning-style modules.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class ImportInfo:
    """What ``import_model`` did.

    Attributes:
        arch, num_classes, in_chans, image_size: the model as the registry rebuilds it.
        model_kwargs: its architecture options (with any read from the weights, e.g. a ViT's ``patch_size``).
        source: where the weights came from ("torch state dict", "safetensors file", "torch checkpoint['model']",
            "torchvision pretrained weights (ResNet18_Weights.IMAGENET1K_V1)", ...).
        stripped: the wrapper prefix removed from every key ("" for none).
        tensors: tensors taken from the weights.  dtypes: their dtypes (converted to the model's on load).
        head: the classifier module's name ("fc", "head", "model.fc"), or None when none was found.
        file_classes: outputs of the weights' head (None: no head in them).
        head_reset: True when the head was (re)initialised for ``num_classes``: it is untrained.
        library_preprocess: the normalisation / crop the library's pretrained weights expect ({}: unknown).
    """

    arch: str
    num_classes: int
    in_chans: int
    image_size: int
    model_kwargs: dict = field(default_factory=dict)
    source: str = ""
    stripped: str = ""
    tensors: int = 0
    dtypes: list = field(default_factory=list)
    head: str | None = None
    file_classes: int | None = None
    head_reset: bool = False
    library_preprocess: dict = field(default_factory=dict)


def classifier_name(model: nn.Module, num_classes: int) -> str | None:
    """Dotted name of the module that produces the logits (timm: ``get_classifier()``; otherwise the last
    ``nn.Linear`` with ``num_classes`` outputs, or 1x1 ``nn.Conv2d`` as in SqueezeNet); None when there is none."""
    names = {id(m): n for n, m in model.named_modules()}
    for m in model.modules():  # timm models, also inside a wrapper
        get = getattr(m, "get_classifier", None)
        if callable(get) and not isinstance(m, nn.ModuleList):
            try:
                head = get()
            except Exception:  # noqa: BLE001 - not timm's method after all
                break
            if isinstance(head, nn.Module) and id(head) in names and any(True for _ in head.parameters()):
                return names[id(head)]
            break
    found = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            found = name
        elif isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.kernel_size == (1, 1):
            found = name
    return found


def _key_variants(keys: list[str], expected: set[str]):
    """(stripped prefix description, renamed keys) for every way of removing wrapper prefixes (and adding
    ``model.`` when the rebuilt model is wrapped, e.g. a ``ChannelAdapter``)."""
    seen = set()
    for depth in range(4):
        for seq in itertools.product(WRAPPER_PREFIXES, repeat=depth):
            out, removed, ok = list(keys), [], True
            for p in seq:
                if not any(k.startswith(p) for k in out):
                    ok = False
                    break
                out = [k[len(p):] if k.startswith(p) else k for k in out]
                removed.append(p)
            if not ok or tuple(out) in seen:
                continue
            seen.add(tuple(out))
            yield "".join(removed), out
            if expected and all(k.startswith("model.") for k in expected):
                yield "".join(removed) + " (+model.)", ["model." + k for k in out]


def _map_keys(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """The state renamed to best match the model's keys; and the wrapper prefix that was stripped."""
    keys = list(state)
    want = set(expected)
    best, best_score = ("", keys), -1
    for removed, renamed in _key_variants(keys, want):
        score = len(want.intersection(renamed))
        if score > best_score:  # ties keep the fewest changes (variants come shortest first)
            best, best_score = (removed, renamed), score
    removed, renamed = best
    return {new: state[old] for old, new in zip(keys, renamed)}, removed.replace(" (+model.)", "")


def _is_vit(arch: str) -> bool:
    base = arch.split(":", 1)[-1]
    return base.startswith(("vit", "deit"))


def _infer_kwargs(arch: str, kwargs: dict, state: Mapping[str, Tensor]) -> dict:
    """Architecture options the weights decide and the user left out: a timm ViT's ``patch_size`` (wfkern's
    timm builder uses patch 4 below 65 px unless told; the weights' patch embedding says what they were)."""
    out = dict(kwargs)
    timm_vit = arch in ("vit_t", "vit_s") or (arch.startswith("timm:") and _is_vit(arch))
    if timm_vit and "patch_size" not in out:
        for key, t in state.items():
            if key.endswith("patch_embed.proj.weight") and t.dim() == 4 and t.shape[-1] == t.shape[-2]:
                out["patch_size"] = int(t.shape[-1])
                break
    return out


def _fetch_pretrained(arch: str, in_chans: int, image_size: int, kwargs: dict) -> tuple[nn.Module, str]:
    """The library's pretrained model (the only function here that may reach the network).

    torchvision: ``get_model(name, weights="DEFAULT")``; timm: ``create_model(name, pretrained=True)`` with the
    input size and channels (timm adapts the stem and the position embedding).
    """
    prefix, _, name = arch.partition(":")
    if prefix in ("torchvision", "tv"):
        import torchvision.models as tvm

        weights = tvm.get_model_weights(name).DEFAULT
        return tvm.get_model(name, weights=weights, **kwargs), f"torchvision pretrained weights ({weights})"
    import timm

    extra = dict(kwargs)
    if _is_vit(name):
        extra.setdefault("img_size", image_size)
    model = timm.create_model(name, pretrained=True, in_chans=in_chans, **extra)
    tag = getattr(model, "pretrained_cfg", {}).get("tag") or ""
    return model, f"timm pretrained weights ({name}{'.' + tag if tag else ''})"


def library_preprocess(arch: str, model: nn.Module | None = None) -> dict:
    """The normalisation / crop / filter the library's pretrained weights for ``arch`` expect; {} when unknown.

    Read from metadata only (torchvision's weight enums, timm's ``pretrained_cfg``): nothing is downloaded.
    """
    prefix, _, name = arch.partition(":")
    try:
        if prefix in ("torchvision", "tv"):
            import torchvision.models as tvm

            t = tvm.get_model_weights(name).DEFAULT.transforms()
            crop, resize = t.crop_size[0], t.resize_size[0]
            return {"mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std],
                    "crop_pct": round(crop / resize, 4), "interpolation": t.interpolation.value}
        if prefix == "timm":
            cfg = getattr(model, "pretrained_cfg", None)
            if cfg is None:
                import timm

                cfg = timm.models.get_pretrained_cfg(name)
                cfg = cfg.to_dict() if cfg is not None else {}
            out = {}
            if cfg.get("mean") is not None and cfg.get("std") is not None:
                out.update(mean=[float(v) for v in cfg["mean"]], std=[float(v) for v in cfg["std"]])
            if cfg.get("crop_pct"):
                out["crop_pct"] = float(cfg["crop_pct"])
            if cfg.get("interpolation") in ("bilinear", "bicubic", "nearest"):
                out["interpolation"] = cfg["interpolation"]
            return out
    except Exception:  # noqa: BLE001 - metadata is a courtesy; no metadata is "unknown"
        return {}
    return {}


def _check_state(state: dict[str, Tensor], expected: Mapping[str, Tensor], what: str, head: str | None,
                 new_head: bool, num_classes: int) -> tuple[dict[str, Tensor], int | None]:
    """The tensors to load (the head left out when it is to be new) and the weights' head size; errors name
    every missing / unexpected key and shape mismatch."""
    head_keys = {k for k in expected if head is not None and k.startswith(head + ".")}
    file_head = {k: v for k, v in state.items() if k in head_keys}
    file_classes = None
    for k, v in file_head.items():
        if k.endswith("weight") and v.dim() >= 1:
            file_classes = int(v.shape[0])
    missing, unexpected, shapes = state_differences(state, expected)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    head_only_shapes = bool(shapes) and all(k in head_keys for k in shapes)
    if not new_head and file_classes is not None and file_classes != num_classes and head_only_shapes \
            and not missing and not unexpected:
        raise ImportWeightsError(
            "num_classes", f"match the classifier head of the weights ({head}: {file_classes} outputs)",
            str(num_classes), f"pass --num-classes {file_classes}, or --new-head to start an untrained "
            f"{num_classes}-class head (fine-tune it before unlearning)")
    if new_head:
        missing = [k for k in missing if k not in head_keys]
        shapes = [k for k in shapes if k not in head_keys]
        state = {k: v for k, v in state.items() if k not in head_keys}
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key{'s' * (len(missing) > 1)} ({few_keys(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} ({few_keys(unexpected)})")
        if shapes:
            shown = "; ".join(f"{k}: weights {list(state[k].shape)}, model {list(expected[k].shape)}"
                              for k in shapes[:SHOWN_KEYS])
            more = f" and {len(shapes) - SHOWN_KEYS} more" if len(shapes) > SHOWN_KEYS else ""
            parts.append(f"{len(shapes)} shape mismatch{'es' * (len(shapes) > 1)} ({shown}{more})")
        only_head = head_keys and set(missing) <= head_keys and not unexpected and not shapes
        fix = ("pass --new-head to start an untrained head" if only_head and not new_head else
               "check --model, --num-classes, --in-chans, --image-size and --model-arg")
        raise ImportWeightsError("weights", f"fit {what}", ", ".join(parts), fix)
    return state, file_classes


def import_model(arch: str, weights: str, *, num_classes: int, in_chans: int = 3, image_size: int = 224,
                 new_head: bool = False, seed: int = 0, **model_kwargs) -> tuple[nn.Module, ImportInfo]:
    """Build ``arch`` with the registry and load ``weights`` into it (all tensors, strictly).

    Args:
        arch: "torchvision:<name>", "timm:<name>" or a registry name (``list_models()``).
        weights: a safetensors file, a torch state-dict file (``.pt`` / ``.pth``; ``weights_only=True``), or
            "default": the library's pretrained weights (torchvision ``weights="DEFAULT"``, timm
            ``pretrained=True``), which need the network or the library's local cache.
        num_classes: Nc of the model. When the weights' classifier head has another count, that is an error
            unless ``new_head`` (with "default", a head of another size is always replaced).
        in_chans: input channels C.  image_size: input side S (ViTs' position embeddings depend on it).
        new_head: initialise a new head for ``num_classes`` (seeded by ``seed``) instead of the weights': it is
            untrained, so fine-tune the model before unlearning.
        seed: seeds the initialisation of a new head.
        model_kwargs: architecture options the registry declares (``model_params(arch)``).
    Returns:
        (the model in eval mode, on the CPU, float32; an ImportInfo saying what was done).
    Raises:
        ImportWeightsError (a ValueError): an unreadable file, a head of another size, missing / unexpected
            keys or shape mismatches (named), NaN or inf weights (the key named), or default weights that
            cannot be fetched.
        ModelArgError (a ValueError): an unknown architecture or option.
    """
    kwargs = json_model_kwargs(check_model_args(arch, num_classes, in_chans, image_size, model_kwargs))
    source, kwargs = _read_source(arch, weights, in_chans, image_size, kwargs)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes, in_chans, image_size, **kwargs)
    fit = _check_fit(model, source, arch, num_classes, in_chans, image_size, kwargs, new_head)
    _load_fitted(model, fit)
    info = ImportInfo(arch, num_classes, in_chans, image_size, kwargs, source.description, fit.stripped,
                      len(source.state), sorted({str(v.dtype).replace("torch.", "") for v in source.state.values()}),
                      fit.head, fit.file_classes, fit.head_reset,
                      library_preprocess(arch, source.library_model if source.library_model is not None else model))
    return model.float().eval(), info


@dataclass
class _Source:
    """The weights as read: their tensors, where they came from, and the library model that held them (None for a
    file; ``label`` names them in errors)."""

    state: dict[str, Tensor]
    description: str
    label: str
    library_model: nn.Module | None = None


@dataclass
class _Fit:
    """How the weights fit the rebuilt model: the tensors to load (renamed; a head to be replaced left out), the
    wrapper prefix stripped, the head's name, whether it is (re)initialised, the weights' head size, and the
    model described for errors."""

    tensors: dict[str, Tensor]
    stripped: str
    head: str | None
    head_reset: bool
    file_classes: int | None
    what: str


def _read_source(arch: str, weights: str, in_chans: int, image_size: int, kwargs: dict) -> tuple[_Source, dict]:
    """The weights ``import_model`` was given, and the architecture options with those the weights decide."""
    if weights != DEFAULT_WEIGHTS:
        state, description = read_weights(weights)
        return _Source(state, description, repr(weights)), _infer_kwargs(arch, kwargs, state)
    if not arch.startswith(("torchvision:", "tv:", "timm:")):
        raise ImportWeightsError("weights", "be a file for a registry model (only timm:<name> and "
                                 "torchvision:<name> have library weights)", f"'default' for {arch!r}")
    try:
        library_model, description = _fetch_pretrained(arch, in_chans, image_size, kwargs)
    except ImportWeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - no network, no cache, hub errors, ... all mean "not here"
        lib = "torchvision" if arch.startswith(("torchvision:", "tv:")) else "timm"
        raise ImportWeightsError(
            "weights", f"be reachable: 'default' fetches {lib}'s pretrained weights for {arch!r}",
            f"a failure ({type(e).__name__}: {first_line(e)[:160]})",
            "this machine may be offline; save the weights where there is network (a state dict or "
            "safetensors file) and pass --weights FILE") from e
    state = {k: v.detach().cpu() for k, v in library_model.state_dict().items()}
    kwargs = dict(kwargs)
    if arch.startswith("timm:") and _is_vit(arch.split(":", 1)[1]) and "patch_size" not in kwargs:
        patch_size = getattr(getattr(library_model, "patch_embed", None), "patch_size", None)
        if patch_size is not None:
            kwargs["patch_size"] = int(patch_size[0] if isinstance(patch_size, (tuple, list)) else patch_size)
    return _Source(state, description, "the pretrained weights", library_model), kwargs


def _check_fit(model: nn.Module, source: _Source, arch: str, num_classes: int, in_chans: int, image_size: int,
               kwargs: dict, new_head: bool) -> _Fit:
    """How ``source`` fits ``model``, checked before anything is loaded: every missing / unexpected key, shape
    mismatch, head of another size and non-finite tensor is an ImportWeightsError."""
    expected = model.state_dict()
    tensors, stripped = _map_keys(source.state, expected)
    head = classifier_name(model, num_classes)
    what = f"{arch} ({num_classes} classes, {in_chans} channels, {image_size} px{_opts(kwargs)})"
    head_reset = new_head
    if source.library_model is not None and head is not None:  # a pretrained head of another size is replaced
        head_weight = tensors.get(head + ".weight")
        head_reset = head_reset or (head_weight is not None and head_weight.shape[0] != num_classes)
    tensors, file_classes = _check_state(tensors, expected, what, head, head_reset, num_classes)
    problem = non_finite_weights(tensors)  # the tensors to be loaded (a head being replaced is not)
    if problem is not None:
        raise ImportWeightsError("weights", "hold finite values (no NaN or inf)", f"{problem} of {source.label}",
                                 "the weights are damaged or come from a run that diverged")
    return _Fit(tensors, stripped, head, head_reset, file_classes, what)


def _load_fitted(model: nn.Module, fit: _Fit) -> None:
    """Load the checked tensors into ``model`` (a head being replaced keeps its fresh initialisation)."""
    missing, unexpected = model.load_state_dict(fit.tensors, strict=False)
    leftover = [k for k in missing if not k.endswith("num_batches_tracked") and not (
        fit.head_reset and fit.head is not None and k.startswith(fit.head + "."))]
    if leftover or unexpected:  # pragma: no cover - _check_state names these first
        raise ImportWeightsError("weights", f"fit {fit.what}",
                                 f"missing {few_keys(leftover)}, unexpected {few_keys(unexpected)}")


def _opts(kwargs: dict) -> str:
    return "".join(f", {k}={v}" for k, v in kwargs.items())
