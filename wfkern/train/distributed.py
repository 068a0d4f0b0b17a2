"""torchrun / DistributedDataParallel plumbing shared by training and untraining."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

__all__ = ["DistContext", "dist_context", "init_distributed", "all_reduce_grads", "all_reduce_sum"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, and whether torch.distributed is initialised."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def dist_context() -> DistContext:
    """The current process group as a DistContext (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def init_distributed(device: str | None = None) -> tuple[DistContext, torch.device]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise.

    Backend: NCCL with one GPU per process (LOCAL_RANK) when CUDA is available and ``device`` is not
    "cpu"; gloo on the CPU.

    Args:
        device: "cpu", "cuda" or None (auto).
    Returns:
        (the DistContext, the torch.device this process should use).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"wfkern: device must be available, got {device!r} on a machine without CUDA; use cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    else:
        dev = torch.device(device if device is not None else ("cuda" if use_cuda else "cpu"))
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist_context(), dev


def all_reduce_grads(params: Iterable[torch.Tensor], ctx: DistContext) -> None:
    """Average gradients over processes in one flat all-reduce (what DDP does), in place."""
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over processes (returns it unchanged when not distributed)."""
    if ctx.active:
        dist.all_reduce(t)
    return t
