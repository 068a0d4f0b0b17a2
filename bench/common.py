"""What the benchmark files share (imported as a module, not through conftest)."""
from __future__ import annotations

import torch


def synced(fn, device):
    """fn wrapped so that the timed region ends when the device has finished."""
    if device != "cuda":
        return fn

    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out

    return run
