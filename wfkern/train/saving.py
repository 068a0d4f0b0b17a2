"""``save_model``: any classifier the model registry rebuilds, saved as a wfkern checkpoint.

Three stages, each its own function: describe the module (its sizes, options and logits on a seeded batch),
check that description against the model the registry rebuilds from it, then write the checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from wfkern._utils import model_device
from wfkern.models.registry import ModelArgError, check_model_args, json_model_kwargs, model_params
from wfkern.models.weights import few_keys, first_line, state_differences
from wfkern.train.checkpoint import ModelConfig, save_checkpoint

__all__ = ["save_model"]

_WHERE = "wfkern.save_model"
# A timm VisionTransformer's size options, read from the module when the architecture declares them all.
_VIT_ATTRS = ("patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "qkv_bias")


def save_model(model: nn.Module, path: str, *, arch: str, num_classes: int | None = None,
               in_chans: int | None = None, image_size: int | None = None, dataset: str = "", split_seed: int = 0,
               preprocess=None, extra: dict | None = None, verify: bool = True, **model_kwargs) -> ModelConfig:
    """Save any classifier that ``create_model(arch, ...)`` rebuilds as a wfkern checkpoint (``wfkern unlearn``,
    ``evaluate`` and ``baseline`` then take it as ``--checkpoint``).

    The checkpoint holds the weights and how to rebuild the module: the architecture name, sizes and options.
    Before anything is written, the module is rebuilt from that description and compared with ``model``: the
    same keys and shapes, and (``verify``) the same logits on a seeded random batch. A module the description
    cannot express (a custom subclass, a replaced block, options the registry does not declare) is refused.

    Args:
        model: e.g. ``torchvision.models.resnet18(num_classes=10)`` or ``timm.create_model("vit_tiny_patch16_224",
            img_size=32, num_classes=10)`` with trained weights.
        path: the .safetensors file to write (atomically; its folder must exist).
        arch: "torchvision:<name>", "timm:<name>" or a registry name (``wfkern.models.list_models()``).
        num_classes: Nc (default: the module's output width, from one forward pass).
        in_chans: input channels C (default: the first convolution's).
        image_size: input side S (default: a ViT's own, else 224).
        dataset: the dataset the commands default to ("imagefolder", "cifar10", ...; "" = none).
        split_seed: the seed of that dataset's train/val/test split.
        preprocess: normalisation / crop the model expects (a ``wfkern.data.Preprocess`` or its dict:
            mean, std, crop_pct, interpolation); None = the dataset's own.
        extra: free-form JSON facts to keep.
        verify: compare the rebuilt model's logits with ``model``'s (eval mode; modes are restored).
        model_kwargs: architecture options (``wfkern.models.registry.model_params(arch)``); a timm ViT's
            sizes (patch_size, depth, embed_dim, num_heads, mlp_ratio, qkv_bias) are read from the module.
    Returns:
        The ModelConfig written.
    Raises:
        TypeError: ``model`` is not an nn.Module, or is a WFModel (save the original, or its gates).
        ValueError: a description the registry refuses, or a module it does not rebuild (the keys, shapes or
            logits that differ are named).
    """
    _check_plain_module(model)
    with _eval_mode(model):
        described = _describe(model, arch, num_classes, in_chans, image_size, model_kwargs)
        config = _checked_config(described, arch, dataset, split_seed, preprocess, extra)
        _check_rebuilt_shapes(model, config)
        if verify:
            _check_rebuilt_logits(model, config, described)
    save_checkpoint(path, model, config)
    return config


@dataclass
class _Description:
    """What ``save_model`` reads off a module: its sizes and options, and its logits on a seeded batch."""

    num_classes: int
    in_chans: int
    image_size: int
    model_kwargs: dict
    inputs: Tensor
    logits: Tensor


def _check_plain_module(model) -> None:
    if hasattr(model, "wf_layers") and hasattr(model, "gate_parameters"):
        raise TypeError(f"{_WHERE}: model must be a plain classifier, got a WFModel; save the original model "
                        "(before wfkern.patch) with save_model and the gates with wf.save_gates")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be a torch.nn.Module, got {type(model).__name__}")


@contextmanager
def _eval_mode(model: nn.Module):
    """Run the block with every submodule in eval mode; each module's own mode is restored after."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def _describe(model: nn.Module, arch: str, num_classes: int | None, in_chans: int | None, image_size: int | None,
              model_kwargs: dict) -> _Description:
    """The sizes and options of ``model`` (the given ones, else read off the module) and its logits on a seeded
    (2, C, S, S) batch; ValueError when the architecture is unknown or the module does not give (B, Nc) logits."""
    try:
        declared = model_params(arch)
    except ModelArgError as e:
        raise ValueError(f"{_WHERE}: arch must {e.expectation}, got {arch!r}") from None
    kwargs = dict(model_kwargs)
    if set(_VIT_ATTRS) <= set(declared):  # a timm ViT: its sizes come from the module
        for key, value in _vit_kwargs(model).items():
            kwargs.setdefault(key, value)
    in_chans = in_chans if in_chans is not None else (_first_conv_channels(model) or 3)
    image_size = image_size if image_size is not None else (_native_size(model) or 224)
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    inputs = torch.randn(2, int(in_chans), int(image_size), int(image_size),
                         generator=torch.Generator().manual_seed(0)).to(device=model_device(model), dtype=dtype)
    with torch.no_grad():
        try:
            logits = model(inputs)
        except Exception as e:  # noqa: BLE001 - the module does not take what the description says
            raise ValueError(f"{_WHERE}: model must run on (2, {in_chans}, {image_size}, {image_size}) inputs "
                             f"(in_chans, image_size), got an error: {first_line(e)}") from e
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"{_WHERE}: model must return (B, Nc) logits, got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    if num_classes is None:
        num_classes = int(logits.shape[1])
    elif logits.shape[1] != num_classes:
        raise ValueError(f"{_WHERE}: num_classes must be the module's output width ({logits.shape[1]}), got "
                         f"{num_classes}")
    return _Description(num_classes, in_chans, image_size, kwargs, inputs, logits)


def _checked_config(described: _Description, arch: str, dataset: str, split_seed: int, preprocess,
                    extra: dict | None) -> ModelConfig:
    """The checkpoint's description, with the options and preprocessing the registry accepts."""
    from wfkern.data.preprocess import as_preprocess

    try:
        options = check_model_args(arch, described.num_classes, described.in_chans, described.image_size,
                                   described.model_kwargs)
    except ModelArgError as e:
        raise ValueError(f"{_WHERE}: {'model_kwargs.' if e.is_option else ''}{e.key} must {e.expectation}, "
                         f"got {e.got!r}") from None
    pre = as_preprocess(preprocess, int(described.in_chans), _WHERE).to_dict()
    return ModelConfig(arch, int(described.num_classes), int(described.in_chans), int(described.image_size),
                       json_model_kwargs(options), dataset, split_seed, dict(extra or {}), pre)


def _check_rebuilt_shapes(model: nn.Module, config: ModelConfig) -> None:
    """The model ``config`` rebuilds has ``model``'s keys and shapes (compared on the meta device: no memory)."""
    try:
        with torch.device("meta"):
            rebuilt = config.build().state_dict()
    except Exception:  # noqa: BLE001 - cannot build on meta: the real build of the logits check decides
        return
    diff = _differences(model.state_dict(), rebuilt)
    if diff is not None:
        raise ValueError(f"{_WHERE}: model must be what {config.model!r} rebuilds with "
                         f"{config.model_kwargs or 'its defaults'} ({config.num_classes} classes, {config.in_chans} "
                         f"channels, {config.image_size} px), got {diff}; pass the options it was built with, or "
                         "the right arch")


def _check_rebuilt_logits(model: nn.Module, config: ModelConfig, described: _Description) -> None:
    """The model ``config`` rebuilds, given ``model``'s weights, is of its class and computes its logits."""
    arch = config.model
    rebuilt = config.build()
    if type(rebuilt) is not type(model):
        raise ValueError(f"{_WHERE}: model must be the class {arch!r} builds "
                         f"({type(rebuilt).__module__}.{type(rebuilt).__name__}), got "
                         f"{type(model).__module__}.{type(model).__name__}")
    try:
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{_WHERE}: model must be what {arch!r} rebuilds, got a mismatch: "
                         f"{first_line(e)}") from e
    inputs, logits = described.inputs, described.logits
    rebuilt.to(device=inputs.device, dtype=inputs.dtype).eval()
    with torch.no_grad():
        again = rebuilt(inputs)
    tol = 1e-4 if inputs.dtype in (torch.float32, torch.float64) else 2e-2
    if again.shape != logits.shape or not torch.allclose(again.float(), logits.float(), rtol=tol, atol=tol):
        worst = (again.float() - logits.float()).abs().max().item() if again.shape == logits.shape else "shape"
        raise ValueError(f"{_WHERE}: model must compute what {arch!r} rebuilt from its weights computes, got "
                         f"other logits (largest difference {worst}); the module differs in something its "
                         "weights do not show (a replaced layer, pooling, activation)")


def _vit_kwargs(model: nn.Module) -> dict:
    """A timm VisionTransformer's size options, read from the module (what ``create_model`` needs to rebuild it)."""
    out: dict = {}
    patch_embed, blocks = getattr(model, "patch_embed", None), getattr(model, "blocks", None)
    if patch_embed is None or blocks is None or not len(blocks):
        return out
    patch_size = getattr(patch_embed, "patch_size", None)
    if isinstance(patch_size, (tuple, list)) and len(set(patch_size)) == 1:
        out["patch_size"] = int(patch_size[0])
    elif isinstance(patch_size, int):
        out["patch_size"] = patch_size
    out["depth"] = len(blocks)
    dim = getattr(model, "embed_dim", None)
    attn, mlp = getattr(blocks[0], "attn", None), getattr(blocks[0], "mlp", None)
    if isinstance(dim, int):
        out["embed_dim"] = dim
        fc1 = getattr(mlp, "fc1", None)
        if isinstance(fc1, nn.Linear):
            out["mlp_ratio"] = fc1.out_features / dim
    if isinstance(getattr(attn, "num_heads", None), int):
        out["num_heads"] = attn.num_heads
    qkv = getattr(attn, "qkv", None)
    if isinstance(qkv, nn.Linear):
        out["qkv_bias"] = qkv.bias is not None
    return out


def _native_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # timm ViT
    if isinstance(size, (tuple, list)) and len(set(size)) == 1:
        return int(size[0])
    size = getattr(model, "image_size", None)  # torchvision ViT
    return int(size) if isinstance(size, int) else None


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


def _differences(mine: dict, rebuilt: dict) -> str | None:
    """Missing / unexpected keys and shape mismatches between two state dicts, first few of each; None if none."""
    missing, unexpected, shapes = state_differences(mine, rebuilt)
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys the module lacks ({few_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} keys the rebuilt model lacks ({few_keys(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (" + "; ".join(
            f"{k}: module {list(mine[k].shape)}, rebuilt {list(rebuilt[k].shape)}" for k in shapes[:4]) + ")")
    return ", ".join(parts) or None
