"""What a served request carries in: images (base64 PNG / JPEG or raw arrays) turned into model input exactly as the
checkpoint's recorded preprocessing says, and forget sets given by class id or name.

Every problem is a ``BadInput`` with the HTTP status it answers with and a one-line message of the project's form
(``<what> must <expectation>, got <actual>``).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wfkern.data.preprocess import Preprocess, as_preprocess

__all__ = ["BadInput", "InputSpec", "Limits", "input_spec", "decode_image", "resolve_forget", "class_names_for"]


class BadInput(ValueError):
    """A request the server refuses; ``status`` is the HTTP status of the answer (400, 413, 422, ...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may carry.

    Attributes:
        max_images: images per request (more: 413).
        max_side: pixels per image side (larger: 413).
        max_request_bytes: the request body (larger: 413).
    """

    max_images: int = 64
    max_side: int = 1024
    max_request_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes model input, from the checkpoint: channels, side, normalisation, crop.

    Attributes:
        in_chans: C.  image_size: S.
        mean, std: per-channel normalisation of pixels scaled to [0, 1] (the checkpoint's, else its dataset's).
        from_files: the model was trained on images decoded from files (ImageFolder): resize to
            ``floor(S / crop_pct)`` with ``interpolation`` and centre-crop to S, as ``wfkern.data`` does;
            otherwise the whole image is resized bilinearly to S (the in-memory datasets).
        crop_pct, interpolation: see ``wfkern.data.Preprocess``.
    """

    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    from_files: bool
    crop_pct: float | None = None
    interpolation: str | None = None


def _dataset_key(name: str) -> str:
    from wfkern.data import canonical_dataset_name

    try:
        return canonical_dataset_name(name) if name else ""
    except ValueError:
        return ""


def _dataset_norm(key: str, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The dataset's own mean / std, where the data loaders keep them."""
    from wfkern.data.digits import _MEAN as DIGITS_MEAN, _STD as DIGITS_STD
    from wfkern.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
    from wfkern.data.torchvision_sets import TV_SPECS

    if key == "digits":
        return DIGITS_MEAN, DIGITS_STD
    if key in TV_SPECS:
        return tuple(TV_SPECS[key][4]), tuple(TV_SPECS[key][5])
    if key == "imagefolder" or in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0,) * in_chans, (1.0,) * in_chans


def input_spec(config) -> InputSpec:
    """The InputSpec of a checkpoint's ``ModelConfig`` (``wfkern.read_checkpoint_config``)."""
    key = _dataset_key(config.dataset)
    pre = as_preprocess(config.preprocess or None, config.in_chans, "wfkern.serve")
    mean, std = _dataset_norm(key, config.in_chans)
    return InputSpec(config.in_chans, config.image_size, tuple(pre.mean or mean), tuple(pre.std or std),
                     from_files=key == "imagefolder", crop_pct=pre.crop_pct, interpolation=pre.interpolation)


def class_names_for(config, given: list[str] | None = None) -> list[str]:
    """One name per class: ``given``, else the dataset's own (digits, MNIST, Fashion-MNIST, CIFAR-10), else
    ``"0" .. "Nc-1"``."""
    from wfkern.data.torchvision_sets import TV_SPECS

    n = config.num_classes
    if given is not None:
        if len(given) != n or len(set(given)) != n or not all(isinstance(name, str) and name for name in given):
            raise ValueError(f"wfkern.serve: class_names must be {n} distinct non-empty names (one per class), "
                             f"got {len(given)} ({', '.join(map(str, given[:4]))}{', ...' if len(given) > 4 else ''})")
        return list(given)
    key = _dataset_key(config.dataset)
    if key in TV_SPECS and len(TV_SPECS[key][6]) == n:
        return list(TV_SPECS[key][6])
    return [str(i) for i in range(n)]


# --- images -----------------------------------------------------------------------------------------------------

_GRAY_MODES, _COLOR_MODES = ("L", "1"), ("RGB",)


def _decode_bytes(data: str, where: str, spec: InputSpec, limits: Limits):
    """A PIL image, fully loaded, from base64 PNG / JPEG text (a ``data:`` URL prefix is accepted)."""
    from PIL import Image, UnidentifiedImageError

    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{where} must be base64 text, got {len(data)} characters that do not decode") from None
    try:
        img = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise BadInput(f"{where} must be a PNG or JPEG image, got {len(raw)} bytes of something else") from None
    if img.format not in ("PNG", "JPEG"):
        raise BadInput(f"{where} must be a PNG or JPEG image, got {img.format}")
    w, h = img.size
    if max(w, h) > limits.max_side or min(w, h) < 1:
        raise BadInput(f"{where} must be at most {limits.max_side} pixels a side, got {w}x{h}", 413)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{where} must be a complete {img.format} image, got one that does not decode "
                       f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    modes = _GRAY_MODES if spec.in_chans == 1 else _COLOR_MODES if spec.in_chans == 3 else ()
    if img.mode not in modes:
        want = "1 channel (grayscale)" if spec.in_chans == 1 else f"{spec.in_chans} channels (RGB)"
        raise BadInput(f"{where} must have {want}, the model's input, got a {img.mode} image", 422)
    return img.convert("L") if img.mode == "1" else img


def _array(value, where: str, spec: InputSpec, limits: Limits) -> torch.Tensor:
    """A (C, H, W) float tensor from a nested list of pixels in [0, 1]: (H, W) for one channel, or (C, H, W)."""
    try:
        x = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise BadInput(f"{where} must be a rectangular nested array of numbers, got a ragged or non-numeric "
                       "array") from None
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or min(x.shape) < 1:
        raise BadInput(f"{where} must be an array of shape (H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if max(x.shape[1:]) > limits.max_side:
        raise BadInput(f"{where} must be at most {limits.max_side} pixels a side, got {x.shape[2]}x{x.shape[1]}", 413)
    if x.shape[0] != spec.in_chans:
        raise BadInput(f"{where} must have {spec.in_chans} channel{'s' if spec.in_chans != 1 else ''} (the model's "
                       f"input), got shape {tuple(x.shape)}", 422)
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise BadInput(f"{where} must hold pixel values in [0, 1], got values in "
                       f"[{float(x.min()):g}, {float(x.max()):g}]")
    return x


def _normalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean) / std


def _file_transform(spec: InputSpec, tensor_input: bool):
    """``wfkern.data.imagefolder.image_transform`` (PIL input); for arrays, its resize / crop / normalise on tensors."""
    from torchvision import transforms

    from wfkern.data.imagefolder import image_transform

    pre = Preprocess(spec.mean, spec.std, spec.crop_pct, spec.interpolation)
    if not tensor_input:
        return image_transform(spec.image_size, pre)
    resize = spec.image_size if spec.crop_pct is None else int(math.floor(spec.image_size / spec.crop_pct))
    mode = getattr(transforms.InterpolationMode, (spec.interpolation or "bilinear").upper())
    return transforms.Compose([transforms.Resize(resize, interpolation=mode, antialias=True),
                               transforms.CenterCrop(spec.image_size),
                               transforms.Normalize(spec.mean, spec.std)])


def decode_image(item, index: int, spec: InputSpec, limits: Limits) -> torch.Tensor:
    """One request image as model input: a (C, S, S) float32 tensor.

    Args:
        item: ``{"data": "<base64 PNG/JPEG>"}``, ``{"array": [[...]]}`` (pixels in [0, 1], (H, W) or (C, H, W)), or
            the base64 text itself.
        index: its position in the request (for messages).
        spec: the checkpoint's preprocessing.  limits: size limits.
    Raises:
        BadInput: anything that is not such an image (status 400, 413 or 422).
    """
    where = f"images[{index}]"
    if isinstance(item, str):
        item = {"data": item}
    if not isinstance(item, dict) or len(item.keys() & {"data", "array"}) != 1:
        raise BadInput(f"{where} must be base64 text or an object with 'data' (base64 PNG/JPEG) or 'array' "
                       f"(nested pixels in [0, 1]), got {type(item).__name__}"
                       f"{' with keys ' + ', '.join(map(str, item)) if isinstance(item, dict) else ''}")
    if "data" in item:
        if not isinstance(item["data"], str):
            raise BadInput(f"{where}.data must be base64 text, got {type(item['data']).__name__}")
        img = _decode_bytes(item["data"], f"{where}.data", spec, limits)
        if spec.from_files:
            return _file_transform(spec, tensor_input=False)(img)
        from torchvision.transforms.functional import pil_to_tensor

        x = pil_to_tensor(img).float().div_(255.0)
    else:
        x = _array(item["array"], f"{where}.array", spec, limits)
        if spec.from_files:
            return _file_transform(spec, tensor_input=True)(x)
    side = spec.image_size
    if x.shape[-1] != side or x.shape[-2] != side:  # as wfkern.data.TensorImageDataset resizes whole images
        x = F.interpolate(x.unsqueeze(0), size=(side, side), mode="bilinear", align_corners=False)[0]
    return _normalise(x, spec)


# --- forget sets ------------------------------------------------------------------------------------------------

def resolve_forget(value, names: list[str]) -> list[int]:
    """Class ids from a request's ``forget``: one id or name, or a list of them (ints are ids, strings names).

    Returns:
        Sorted distinct ids.
    Raises:
        BadInput (422): an unknown id or name; (400) anything else that is not such a list.
    """
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > 4 * len(names):
        raise BadInput(f"forget must list at most {4 * len(names)} classes, got {len(items)}")
    index = {name: i for i, name in enumerate(names)}
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise BadInput(f"forget must hold class ids (integers) or names (strings), got {item!r}")
        if isinstance(item, int):
            if not 0 <= item < len(names):
                raise BadInput(f"forget must hold class ids in [0, {len(names)}), got {item}", 422)
            out.add(item)
        elif item in index:
            out.add(index[item])
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise BadInput(f"forget must hold class names of the model ({shown}; GET /v1/classes), got {item!r}", 422)
    return sorted(out)
