"""Untraining under torchrun: 2 gloo CPU processes produce the gates of 1 process on the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RUN = dict(batch_size=64, max_epochs=2, evals_per_epoch=2, progress=False, seed=3, lambda1_warmup=0.2)


def _setup():
    import wfkern
    from wfkern.data import get_dataset
    from wfkern.models import create_model

    torch.set_num_threads(1)
    train = get_dataset("digits", split="train", seed=0).subset(torch.arange(256))
    val = get_dataset("digits", split="val", seed=0).subset(torch.arange(101))  # odd: uneven val shards
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)).eval()
    return wfkern.patch(model, num_classes=10), train, val


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from safetensors.torch import save_file

    from wfkern.train import init_distributed
    from wfkern.unlearn import unlearn

    ctx, device = init_distributed("cpu")
    assert ctx.world_size == world and dist.get_backend() == "gloo" and device.type == "cpu"
    wf, train, val = _setup()
    res = unlearn(wf, train, val, device=device, **RUN)
    save_file(wf.gates_state_dict(), os.path.join(out, f"rank{rank}.safetensors"),
              metadata={"best_step": str(res.best_step), "steps": str(res.steps)})
    dist.barrier()  # both ranks are done before either tears gloo down (a lone teardown can abort the peer)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_match_one_process(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from wfkern.unlearn import unlearn

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    try:
        wf, train, val = _setup()
        res = unlearn(wf, train, val, **RUN)
    finally:
        torch.set_num_threads(threads)  # leave the test process's thread count as it was
    single = wf.gates_state_dict()
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    for key, ref in single.items():
        assert (ref != 3.0).any()  # the gates did move
        torch.testing.assert_close(ranks[0][key], ranks[1][key], atol=0, rtol=0)  # ranks agree exactly
        torch.testing.assert_close(ranks[0][key], ref, atol=2e-4, rtol=1e-4)     # and match one process
    with safe_open(str(tmp_path / "rank0.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert int(meta["best_step"]) == res.best_step and int(meta["steps"]) == res.steps
