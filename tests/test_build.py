"""The build: which kernels were compiled, and what backend() reports."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import wfkern
from wfkern.ops import _load


def _toolkit_present() -> bool:
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    return any(h and os.path.isfile(os.path.join(h, "include", "cuda_runtime.h")) for h in homes)


def _expect_compiled() -> bool:
    return os.environ.get("WFKERN_CPP", "1") != "0" and bool(_load._library_files())


def test_cpu_kernels_registered():
    if not _expect_compiled():
        pytest.skip("wfkern._C not built (WFKERN_CPP=0 or no compiler)")
    assert _load.loaded()
    for op in (torch.ops.wfkern.mask_epilogue.default, torch.ops.wfkern.mask_epilogue_backward.default):
        assert op.has_kernel_for_dispatch_key("CPU")


def test_cuda_kernels_registered_without_a_gpu():
    """Where a toolkit and a CUDA torch exist, the .cu kernels are compiled and registered."""
    if not (_expect_compiled() and torch.version.cuda and _toolkit_present()
            and os.environ.get("WFKERN_CUDA", "1") != "0"):
        pytest.skip("no CUDA toolkit / CUDA build of torch here, or WFKERN_CUDA=0")
    for op in (torch.ops.wfkern.mask_epilogue.default, torch.ops.wfkern.mask_epilogue_backward.default):
        assert op.has_kernel_for_dispatch_key("CUDA")
    assert "cuda" in _load._kernel_devices


def test_backend_reports_what_runs():
    expected = "cuda" if torch.cuda.is_available() and "cuda" in _load._kernel_devices else (
        "cpp" if _load.loaded() else "reference")
    assert wfkern.backend() == expected
    with wfkern.use_reference():
        assert wfkern.backend() == "reference"
        assert "forced" in wfkern.describe_backend()
    assert wfkern.backend() == expected
    assert f"backend: {expected}" in wfkern.describe_backend()


def test_force_reference_env_runs_reference_and_says_so():
    code = "import wfkern; print(wfkern.backend()); print(wfkern.describe_backend())"
    env = dict(os.environ, WFKERN_FORCE_REFERENCE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "reference"
    assert "forced" in out


def test_errors_raised_inside_the_extension_reach_python():
    """An extension built against another libstdc++ than the one loaded at run time once crashed
    (SIGSEGV) whenever a C++ error message formatted an integer. Run in a child: a crash is a failure."""
    if not _expect_compiled():
        pytest.skip("wfkern._C not built")
    code = ("import torch, wfkern\n"
            "try:\n"
            "    torch.ops.wfkern.mask_epilogue(torch.ones(2, 3), torch.zeros(4, 3), torch.tensor([0, 9]))\n"
            "except ValueError as err:\n"
            "    print('raised:', err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"the child died (exit {proc.returncode}): rebuild wfkern._C with the system compiler "
        f"(CC=/usr/bin/gcc CXX=/usr/bin/g++); {proc.stderr[-500:]}")
    assert "raised: wfkern.mask_epilogue: labels must be in [-1, 4)" in proc.stdout and "got 9" in proc.stdout
