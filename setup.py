"""Builds wfkern._C: C++ CPU ops always, CUDA ops where a toolkit and a CUDA build of torch exist.

Switches: WFKERN_CPP=0 (pure-Python install), WFKERN_CUDA=0 (skip the CUDA ops),
WFKERN_DEBUG=1 (-O0 -g), WFKERN_LABEL_SCATTER=1 (the label-scatter gate-gradient kernel, not yet
run on a GPU), WFKERN_FUSED_TABLE=1 (a one-launch forward that computes the gates inside the pass, not yet
run on a GPU), TORCH_CUDA_ARCH_LIST (default "8.0;9.0" when no GPU is visible),
WFKERN_SANITIZE=1 (C++ with AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g; for a separate
CPU-only build: `make sanitize` builds one into build/asan/ and runs the op tests against it).
No GPU is needed to compile the CUDA ops.
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _say(msg):
    print(f"wfkern setup: {msg}", file=sys.stderr)


def _find_cuda_home(default_homes=("/usr/local/cuda",), versioned_glob="/usr/local/cuda-*"):
    """A toolkit whose include/cuda_runtime.h exists (an nvcc wrapper on PATH can mislead torch).

    Order: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, then every nvcc on PATH (symlinks resolved; the
    toolkit is the parent of nvcc's bin/, so a wrapper script such as /usr/local/bin/nvcc, whose
    parent has no include/cuda_runtime.h, is passed over), then /usr/local/cuda-* (newest first).
    The defaults are parameters so that tests can point them elsewhere.
    """
    def is_toolkit(path):
        return bool(path) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), *default_homes]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        nvcc = os.path.join(entry or os.curdir, "nvcc")
        if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
            for binary in (os.path.realpath(nvcc), os.path.abspath(nvcc)):
                candidates.append(os.path.dirname(os.path.dirname(binary)))

    def version(path):  # cuda-12.10 after cuda-12.9; unparsable names last
        tail = os.path.basename(path).split("-", 1)[-1]
        return tuple(int(p) if p.isdigit() else -1 for p in tail.split("."))

    candidates += sorted(glob.glob(versioned_glob), key=version, reverse=True)
    for path in candidates:
        if is_toolkit(path):
            return path
    return None


def _extra_cuda_includes():
    """cuBLAS & co. headers that ATen pulls in ship with torch's pip packages, not every toolkit."""
    import site

    found = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        found += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(base, "nvidia", "cublas", "include"))
    return sorted(set(found))


def get_extensions():
    if os.environ.get("WFKERN_CPP", "1") == "0":
        _say("WFKERN_CPP=0: building no compiled code (pure-PyTorch reference only)")
        return [], {}
    import torch

    debug = os.environ.get("WFKERN_DEBUG", "0") == "1"
    sanitize = os.environ.get("WFKERN_SANITIZE", "0") == "1"
    cuda_home = None
    if os.environ.get("WFKERN_CUDA", "1") == "0":
        _say("WFKERN_CUDA=0: skipping the CUDA ops")
    elif not torch.version.cuda:
        _say(f"torch {torch.__version__} is not a CUDA build: skipping the CUDA ops")
    else:
        cuda_home = _find_cuda_home()
        if cuda_home is None:
            _say("no CUDA toolkit found (set CUDA_HOME): skipping the CUDA ops")
        else:
            os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    link = []
    if sanitize:  # the library then needs libasan first in the process: LD_PRELOAD it (tools/sanitize.py)
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        # -fno-wrapv: Python's CFLAGS carry -fwrapv, which would hide signed overflow from UBSan
        cxx = (cxx if debug else ["-O1", "-g"]) + flags + ["-fno-wrapv"]
        link = flags
        _say("WFKERN_SANITIZE=1: C++ built with " + " ".join(cxx))
    extra = {"cxx": cxx}
    if cuda_home is not None:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        _say(f"building CUDA ops with {cuda_home} for archs {os.environ.get('TORCH_CUDA_ARCH_LIST', 'of the visible GPU')}")
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        extra["nvcc"] = (["-O0", "-g", "-G"] if debug else ["-O3"])
        if os.environ.get("WFKERN_LABEL_SCATTER", "0") == "1":  # not yet run on a GPU: off by default
            extra["nvcc"].append("-DWFKERN_LABEL_SCATTER")
            _say("WFKERN_LABEL_SCATTER=1: the gate gradients use the label-scatter kernel")
        if os.environ.get("WFKERN_FUSED_TABLE", "0") == "1":  # not yet run on a GPU: off by default
            extra["nvcc"].append("-DWFKERN_FUSED_TABLE")
            _say("WFKERN_FUSED_TABLE=1: the forward computes its gates inside the pass (one launch)")
        ext = CUDAExtension("wfkern._C", sources, extra_compile_args=extra, extra_link_args=link,
                            include_dirs=_extra_cuda_includes())
    else:
        ext = CppExtension("wfkern._C", sources, extra_compile_args=extra, extra_link_args=link)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = get_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
