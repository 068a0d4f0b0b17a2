#!/usr/bin/env bash
# One-shot check on a GPU machine with no network (torch, torchvision, timm, pytest and
# pytest-benchmark preinstalled): build in place for the visible GPU, run the CUDA tests and
# opcheck on CUDA, run the CUDA benchmarks, print the summary table. Logs and JSON go to $OUT
# (default ./gpu_check_out). Installs nothing. Budget: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
status=0
step() { echo; echo "== $* ($(date +%T))"; }

step "device"
if ! timeout 60 "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible to torch here; nothing to check (run this on a GPU machine)" >&2
  exit 2
fi
nvidia-smi -L 2>/dev/null | tee "$OUT/device.txt"
ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")

step "build wfkern._C in place for sm_$ARCH"
if ! (time TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" timeout 240 "$PY" setup.py build_ext --inplace) \
    > "$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log"; echo "gpu_check: build failed (log: $OUT/build.log)" >&2; exit 1
fi
grep "wfkern setup:" "$OUT/build.log"
"$PY" -c "import wfkern; print(wfkern.describe_backend())" | tee "$OUT/backend.txt"

step "CUDA tests (kernels vs reference, gradcheck, opcheck, compile, models)"
timeout 200 "$PY" -m pytest tests/test_ops_mask_epilogue.py tests/test_patch.py -q -x -p no:cacheprovider \
  -k "cuda" --junitxml="$OUT/tests_cuda.xml" 2>&1 | tail -n 25 | tee "$OUT/tests_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "CUDA benchmarks"
timeout 300 "$PY" -m pytest bench -q -p no:cacheprovider --benchmark-only --bench-device cuda \
  --benchmark-json="$OUT/bench_cuda.json" > "$OUT/bench_cuda.log" 2>&1
bench_rc=$?
tail -n 5 "$OUT/bench_cuda.log"
[ "$bench_rc" -eq 0 ] || status=1

step "summary"
if [ -f "$OUT/bench_cuda.json" ]; then
  "$PY" bench/summary.py "$OUT/bench_cuda.json" --markdown | tee "$OUT/summary.md"
fi
echo "gpu_check: done with status $status (artifacts in $OUT)"
exit "$status"
