"""Model level: WF forward with mixed per-sample labels vs the plain model, same mode."""
from __future__ import annotations

import pytest
import torch

import wfkern
from configs import MODEL_SIZES, ROUNDS, make_workload, materialized
from common import synced

ALL_MODELS = ["resnet18", "resnet50", "vit_small"]
_CACHE = {}


def _setup(name, device):
    if name not in MODEL_SIZES[device]:
        pytest.skip(f"{name} is not benchmarked on {device}")
    if (name, device) not in _CACHE:
        _CACHE[(name, device)] = make_workload(name, device)
    return _CACHE[(name, device)]


IMPLS = ["plain", "wf", "wf_ref", "plain_compiled", "wf_compiled", "wf_ref_compiled", "materialized"]


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("impl", IMPLS)
def test_model_forward(benchmark, bench_device, name, impl):
    if "compiled" in impl and bench_device == "cpu":
        pytest.skip("compiled variants run on the GPU set (CPU compile time dwarfs the run)")
    if impl == "materialized" and name == "resnet50" and bench_device == "cuda":
        pytest.skip("per-sample ResNet-50 weights at batch 256 do not fit")
    if "compiled" in impl and (name == "resnet50" or (impl == "wf_ref_compiled" and name != "resnet18")):
        pytest.skip("compile budget of bench/gpu_check.sh: compiled runs for resnet18 and vit_small only")
    model, wf, x, labels = _setup(name, bench_device)
    use_ref = impl.startswith("wf_ref")
    if impl.startswith("plain"):
        fn = lambda: model(x)  # noqa: E731
    elif impl == "materialized":
        fn = materialized(wf, x, labels)
    else:
        fn = lambda: wf(x, forget=labels)  # noqa: E731
    if impl.endswith("compiled"):
        fn = torch.compile(fn)
    benchmark.group = f"fwd-{name}"
    benchmark.extra_info.update(impl=impl, backend="reference" if use_ref else wfkern.backend(), model=name,
                                batch=x.shape[0], dtype=str(x.dtype), layout="nchw", launches=1)
    with torch.inference_mode(), wfkern.use_reference(use_ref):
        out = benchmark.pedantic(synced(fn, bench_device), **ROUNDS[bench_device])
        if impl != "plain" and not impl.startswith("plain"):
            expected = wf(x, forget=labels)
            torch.testing.assert_close(out.float(), expected.float(), atol=5e-2, rtol=5e-2)
