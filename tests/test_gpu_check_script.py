"""bench/gpu_check.sh and its helpers, checked on a CPU-only machine (no GPU needed).

The GPU run itself is one shot, so everything that can be checked without a GPU is checked here:
the shell syntax, the python it picks, the exit without a GPU, the whole stage pipeline with a
fake GPU (device probe, build and backend faked; smoke and benchmarks on the CPU; a fake
compute-sanitizer), the deadline, the target verdicts, the stage classification, setup.py's
toolkit search and the smoke script's CPU mode.
"""
from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


summary = _load("gpu_summary")


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path):
    """A bin/ with a python3 that runs this interpreter, a `python` that must never run, nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "python3", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    _exe(bin_dir / "python", f"#!/bin/sh\necho 'bare python was called' >&2\ntouch '{tmp_path}/BARE_PYTHON'\nexit 127\n")
    _exe(bin_dir / "nvidia-smi", '#!/bin/sh\necho "GPU 0: Fake GPU (UUID: GPU-00000000)"\n')
    return bin_dir


def _run(bin_dir: Path, out: Path, timeout=90, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "OUT", "WFKERN_GPU_FULL")
                and not k.startswith("GPU_CHECK_")}
    full_env.update(PATH=f"{bin_dir}:/usr/bin:/bin", OUT=str(out), **env)
    return subprocess.run([BASH, str(SCRIPT)], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _stages(out: Path) -> dict:
    return {r["stage"]: r for r in summary.read_jsonl(str(out / "bench.jsonl")) if r.get("kind") == "stage"}


def test_script_syntax():
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run for real")
def test_no_gpu_exits_2_with_python3_not_bare_python(fake_bin, tmp_path):
    out = tmp_path / "out"
    proc = _run(fake_bin, out)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "no CUDA GPU is visible" in text
    assert "command not found" not in text
    assert not (tmp_path / "BARE_PYTHON").exists()
    assert (out / "summary.md").read_text().startswith("# wfkern GPU check")
    assert len(list(out.iterdir())) <= 8


def test_bad_python_override_is_reported(fake_bin, tmp_path):
    proc = _run(fake_bin, tmp_path / "out", PYTHON=str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "is not an executable" in proc.stdout + proc.stderr


# ---- the whole pipeline on a fake GPU -----------------------------------------------------------

FAKE_PYTHON = r"""#!/bin/bash
# Pretends a GPU exists: device probe, build and backend are faked; the smoke and the benchmarks
# run on the CPU (quick / epilogue only); pytest runs one tiny file; the rest is the real python.
REAL="__REAL__"
case "${1:-}" in
  -) cat > /dev/null
     echo "python fake"; echo "ARCH=9.0"; echo "FACTS=Fake GPU, sm_90, torch fake"; exit 0 ;;
  setup.py) sleep "${FAKE_BUILD_S:-0}"
     echo "wfkern setup: building CUDA ops with /fake/cuda for archs $TORCH_CUDA_ARCH_LIST" >&2
     echo "$TORCH_CUDA_ARCH_LIST" > "$FAKE_DIR/arch"; exit 0 ;;
  -c) case "${2:-}" in *wfkern.backend*) echo "${FAKE_BACKEND:-cuda}"; echo "compiled core: fake"; exit 0 ;; esac ;;
  bench/gpu_smoke.py) shift; exec "$REAL" bench/gpu_smoke.py "$@" --device cpu --quick ;;
  bench/gpu_profile.py) shift; exec "$REAL" bench/gpu_profile.py "$@" --device cpu --shapes vit_qkv_rows \
     --models resnet18 --rows 3 ;;
  bench/gpu_targets.py) shift; echo "$*" > "$FAKE_DIR/targets_args"
     exec "$REAL" bench/gpu_targets.py "$@" --device cpu --only epilogue --rounds 2 ;;
  -m) if [ "${2:-}" = pytest ]; then
        echo "$*" > "$FAKE_DIR/pytest_args"
        for a in "$@"; do case "$a" in --junitxml=*) junit=$a ;; esac; done
        exec "$REAL" -m pytest "$FAKE_DIR/test_fake_cuda.py" -q -p no:cacheprovider "$junit"
      fi ;;
esac
exec "$REAL" "$@"
"""

FAKE_SANITIZER = r"""#!/bin/bash
while [[ "${1:-}" == --* ]]; do shift 2; done
echo "========= COMPUTE-SANITIZER"
"$@"
rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
"""

FAKE_NCU = r"""#!/bin/bash
while [[ "${1:-}" == --* ]]; do shift 2; done
echo "  void wfkern::forward_rows_kernel<float, 8>(...) (4203, 1, 1)x(144, 1, 1), Context 1, Device 0, CC 9.0"
exec "$@"
"""


def _cpu_kernel() -> bool:
    import wfkern.ops

    return wfkern.ops._load.loaded() and torch.ops.wfkern.mask_epilogue.default.has_kernel_for_dispatch_key("CPU")


@pytest.fixture
def fake_gpu(fake_bin, tmp_path):
    if not _cpu_kernel():
        pytest.skip("wfkern._C has no CPU kernel in this build: the fake GPU runs the smoke on the CPU kernels")
    _exe(fake_bin / "python3", FAKE_PYTHON.replace("__REAL__", sys.executable))
    _exe(fake_bin / "compute-sanitizer", FAKE_SANITIZER)
    _exe(fake_bin / "ncu", FAKE_NCU)
    (tmp_path / "test_fake_cuda.py").write_text("def test_cuda_kernel_runs():\n    assert True\n")
    return fake_bin


def test_pipeline_on_a_fake_gpu(fake_gpu, tmp_path):
    out = tmp_path / "out"
    proc = _run(fake_gpu, out, timeout=240, FAKE_DIR=str(tmp_path))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert not (tmp_path / "BARE_PYTHON").exists()
    stages = _stages(out)
    assert [s for s in summary.STAGE_ORDER if stages.get(s, {}).get("status") != "ok"] == [], stages
    assert (tmp_path / "arch").read_text().strip() == "9.0"
    pytest_args = (tmp_path / "pytest_args").read_text()
    assert "-k cuda" in pytest_args and " -x" not in pytest_args and "test_gpu_check_script" not in pytest_args
    assert "--device cuda" in (tmp_path / "targets_args").read_text()
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.md", "log.txt", "bench.jsonl", "smoke.txt", "tests_cuda.xml"} <= set(files)
    # the summary is the last thing printed, and the same text is in summary.md
    tail = proc.stdout[proc.stdout.rindex("# wfkern GPU check"):]
    assert tail.startswith("# wfkern GPU check: PASS")
    assert (out / "summary.md").read_text() in proc.stdout
    assert "epilogue forward nchw" in tail
    for name in ("== device", "== build", "== backend", "---- smoke", "---- CUDA tests", "---- compute-sanitizer",
                 "== benchmarks", "---- summary"):
        assert name in (out / "log.txt").read_text(), name


def test_backend_other_than_cuda_fails(fake_gpu, tmp_path):
    out = tmp_path / "out"
    proc = _run(fake_gpu, out, FAKE_DIR=str(tmp_path), FAKE_BACKEND="cpp")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no CUDA kernel would be tested" in proc.stdout
    assert _stages(out)["backend"]["status"] == "FAIL"
    assert "smoke" not in _stages(out)


def test_tight_budget_skips_stages(fake_gpu, tmp_path):
    out = tmp_path / "out"
    # Caps below what the sanitizers (30 s) and the benchmarks (25 s) need, whatever the machine's
    # load: both are skipped for lack of time; the budget itself leaves the build room on a busy CPU, and
    # the group's 29 s leave the tests stage (one tiny pytest file) room to start on a loaded one.
    proc = _run(fake_gpu, out, FAKE_DIR=str(tmp_path), GPU_CHECK_BUDGET_S="120", FAKE_BUILD_S="2",
                GPU_CHECK_GROUP_CAP_S="29", GPU_CHECK_BENCH_CAP_S="20")
    stages = _stages(out)
    for name in ("memcheck", "racecheck", "bench"):
        assert stages[name]["status"] == "skipped" and "no time left" in stages[name]["detail"], stages[name]
    assert stages["tests"]["status"] == "ok"
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # 3: the smoke stopped at its deadline
    assert proc.stdout.rindex("# wfkern GPU check") > proc.stdout.rindex("== summary")  # the summary comes last


# ---- targets and verdicts -----------------------------------------------------------------------

SAMPLE = [
    {"kind": "meta", "gpu": "NVIDIA H100", "dtype": "bfloat16", "mode": "default"},
    {"kind": "forward", "model": "resnet18", "mode": "eager", "impl": "wf", "vs": "plain", "ratio": 1.04},
    {"kind": "forward", "model": "resnet18", "mode": "eager", "impl": "wf_ref", "vs": "plain", "ratio": 1.30},
    {"kind": "forward", "model": "resnet50", "mode": "eager", "impl": "wf", "vs": "plain", "ratio": 1.06},
    {"kind": "forward", "model": "vit_small", "mode": "compiled", "impl": "wf", "vs": "plain", "ratio": 1.05},
    {"kind": "untrain", "model": "resnet18", "impl": "wf", "vs": "floor", "ratio": 1.08, "peak_mb": 1150.0,
     "base_peak_mb": 1000.0, "mem_ratio": 1.15},
    {"kind": "untrain", "model": "resnet50", "impl": "wf", "vs": "floor", "ratio": 1.2},
    {"kind": "epilogue", "op": "forward", "layout": "nchw", "fraction": 0.9, "gbps": 2700.0},
    {"kind": "epilogue", "op": "backward", "layout": "channels_last", "fraction": 0.84, "gbps": 2500.0},
    {"kind": "error", "what": "untrain vit_small", "error": "RuntimeError: boom"},
    {"kind": "stage", "stage": "device", "status": "ok", "seconds": 3, "detail": "NVIDIA H100, sm_90"},
    {"kind": "stage", "stage": "backend", "status": "ok", "seconds": 2, "detail": "cuda"},
    {"kind": "stage", "stage": "smoke", "status": "ok", "seconds": 20, "detail": "288 ok"},
    {"kind": "stage", "stage": "tests", "status": "ok", "seconds": 80, "detail": "431 passed"},
]


def test_verdicts_against_the_targets():
    got = {(summary.describe(r), c["field"]): c["met"] for r in SAMPLE for c in summary.verdicts(r)}
    assert got == {
        ("fwd resnet18 eager: WF kernel / plain", "ratio"): True,  # 1.04 <= 1.05
        ("fwd resnet50 eager: WF kernel / plain", "ratio"): False,  # 1.06
        ("fwd vit_small compiled: WF kernel / plain", "ratio"): True,  # 1.05, the bound itself
        ("untrain resnet18: WF kernel / floor", "ratio"): True,  # 1.08 <= 1.10
        ("untrain resnet18: WF kernel / floor", "mem_ratio"): False,  # 1.15 > 1.10
        ("untrain resnet50: WF kernel / floor", "ratio"): False,  # 1.2
        ("untrain resnet50: WF kernel / floor", "mem_ratio"): None,  # not measured
        ("epilogue forward nchw", "fraction"): True,  # 90% >= 85%
        ("epilogue backward channels_last", "fraction"): False,  # 84%
    }
    assert summary.verdicts(SAMPLE[2]) == []  # the reference has no target


def test_summary_reads_a_sample_jsonl(tmp_path):
    with open(tmp_path / "bench.jsonl", "w") as f:
        for rec in SAMPLE:
            f.write(json.dumps(rec) + "\n")
        f.write('{"kind": "forward", "torn line')  # a writer killed mid-line
    text, code = summary.summarize(str(tmp_path), total_s=300)
    assert code == 0  # missed targets are reported, not failures; no stage failed
    assert text.startswith("# wfkern GPU check: PASS (300 s)")
    assert "targets: 4 met, 4 missed of 9" in text
    assert "| fwd resnet50 eager: WF kernel / plain | 1.060x | <= 1.05x | MISSED |" in text
    assert "| untrain resnet18: WF kernel / floor peak memory | 1.150x (1150 vs 1000 MB) | <= 1.10x | MISSED |" in text
    assert "| epilogue forward nchw | 90% (2700 GB/s) | >= 85% | met |" in text
    assert "ERROR" in text and "boom" in text
    assert summary.classify_bench(summary.read_jsonl(str(tmp_path / "bench.jsonl")), 0, False)[0] == "FAIL"


def test_overall_exit_codes():
    ok = {"device": {"status": "ok"}, "backend": {"status": "ok"}, "smoke": {"status": "ok"}, "tests": {"status": "ok"}}
    assert summary.overall(ok)[0] == 0
    assert summary.overall({**ok, "memcheck": {"status": "incomplete"}})[0] == 0  # reported, not a failure
    assert summary.overall({**ok, "tests": {"status": "incomplete"}})[0] == 3
    assert summary.overall({**ok, "racecheck": {"status": "FAIL"}})[0] == 1
    assert summary.overall({"device": {"status": "FAIL"}})[0] == 2


def test_classify_sanitizer():
    smoke_ok = "gpu_smoke: 28 ok, 0 FAIL, 3 skipped, 0 info\n"
    clean = "========= COMPUTE-SANITIZER\n" + smoke_ok + "========= ERROR SUMMARY: 0 errors\n"
    assert summary.classify_sanitizer(clean, 0, False)[0] == "ok"
    bad = ("========= Invalid __global__ read of size 16 bytes\n=========     at mask_fwd_kernel\n" + smoke_ok +
           "========= ERROR SUMMARY: 3 errors\n")
    status, detail = summary.classify_sanitizer(bad, 86, False)
    assert status == "FAIL" and "3 errors" in detail and "Invalid __global__ read" in detail
    refused = "========= Error: Target application terminated before first instrumented API call\n"
    status, detail = summary.classify_sanitizer(refused, 1, False)
    assert status == "incomplete" and "did not complete" in detail and "first instrumented" in detail
    assert summary.classify_sanitizer("========= COMPUTE-SANITIZER\nok   ops ...\n", 124, True)[0] == "incomplete"
    races = clean.replace("ERROR SUMMARY: 0 errors",
                          "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n========= ERROR SUMMARY: 0 errors")
    assert "racecheck: 0 hazards" in summary.classify_sanitizer(races, 0, False)[1]
    # what racecheck really prints (seen on an H200): a RACECHECK SUMMARY and no ERROR SUMMARY
    race_only = "========= COMPUTE-SANITIZER\n" + smoke_ok + "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
    assert summary.classify_sanitizer(race_only, 0, False)[0] == "ok"
    smoke_failed = clean.replace("0 FAIL", "2 FAIL")
    assert summary.classify_sanitizer(smoke_failed, 1, False)[0] == "FAIL"


def test_classify_smoke_and_tests(tmp_path):
    assert summary.classify_smoke("ok   a\ngpu_smoke: 1 ok, 0 FAIL, 0 skipped, 0 info\n", 0, False)[0] == "ok"
    status, detail = summary.classify_smoke("FAIL ops fp32 nchw: fwd: rel err\ngpu_smoke: 1 ok, 1 FAIL, 0 skipped, 0 info",
                                            1, False)
    assert status == "FAIL" and "ops fp32 nchw" in detail
    stopped = "gpu_smoke: 5 ok, 0 FAIL, 200 skipped, 0 info (skipped: no time left)"
    assert summary.classify_smoke(stopped, 3, False)[0] == "incomplete"
    assert summary.classify_smoke("ok   a\n", 124, True)[0] == "incomplete"
    assert summary.classify_smoke("gpu_smoke: no CUDA GPU is visible to torch\n", 2, False)[0] == "FAIL"

    junit = tmp_path / "t.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_ops" name="test_a[cuda]"/>'
        '<testcase classname="tests.test_ops" name="test_b[cuda]"><failure message="AssertionError: off">x</failure>'
        '</testcase><testcase classname="tests.test_ops" name="test_c[cuda]"><skipped/></testcase>'
        '<testcase classname="tests.test_ops" name="test_d[cuda]"/></testsuite></testsuites>')
    counts = summary.junit_counts(str(junit))
    assert counts["tests"] == 4 and counts["failed"] == ["tests.test_ops::test_b[cuda]: AssertionError: off"]
    assert summary.classify_tests(counts, "", 1, False) == (
        "FAIL", "2 passed, 1 failed, 0 errors, 1 skipped; first: tests.test_ops::test_b[cuda]: AssertionError: off")
    all_skipped = dict(tests=3, failures=0, errors=0, skipped=3, failed=[])
    assert summary.classify_tests(all_skipped, "", 0, False)[0] == "FAIL"  # no CUDA test ran
    assert summary.classify_tests(None, "", 124, True)[0] == "incomplete"


# ---- setup.py: the toolkit behind an nvcc on PATH -----------------------------------------------

def _find_cuda_home():
    tree = ast.parse((ROOT / "setup.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_find_cuda_home")
    namespace = {"os": os, "glob": glob}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "setup.py", "exec"), namespace)  # no setup() call
    return namespace["_find_cuda_home"]


def _toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    _exe(root / "bin" / "nvcc", "#!/bin/sh\n")
    return root


def test_find_cuda_home_from_nvcc_on_path(tmp_path, monkeypatch):
    find = _find_cuda_home()
    toolkit = _toolkit(tmp_path / "opt" / "cuda-13.0")
    wrapper_dir = tmp_path / "usr_local" / "bin"  # like /usr/local/bin/nvcc: a script, no headers nearby
    wrapper_dir.mkdir(parents=True)
    _exe(wrapper_dir / "nvcc", f"#!/bin/sh\nexec {toolkit}/bin/nvcc \"$@\"\n")
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    none = dict(default_homes=(str(tmp_path / "absent"),), versioned_glob=str(tmp_path / "nothing-*"))

    monkeypatch.setenv("PATH", f"{wrapper_dir}{os.pathsep}{link_dir}")
    assert find(**none) == str(toolkit)  # the wrapper is passed over, the symlink resolved
    monkeypatch.setenv("PATH", str(wrapper_dir))
    assert find(**none) is None
    monkeypatch.setenv("PATH", str(toolkit / "bin"))
    assert find(**none) == str(toolkit)

    default = _toolkit(tmp_path / "usr_local_cuda")
    assert find(default_homes=(str(default),), versioned_glob=none["versioned_glob"]) == str(default)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "not_a_toolkit"))
    monkeypatch.setenv("PATH", "")
    old, new = _toolkit(tmp_path / "v" / "cuda-12.9"), _toolkit(tmp_path / "v" / "cuda-12.10")
    assert find(default_homes=(), versioned_glob=str(tmp_path / "v" / "cuda-*")) == str(new)
    monkeypatch.setenv("CUDA_HOME", str(old))
    assert find(**none) == str(old)


# ---- the smoke script and the harness on the CPU ------------------------------------------------

def test_smoke_quick_cpu_kernels_match_the_reference():
    if not _cpu_kernel():
        pytest.skip("wfkern._C has no CPU kernel in this build")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--quick", "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " 0 FAIL" in proc.stdout.splitlines()[-1]


def test_harness_plan_and_ratio():
    targets = _load("gpu_targets")
    args = targets.argparse.Namespace(models=None, only=None, full=False)
    default = targets.plan(args)
    assert default[:2] == [("epilogue", "nchw"), ("epilogue", "channels_last")]
    assert {k for k, _ in default} == {"epilogue", "forward", "untrain"}
    full = targets.plan(targets.argparse.Namespace(models=None, only=None, full=True))
    assert full[:len(default)] == default  # the extra variants come after every default one
    assert ("compiled", "resnet18") in full and ("materialized", "resnet50") not in full
    times = {"plain": [1.0, 2.0, 1.0], "wf": [1.1, 2.0, 3.0]}
    assert targets.median_ratio(times, "wf", "plain") == pytest.approx(1.1)  # median of 1.1, 1.0, 3.0


def test_profile_comparison_puts_the_most_extra_time_first_and_sums_per_forward():
    gpu_profile = _load("gpu_profile")
    plain = {"conv": (2.0, 100.0), "relu": (2.0, 10.0)}
    wf = {"conv": (2.0, 101.0), "relu": (2.0, 10.0), "fused_rows": (4.0, 20.0)}
    lines = gpu_profile.compare_kernels(plain, wf, rows=10)
    assert [line.split()[0] for line in lines[1:-1]] == ["fused_rows", "conv", "relu"]
    assert lines[1].split()[1:] == ["0", "0.0", "4", "20.0", "20.0"]  # only the WF forward runs it
    assert lines[-1] == "per forward: plain 4 calls, 110.0 us; wf 8 calls, 131.0 us (wf/plain 1.191x)"
    assert len(gpu_profile.compare_kernels(plain, wf, rows=1)) == 3  # header, one kernel, totals


def test_profile_kernel_totals_count_per_profiled_call():
    gpu_profile = _load("gpu_profile")
    from torch.profiler import ProfilerActivity, profile

    x = torch.ones(8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):  # three profiled calls, each two adds and one mul
            torch.mul(torch.add(torch.add(x, 1), 1), 2)
    totals = gpu_profile.kernel_totals(prof, "cpu", reps=3)
    assert totals["aten::add"][0] == 2 and totals["aten::mul"][0] == 1
    assert all(micros >= 0 for _, micros in totals.values())


def test_profile_kernel_totals_merge_names_that_differ_by_a_graph_hash_or_frame():
    gpu_profile = _load("gpu_profile")

    class Event:
        def __init__(self, key, count, micros):
            self.key, self.count, self.self_cpu_time_total = key, count, micros

    class Profile:
        def __init__(self, events):
            self.events = events

        def key_averages(self):
            return self.events

    events = [Event("## Call CompiledFxGraph fybvr6l65orb ##", 1, 10.0), Event("## Call CompiledFxGraph c0ffee ##", 1, 5.0),
              Event("Torch-Compiled Region: 1/0", 2, 4.0), Event("Torch-Compiled Region: 0/0", 2, 2.0)]
    assert gpu_profile.kernel_totals(Profile(events), "cpu", reps=2) == {
        "## Call CompiledFxGraph ##": (1.0, 7.5), "Torch-Compiled Region": (2.0, 3.0)}
