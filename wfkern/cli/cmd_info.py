"""``wfkern info``: which backend runs the ops, and the versions of everything involved."""

from __future__ import annotations

import argparse
import platform

__all__ = ["add_parser", "run", "versions"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the active backend and library versions",
                       description="Print what runs the WF ops (CUDA kernels / C++ kernels / pure-PyTorch reference), "
                                   "why, and the versions of wfkern, torch, torchvision, timm and Python.")
    p.set_defaults(run=run)


def versions() -> dict[str, str]:
    """{name: version} for wfkern, python, torch (+ CUDA), torchvision, timm, safetensors, scikit-learn."""
    import torch

    import wfkern

    out = {"wfkern": wfkern.__version__, "python": platform.python_version(), "torch": torch.__version__,
           "torch CUDA": str(torch.version.cuda), "CUDA available": str(torch.cuda.is_available())}
    for mod in ("torchvision", "timm", "safetensors", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            out[mod] = "not installed"
    return out


def run(args: argparse.Namespace) -> int:
    import wfkern.ops

    print(wfkern.ops.describe_backend())
    for name, version in versions().items():
        print(f"{name:>15}: {version}")
    return 0
