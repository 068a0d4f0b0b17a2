"""Weights files and state dicts: read a file without unpickling anything but tensors, compare two state dicts,
find non-finite values. The errors name the keys (``few_keys``). Imports no other wfkern module."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = ["ImportWeightsError", "read_weights", "few_keys", "state_differences", "non_finite_weights",
           "first_line", "SHOWN_KEYS"]

# Where training scripts keep the state dict inside a checkpoint dict, in order of preference.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "state_dict_ema", "model_ema")
SHOWN_KEYS = 4  # keys named per kind of problem in an error (then "and N more")


class ImportWeightsError(ValueError):
    """Weights that cannot become the requested model.

    Attributes:
        key: what is wrong: "weights", "num_classes" (the file's head), "model".
        expectation: what it must be ("fit torchvision:resnet18 (...)").
        got: what it is, already worded.
        fix: how to fix it ("" when there is nothing to add).
    """

    def __init__(self, key: str, expectation: str, got: str, fix: str = "") -> None:
        self.key, self.expectation, self.got, self.fix = key, expectation, got, fix
        super().__init__(f"wfkern.import_model: {key} must {expectation}, got {got}" + (f"; {fix}" if fix else ""))


def few_keys(keys, n: int = SHOWN_KEYS) -> str:
    """The first ``n`` keys, comma-separated, then "and N more": how errors about state dicts name keys."""
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def state_differences(have: Mapping[str, Tensor],
                      expected: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """How the state dict ``have`` differs from ``expected``: (keys only ``expected`` holds, keys only ``have``
    holds, shared keys whose shapes differ), each in its state dict's order."""
    missing = [k for k in expected if k not in have]
    unexpected = [k for k in have if k not in expected]
    shapes = [k for k in expected if k in have and tuple(have[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, shapes


def non_finite_weights(state: Mapping[str, Tensor]) -> str | None:
    """None when every floating-point (and complex) tensor of ``state`` is finite, else what is not, naming the
    keys: ``"2 NaN and 1 inf values in 'conv1.weight'"`` (``" (and in 3 more tensors: ...)"`` when several are).

    The one check that imported weights and loaded checkpoints both pass: a NaN or inf weight makes every
    output it reaches NaN, so such a file is refused where it comes in, not found later as a broken model.
    """
    bad = []
    for key, value in state.items():
        if not (value.is_floating_point() or value.is_complex()) or value.numel() == 0:
            continue
        finite = torch.isfinite(value if value.dtype in _ISFINITE_DTYPES or value.is_complex() else value.float())
        if not bool(finite.all()):
            nans = int(torch.isnan(value.float() if not value.is_complex() else value).sum())
            bad.append((key, nans, int((~finite).sum()) - nans))
    if not bad:
        return None
    key, nans, infs = bad[0]
    counts = " and ".join(f"{n} {word} value{'s' * (n != 1)}" for n, word in ((nans, "NaN"), (infs, "inf")) if n)
    more = f" (and in {len(bad) - 1} more tensor{'s' * (len(bad) > 2)}: {few_keys([k for k, _, _ in bad[1:]])})" \
        if len(bad) > 1 else ""
    return f"{counts} in {key!r}{more}"


_ISFINITE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items())


def read_weights(path: str) -> tuple[dict[str, Tensor], str]:
    """The tensors of a weights file: safetensors, or a ``torch.save``d state dict (``weights_only=True``).

    A checkpoint dict that keeps the state dict under a usual key ("state_dict", "model", "model_state_dict",
    ...) is accepted too; nothing but tensors, containers and numbers is ever unpickled.

    Args:
        path: the file.
    Returns:
        ({name: tensor} on the CPU, a description of what was read).
    Raises:
        ImportWeightsError: no such file, or a file that is neither (a pickled model, an optimizer, ...).
    """
    if not os.path.isfile(path):
        raise ImportWeightsError("weights", "be an existing file (or 'default')", repr(path))
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad file
            raise ImportWeightsError("weights", "be a readable safetensors file", f"{path!r} ({first_line(e)})") from e
        if not state:
            raise ImportWeightsError("weights", "hold tensors", f"an empty safetensors file {path!r}")
        return state, "safetensors file"
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"a pickled {found.group(1)}" if found else "Python objects other than tensors"
        raise ImportWeightsError(
            "weights", "be a safetensors file or a torch state dict (tensors only; loaded with weights_only=True)",
            f"{path!r}, which holds {what}",
            "save model.state_dict() instead of the model, or convert it to safetensors") from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, zipfile errors, ...
        why = first_line(e)[:120] if isinstance(e, (RuntimeError, OSError)) and str(e).strip() else \
            "not a safetensors header, a torch zip archive or a pickle"
        raise ImportWeightsError(
            "weights", "be a safetensors file or a torch state dict file (torch.save)",
            f"{path!r}, which is neither ({why})") from e
    if _is_state(obj):
        return dict(obj), "torch state dict"
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if _is_state(obj.get(key)):
                return dict(obj[key]), f"torch checkpoint[{key!r}]"
        bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
        raise ImportWeightsError(
            "weights", "be a state dict (names -> tensors) or a checkpoint dict holding one under "
            f"{', '.join(repr(k) for k in _CONTAINER_KEYS[:4])}, ...",
            f"a dict in {path!r} whose entry {bad!r} is not a tensor ({type(obj.get(bad)).__name__})" if bad is not None
            else f"an empty dict in {path!r}")
    raise ImportWeightsError("weights", "be a state dict (names -> tensors)",
                             f"a {type(obj).__name__} in {path!r}", "save model.state_dict()")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): how errors quote a cause."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
