"""pytest-benchmark setup: machine facts, device selection and a synchronising timer wrapper.

CPU set:  pytest bench --benchmark-only            (make bench)
CUDA set: pytest bench --benchmark-only --bench-device cuda   (by hand; bench/gpu_check.sh times the
          GPU targets with bench/gpu_targets.py instead: interleaved rounds, results written as they come)
"""
from __future__ import annotations

import platform

import pytest
import torch

import wfkern


def pytest_addoption(parser):
    parser.addoption("--bench-device", default="cpu", choices=["cpu", "cuda"], help="device to benchmark on")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["wfkern_backend"] = wfkern.backend()
    machine_info["cpu_threads"] = torch.get_num_threads()
    machine_info["platform"] = platform.platform()
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
        machine_info["cuda"] = torch.version.cuda


@pytest.fixture(scope="session")
def bench_device(request):
    device = request.config.getoption("--bench-device")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    return device
