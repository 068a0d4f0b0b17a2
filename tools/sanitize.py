"""Build wfkern's C++ CPU ops with AddressSanitizer + UndefinedBehaviorSanitizer and run tests on them.

    python tools/sanitize.py build          # CPU-only ASan/UBSan build into build/asan/ (wfkern + _C*.so)
    python tools/sanitize.py test [ARGS]    # pytest ARGS (default: SANITIZE_TESTS below) against it
    python tools/sanitize.py [all]          # both (what `make sanitize` and `make test` run)

The normal in-place build (wfkern/_C*.so) is never touched: the sanitized library is built with
``setup.py build_ext --build-lib build/asan --build-temp build/asan-tmp`` (WFKERN_CUDA=0,
WFKERN_SANITIZE=1), and build/asan/wfkern/ is a copy of the package's Python sources with that
library beside them. The tests run in a fresh interpreter with libasan (and libstdc++, so that ASan
can intercept C++ exceptions thrown by libraries loaded later, such as triton) preloaded and
build/asan first on sys.path; before pytest starts, that interpreter checks that ``import wfkern``
found build/asan/wfkern and loaded the sanitized _C. Any ASan or UBSan report aborts the run
with a non-zero exit status, and the report (file, line, stack) is printed. Run it with the
interpreter that has torch (make: .venv/bin/python). ASAN_OPTIONS / UBSAN_OPTIONS given by the
caller are appended to the defaults below; WFKERN_ASAN_DIR moves build/asan (the temp folder
follows as <dir>-tmp); MAX_JOBS (default 2) caps the compile jobs.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASAN_DIR = os.path.abspath(os.environ.get("WFKERN_ASAN_DIR", os.path.join(ROOT, "build", "asan")))

SANITIZE_TESTS = [
    "tests/test_ops_mask_epilogue.py",
    "tests/test_ops_property.py",
    "tests/test_concurrency.py",
    "tests/test_patch.py",
]

# halt_on_error: the first report ends the process (exit status 1, or abort for UBSan).
# detect_leaks=0: CPython and torch keep allocations until exit by design.
# protect_shadow_gap=0: lets CUDA's driver map memory where ASan would reserve it (GPU machines).
ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:protect_shadow_gap=0:print_summary=1"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1:print_summary=1"


def _say(msg: str) -> None:
    print(f"sanitize: {msg}", flush=True)


def _compiler_file(compiler: str, name: str) -> str:
    path = subprocess.run([compiler, f"-print-file-name={name}"], check=True, capture_output=True,
                          text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise SystemExit(f"sanitize: {compiler} has no {name} (install the compiler's sanitizer runtime)")
    return os.path.realpath(path)


def _library() -> str:
    found = sorted(glob.glob(os.path.join(ASAN_DIR, "wfkern", "_C*.so")))
    if len(found) != 1:
        raise SystemExit(f"sanitize: expected one sanitized wfkern/_C*.so under {ASAN_DIR}, found {found}; "
                         "run: python tools/sanitize.py build")
    return found[0]


def build() -> None:
    start = time.monotonic()
    env = dict(os.environ, WFKERN_CUDA="0", WFKERN_SANITIZE="1", WFKERN_CPP="1")
    env.setdefault("MAX_JOBS", "2")
    log = ASAN_DIR + "-build.log"
    os.makedirs(os.path.dirname(log), exist_ok=True)
    _say(f"building the CPU ops with ASan + UBSan into {os.path.relpath(ASAN_DIR, ROOT)}/ (log: "
         f"{os.path.relpath(log, ROOT)}) ...")
    with open(log, "w") as out:
        rc = subprocess.call(
            [sys.executable, "setup.py", "build_ext", "--build-lib", ASAN_DIR, "--build-temp", ASAN_DIR + "-tmp"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        with open(log) as f:
            sys.stdout.write("".join(f.readlines()[-60:]))
        raise SystemExit(f"sanitize: the sanitized build failed (exit {rc})")
    # The package's Python sources beside the sanitized library (never the in-place _C*.so).
    package = os.path.join(ASAN_DIR, "wfkern")
    library = _library()
    keep = os.path.join(ASAN_DIR, "_C.sanitized")
    shutil.move(library, keep)
    shutil.rmtree(package)
    shutil.copytree(os.path.join(ROOT, "wfkern"), package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_C*.so", "_C*.pyd"))
    shutil.move(keep, library)
    needed = subprocess.run(["readelf", "-d", library], capture_output=True, text=True).stdout
    if "libasan" not in needed or "libubsan" not in needed:
        raise SystemExit(f"sanitize: {library} does not link libasan and libubsan: not a sanitized build")
    _say(f"built {os.path.relpath(library, ROOT)} in {time.monotonic() - start:.0f} s")


def test(args: list) -> int:
    library = _library()
    preload = [_compiler_file(os.environ.get("CC", "gcc"), "libasan.so"),
               _compiler_file(os.environ.get("CXX", "g++"), "libstdc++.so.6")]
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(preload + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    env["ASAN_OPTIONS"] = ":".join(filter(None, [ASAN_OPTIONS, os.environ.get("ASAN_OPTIONS")]))
    env["UBSAN_OPTIONS"] = ":".join(filter(None, [UBSAN_OPTIONS, os.environ.get("UBSAN_OPTIONS")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ASAN_DIR, os.environ.get("PYTHONPATH")]))
    env["CUDA_VISIBLE_DEVICES"] = ""  # the sanitized build has CPU kernels only
    env["WFKERN_SANITIZED_LIBRARY"] = library
    args = args or ["-q", "-m", "not slow", "-p", "no:cacheprovider", *SANITIZE_TESTS]
    _say(f"LD_PRELOAD={env['LD_PRELOAD']}")
    _say(f"ASAN_OPTIONS={env['ASAN_OPTIONS']} UBSAN_OPTIONS={env['UBSAN_OPTIONS']}")
    _say("pytest " + " ".join(args))
    start = time.monotonic()
    rc = subprocess.call([sys.executable, os.path.abspath(__file__), "--inner", *args], cwd=ROOT, env=env)
    _say(f"tests under ASan + UBSan: exit {rc} in {time.monotonic() - start:.0f} s")
    return rc


def _inner(args: list) -> int:
    """Runs in the preloaded interpreter: make sure the sanitized wfkern is the one imported, then pytest."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]
    sys.path.insert(0, ASAN_DIR)
    with open("/proc/self/maps") as f:
        if "libasan" not in f.read():
            raise SystemExit("sanitize: libasan is not loaded in the test interpreter")
    import wfkern  # noqa: F401  (loads wfkern._C)
    import wfkern.ops._load as load

    library = os.environ["WFKERN_SANITIZED_LIBRARY"]
    files = load._library_files()
    loaded_from = getattr(sys.modules.get("wfkern._C"), "__file__", None)
    if files != [library] or not load.loaded() or os.path.realpath(loaded_from or "") != os.path.realpath(library):
        raise SystemExit(f"sanitize: wfkern came from {wfkern.__file__}, library files {files}, _C from "
                         f"{loaded_from} (loaded: {load.loaded()}); expected {library}")
    print(f"sanitize: wfkern from {os.path.dirname(wfkern.__file__)}, _C = {loaded_from} "
          f"(kernels: {load.describe_backend().splitlines()[1]})", flush=True)
    import pytest

    # --capture=sys: pytest's default capture redirects fd 2 to a file, and a sanitizer report written
    # there is lost when the report ends the process; capture at the sys level keeps fd 2 the terminal.
    return pytest.main(["--capture=sys", *args])


def main(argv: list) -> int:
    if argv[:1] == ["--inner"]:
        return _inner(argv[1:])
    step = argv[0] if argv and argv[0] in ("build", "test", "all") else "all"
    rest = argv[1:] if argv and argv[0] in ("build", "test", "all") else argv
    if step in ("build", "all"):
        build()
    if step in ("test", "all"):
        return test(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
