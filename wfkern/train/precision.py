"""Mixed precision for training, untraining, evaluation and baselines: one context manager.

    with wfkern.precision("bf16", device="cuda"):
        wfkern.unlearn(wf, train, val, device="cuda")

"bf16" runs the forward passes under ``torch.autocast(dtype=torch.bfloat16)`` (CUDA, or the CPU); the
weights, the WF gates and the optimiser state stay float32 (autocast casts per operation; no GradScaler is
needed with bfloat16). ``use_channels_last`` puts a CNN's weights in channels-last memory order, which
cuDNN's bf16 convolutions prefer. "fp32" changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["PRECISIONS", "precision", "use_channels_last", "check_precision"]

PRECISIONS = ("fp32", "bf16")


def check_precision(mode: str, device: str | torch.device = "cpu", where: str = "wfkern.precision") -> str:
    """``mode`` when it is one of ``PRECISIONS`` and runs on ``device``; ValueError naming it otherwise."""
    if mode not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
    dev = torch.device(device)
    if mode == "bf16" and dev.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{where}: precision must be one the GPU supports, got 'bf16' on "
                         f"{torch.cuda.get_device_name(dev)} (no bfloat16); use fp32")
    if mode == "bf16" and dev.type not in ("cuda", "cpu"):
        raise ValueError(f"{where}: precision 'bf16' must run on cuda or cpu, got device {str(dev)!r}; use fp32")
    return mode


@contextlib.contextmanager
def precision(mode: str = "fp32", device: str | torch.device = "cpu") -> Iterator[str]:
    """Run the block in ``mode``: "fp32" (unchanged) or "bf16" (bfloat16 autocast on ``device``'s type).

    Args:
        mode: "fp32" or "bf16".
        device: where the models run ("cuda", "cuda:1", "cpu"); autocast is per device type.
    Yields:
        ``mode``.
    Raises:
        ValueError: an unknown mode, or bf16 on a GPU without bfloat16.
    """
    check_precision(mode, device)
    if mode == "fp32":
        yield mode
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield mode


def use_channels_last(model: nn.Module, mode: str, device: str | torch.device) -> bool:
    """Put a CNN's 4-D weights in channels-last order for bf16 on CUDA (in place); True when it did.

    Only for ``mode == "bf16"`` on a CUDA device and models with a ``nn.Conv2d``; a ViT (whose only conv
    is the patch embedding) is left alone. Values and results are unchanged (a memory layout).
    """
    if mode != "bf16" or torch.device(device).type != "cuda":
        return False
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) < 2:
        return False
    model.to(memory_format=torch.channels_last)
    return True
