"""Untraining step (forward + backward to the gates) vs the plain model's fwd + bwd-to-input floor."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wfkern
from bench_models import ALL_MODELS, _setup
from configs import ROUNDS
from common import synced


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("impl", ["floor", "wf", "wf_ref"])
def test_untrain_step(benchmark, bench_device, name, impl):
    model, wf, x, labels = _setup(name, bench_device)
    targets = labels.clamp_min(0)
    x_grad = x.detach().clone().requires_grad_(True)

    def floor():
        loss = F.cross_entropy(model(x_grad).float(), targets)
        loss.backward()
        return loss

    def step():
        loss = F.cross_entropy(wf(x, forget=labels).float(), targets)
        loss.backward()
        return loss

    fn = floor if impl == "floor" else step
    benchmark.group = f"untrain-{name}"
    benchmark.extra_info.update(impl=impl, backend="reference" if impl == "wf_ref" else wfkern.backend(),
                                model=name, batch=x.shape[0], dtype=str(x.dtype), layout="nchw", launches=1)
    with wfkern.use_reference(impl == "wf_ref"):
        if bench_device == "cuda":
            fn()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            benchmark.extra_info["peak_extra_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        benchmark.pedantic(synced(fn, bench_device), **ROUNDS[bench_device])
    model.zero_grad(set_to_none=True)
    wf.zero_grad(set_to_none=True)
