#!/usr/bin/env bash
# One-shot check on a GPU machine with no network (torch, torchvision, timm, pytest, pytest-timeout,
# nvcc and compute-sanitizer preinstalled; nothing is installed). From the repository root:
#
#   bash bench/gpu_check.sh           # build, CUDA smoke + compute-sanitizer + CUDA tests, eager benchmarks
#   bash bench/gpu_check.sh --full    # (or WFKERN_GPU_FULL=1) also the compiled and materialised benchmarks
#
# Stages: device facts; build wfkern._C in place for the visible arch; a check that
# wfkern.backend() is "cuda" (else FAIL: no CUDA kernel would be tested); then in parallel
# compute-sanitizer memcheck (then racecheck) on bench/gpu_smoke.py --quick, the native smoke
# bench/gpu_smoke.py, and the CUDA pytest selection; then a profile (bench/gpu_profile.py: ncu on
# the epilogue kernels, torch.profiler tables of two forwards); then bench/gpu_targets.py; then the summary
# (printed last, also $OUT/summary.md).
#
# Deadline: GPU_CHECK_BUDGET_S (default 380 s) for the whole run. Every stage gets
# min(its cap, time left - GPU_CHECK_RESERVE_S (15 s, the summary)) and is recorded as
# "skipped: no time left" when that is too little. Results go to $OUT (default ./gpu_check_out), at
# most 8 files: summary.md log.txt build.log smoke.txt sanitizer.txt tests_cuda.xml bench.jsonl profile.txt
# (bench.jsonl: one JSON line per benchmark result and per finished stage, written as they happen).
#
# Exit: 0 pass; 1 a failure; 2 nothing to check (no GPU, no python, no torch); 3 incomplete (the
# smoke or the tests ran out of time). Missed performance targets are reported, not failures.
#
# Knobs: PYTHON (default python3, else python), GPU_CHECK_BUDGET_S, GPU_CHECK_RESERVE_S,
# GPU_CHECK_BUILD_CAP_S (240), GPU_CHECK_GROUP_CAP_S (150; 130 with --full), GPU_CHECK_BENCH_MIN_S
# (90; 150 with --full: time kept for the benchmarks), GPU_CHECK_BENCH_CAP_S (300), GPU_CHECK_SKIP
# (comma list of sanitizer, racecheck, smoke, tests, profile, bench; --full skips racecheck),
# GPU_CHECK_PROFILE_CAP_S (80), GPU_CHECK_MODELS
# ("resnet18 resnet50 vit_small"). The opt-in build switches (WFKERN_LABEL_SCATTER=1, WFKERN_FUSED_TABLE=1) reach
# the build from the environment; its "wfkern setup:" lines in log.txt say which were on.
set -uo pipefail

START=$(date +%s)
case "${WFKERN_GPU_FULL:-0}" in 0 | "" | no | false) FULL=0 ;; *) FULL=1 ;; esac
for arg in "$@"; do
  case "$arg" in
    --full) FULL=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$arg' (the only one is --full)" >&2; exit 64 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET_S:-380}
RESERVE=${GPU_CHECK_RESERVE_S:-15}
SKIP=",${GPU_CHECK_SKIP:-}$([ "$FULL" = 1 ] && [ "${GPU_CHECK_RACECHECK:-0}" != 1 ] && echo ",racecheck"),"
MODELS=${GPU_CHECK_MODELS:-resnet18 resnet50 vit_small}

LOG=$OUT/log.txt
JSONL=$OUT/bench.jsonl
rm -f "$OUT"/{summary.md,build.log,smoke.txt,sanitizer.txt,tests_cuda.xml,profile.txt}
: > "$LOG"
: > "$JSONL"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wfkern_gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/stages.txt"
FAILED=0

# ---- helpers ------------------------------------------------------------------------------------
now() { date +%s; }
elapsed() { echo $(($(now) - START)); }
left() { echo $((BUDGET - RESERVE - $(elapsed))); }
cap() { # the seconds a stage may use: min(its cap, time left), never negative
  local c=$1 l
  l=$(left)
  ((l < c)) && c=$l
  ((c < 0)) && c=0
  echo "$c"
}
skipping() { [[ "$SKIP" == *",$1,"* ]]; }
say() { printf '%s\n' "$*"; printf '%s\n' "$*" >> "$LOG"; }
section() { say ""; say "== $* [t=$(elapsed)s of ${BUDGET}s, $(date -u +%T) UTC]"; }
append_log() { { printf '\n---- %s ----\n' "$1"; cat "$2" 2>/dev/null; } >> "$LOG"; }
json_str() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013-\037' | tr '\n\t' '  ')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
record() { # stage status seconds detail: a line in bench.jsonl and on screen
  printf '{"kind": "stage", "stage": %s, "status": %s, "seconds": %s, "detail": %s, "mode": %s}\n' \
    "$(json_str "$1")" "$(json_str "$2")" "${3:-0}" "$(json_str "$4")" \
    "$(json_str "$([ "$FULL" = 1 ] && echo full || echo default)")" >> "$JSONL"
  printf '%-10s %-10s %4ss  %s\n' "$1" "$2" "${3:-0}" "$4" >> "$WORK/stages.txt"
  say "$(printf -- '-> %-10s %-10s %4ss  %s' "$1" "$2" "${3:-0}" "$4")"
  [ "$2" = FAIL ] && FAILED=1
  return 0
}
classify() { # kind rc seconds [args for gpu_summary.py classify]: record the stage's verdict
  local kind=$1 rc=$2 secs=$3 line status detail
  shift 3
  local timed=()
  { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && timed=(--timed-out)
  line=$("$PY" bench/gpu_summary.py classify "$kind" --rc "$rc" ${timed[@]+"${timed[@]}"} "$@" 2>&1 | tail -n 1)
  status=${line%%$'\t'*}
  detail=${line#*$'\t'}
  case "$status" in ok | FAIL | incomplete | skipped) ;; *) status=FAIL detail="could not classify (exit $rc): $line" ;; esac
  record "$kind" "$status" "$secs" "$detail"
}
finish() { # [exit code]: the summary, printed last; exit with the given code or the summary's verdict
  local code=${1:-} summary_rc
  section "summary"
  say "stage results above; log: $LOG"
  if "$PY" bench/gpu_summary.py summary "$OUT" --total-s "$(elapsed)" > "$WORK/summary.txt" 2>&1; then
    summary_rc=0
  else
    summary_rc=$?
  fi
  if ! grep -q "^# wfkern GPU check" "$WORK/summary.txt"; then # the summary script itself failed
    { echo "# wfkern GPU check (fallback summary: bench/gpu_summary.py failed)"; echo; cat "$WORK/stages.txt"
      echo; cat "$WORK/summary.txt"; } > "$OUT/summary.md"
    cp "$OUT/summary.md" "$WORK/summary.txt"
    summary_rc=$([ "$FAILED" = 1 ] && echo 1 || echo 3)
  fi
  [ -n "$code" ] || code=$summary_rc
  [ "$FAILED" = 1 ] && [ "$code" = 0 ] && code=1
  append_log "summary" "$WORK/summary.txt"
  local f
  for f in "$OUT"/*; do # at most 16 MiB a file comes back: keep the head and the tail of a huge log
    [ -f "$f" ] && [ "${f%.xml}" = "$f" ] && (($(wc -c < "$f") > 15000000)) || continue
    { head -c 7000000 "$f"; printf '\n\n... [cut by gpu_check.sh: %s bytes in all] ...\n\n' "$(wc -c < "$f")"
      tail -c 7000000 "$f"; } > "$WORK/cut" && mv "$WORK/cut" "$f"
  done
  local files
  files=$(cd "$OUT" && ls -A | tr '\n' ' ')
  echo
  cat "$WORK/summary.txt"
  echo "gpu_check: exit $code after $(elapsed)s; files in $OUT: $files"
  exit "$code"
}

# ---- python ---------------------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif command -v python3 > /dev/null 2>&1; then
  PY=python3
elif command -v python > /dev/null 2>&1; then
  PY=python
else
  say "gpu_check: neither python3 nor python is on PATH (set PYTHON=/path/to/python)"
  echo "# wfkern GPU check: no python" > "$OUT/summary.md"
  exit 2
fi
if ! command -v "$PY" > /dev/null 2>&1; then
  say "gpu_check: PYTHON='$PY' is not an executable"
  echo "# wfkern GPU check: no python ($PY)" > "$OUT/summary.md"
  exit 2
fi
PY=$(command -v "$PY") # a path: compute-sanitizer is handed it too
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# ---- device facts ---------------------------------------------------------------------------------
section "device (mode $([ "$FULL" = 1 ] && echo full || echo default), budget ${BUDGET}s, python $PY)"
t0=$(now)
timeout 120 "$PY" - > "$WORK/device.txt" 2>&1 << 'EOF'
import sys
try:
    import torch
except Exception as err:  # reported, then exit 4
    print(f"torch import failed: {type(err).__name__}: {err}")
    sys.exit(4)
print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")
if not torch.cuda.is_available():
    print("torch.cuda.is_available(): False")
    sys.exit(3)
p = torch.cuda.get_device_properties(0)
print(f"device 0: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
      f"{p.multi_processor_count} SMs; {torch.cuda.device_count()} visible")
print(f"ARCH={p.major}.{p.minor}")
print(f"FACTS={p.name}, sm_{p.major}{p.minor}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"python {sys.version.split()[0]}")
EOF
rc=$?
{
  echo "nvidia-smi -L:"
  if command -v nvidia-smi > /dev/null; then nvidia-smi -L 2>&1; else echo "(nvidia-smi not on PATH)"; fi
  echo "nvcc: $(command -v nvcc || echo 'not on PATH') $(nvcc --version 2>/dev/null | tail -n 1)"
  echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not on PATH')"
  echo "cores: $(nproc 2>/dev/null)"
  "$PY" -c 'import importlib.util as u; print("modules:", ", ".join(f"{m}={u.find_spec(m) is not None}" for m in ("setuptools", "ninja", "pytest", "pytest_timeout", "timm", "torchvision")))' 2>&1
  command -v ninja > /dev/null && echo "ninja: $(command -v ninja)"
} >> "$WORK/device.txt" 2>&1
cat "$WORK/device.txt" | tee -a "$LOG" | grep -v -e '^ARCH=' -e '^FACTS='
if [ "$rc" = 3 ]; then
  say "gpu_check: no CUDA GPU is visible to torch here; nothing to check (run this on a GPU machine)"
  record device FAIL $(($(now) - t0)) "no CUDA GPU is visible to torch ($PY)"
  finish 2
elif [ "$rc" != 0 ]; then
  say "gpu_check: $PY could not report the device (exit $rc): $(tail -n 1 "$WORK/device.txt")"
  record device FAIL $(($(now) - t0)) "$(head -n 1 "$WORK/device.txt")"
  finish 2
fi
ARCH=$(sed -n 's/^ARCH=//p' "$WORK/device.txt")
record device ok $(($(now) - t0)) "$(sed -n 's/^FACTS=//p' "$WORK/device.txt")"

# ---- build ----------------------------------------------------------------------------------------
section "build wfkern._C in place for sm_${ARCH/./} (log: build.log)"
c=$(cap "${GPU_CHECK_BUILD_CAP_S:-240}")
if ((c < 30)); then
  record build skipped 0 "skipped: no time left (${c}s)"
  finish 3
fi
t0=$(now)
# The system compiler: on one GPU image CC/CXX named a gcc whose build of the extension crashed
# whenever a C++ error message formatted an integer (a libstdc++ mismatch; bench/gpu_probe_errors.py).
if [ -z "${GPU_CHECK_KEEP_CC:-}" ] && [ -x /usr/bin/gcc ] && [ -x /usr/bin/g++ ]; then
  export CC=/usr/bin/gcc CXX=/usr/bin/g++
fi
say "compilers: CC=${CC:-(default)} CXX=${CXX:-(default)}: $("${CXX:-c++}" --version 2>/dev/null | head -n 1)"
TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" WFKERN_CUDA=1 \
  timeout -s INT -k 10 "$c" "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1
rc=$?
secs=$(($(now) - t0))
grep "wfkern setup:" "$OUT/build.log" | sort -u | tee -a "$LOG"
tail -n 40 "$OUT/build.log" > "$WORK/build_tail.txt"
append_log "build.log, last 40 lines" "$WORK/build_tail.txt"
if [ "$rc" != 0 ]; then
  tail -n 30 "$OUT/build.log"
  what="exit $rc"
  { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && what="timed out after ${c}s"
  record build FAIL "$secs" "$what; last line: $(grep -v '^\s*$' "$OUT/build.log" | tail -n 1)"
  finish 1
fi
record build ok "$secs" "$(grep -m 1 'wfkern setup: building CUDA' "$OUT/build.log" | sed 's/.*wfkern setup: //')"

# ---- backend: a CUDA kernel must be what runs -----------------------------------------------------
section "backend"
t0=$(now)
timeout 120 "$PY" -c 'import wfkern; print(wfkern.backend()); print(wfkern.describe_backend())' \
  > "$WORK/backend.txt" 2>&1
rc=$?
tee -a "$LOG" < "$WORK/backend.txt"
backend=$(grep -m 1 -x -E 'cuda|cpp|reference' "$WORK/backend.txt")
if [ "$rc" != 0 ] || [ "$backend" != cuda ]; then
  record backend FAIL $(($(now) - t0)) "wfkern.backend() is '${backend:-?}' (exit $rc), not 'cuda': no CUDA kernel would be tested; $(grep -m 1 'compiled core' "$WORK/backend.txt")"
  finish 1
fi
record backend ok $(($(now) - t0)) "cuda"

# ---- in parallel: sanitizer | smoke | CUDA tests --------------------------------------------------
bench_min=${GPU_CHECK_BENCH_MIN_S:-$([ "$FULL" = 1 ] && echo 150 || echo 90)}
skipping bench && bench_min=0
l=$(left)
gcap=${GPU_CHECK_GROUP_CAP_S:-$([ "$FULL" = 1 ] && echo 130 || echo 150)}
((gcap > l - bench_min)) && gcap=$((l - bench_min))
floor=$((l < 60 ? l : 60)) # correctness first: at least a minute when there is one, within the group's cap
((floor > ${GPU_CHECK_GROUP_CAP_S:-$floor})) && floor=$GPU_CHECK_GROUP_CAP_S
((gcap < floor)) && gcap=$floor
section "in parallel for up to ${gcap}s: compute-sanitizer | smoke | CUDA tests"
group_end=$(($(now) + gcap))

find_cuda_tool() { # name: its path from PATH or the toolkit, else fail
  local c
  for c in "$(command -v "$1" 2> /dev/null)" "/usr/local/cuda/bin/$1" "/usr/local/cuda/compute-sanitizer/$1" \
    "${CUDA_HOME:-/nonexistent}/bin/$1"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

sanitizer_stage() { # runs in the background: memcheck, then racecheck if the group has time left
  local san tool c t0 rc
  if ! san=$(find_cuda_tool compute-sanitizer); then
    echo "skipped 0 compute-sanitizer not found (PATH, /usr/local/cuda)" > "$WORK/memcheck.pre"
    echo "skipped 0 compute-sanitizer not found (PATH, /usr/local/cuda)" > "$WORK/racecheck.pre"
    return
  fi
  for tool in memcheck racecheck; do
    c=$((group_end - $(now)))
    if skipping "$tool"; then
      echo "skipped 0 off (GPU_CHECK_SKIP or --full)" > "$WORK/$tool.pre"
      continue
    fi
    [ "$tool" = memcheck ] && ((c > 120)) && c=120
    [ "$tool" = racecheck ] && ((c > 60)) && c=60
    if ((c < 30)); then
      echo "skipped 0 skipped: no time left (${c}s)" > "$WORK/$tool.pre"
      continue
    fi
    t0=$(now)
    (
      # memcheck sees a tensor's bounds only when every tensor is its own cudaMalloc
      if [ "$tool" = memcheck ]; then export PYTORCH_NO_CUDA_MEMORY_CACHING=1; fi
      timeout -s INT -k 10 "$c" "$san" --tool "$tool" --error-exitcode 86 --print-limit 30 \
        --target-processes application-only "$PY" bench/gpu_smoke.py --quick --deadline-s $((c > 40 ? c - 20 : 20))
    ) > "$WORK/$tool.txt" 2>&1
    rc=$?
    echo "$rc $(($(now) - t0))" > "$WORK/$tool.rc"
  done
}

pids=()
if skipping sanitizer; then
  echo "skipped 0 off (GPU_CHECK_SKIP)" > "$WORK/memcheck.pre"
  echo "skipped 0 off (GPU_CHECK_SKIP)" > "$WORK/racecheck.pre"
else
  sanitizer_stage &
  pids+=($!)
fi
if ! skipping smoke; then
  (
    t0=$(now)
    timeout -s INT -k 10 "$gcap" "$PY" bench/gpu_smoke.py --deadline-s $((gcap > 35 ? gcap - 25 : gcap / 3)) > "$OUT/smoke.txt" 2>&1
    echo "$? $(($(now) - t0))" > "$WORK/smoke.rc"
  ) &
  pids+=($!)
fi
if ! skipping tests; then
  tests=(tests/test_ops_mask_epilogue.py tests/test_patch.py tests/test_ops_gated_linear.py)
  for f in tests/test_*cuda*.py tests/test_*gpu*.py; do # test_gpu_check_script.py tests this script on a CPU
    [ -e "$f" ] && [ "$f" != tests/test_gpu_check_script.py ] && tests+=("$f")
  done
  per_test=$((gcap / 2 < 120 ? gcap / 2 : 120))
  timeout_args=()
  if "$PY" -c 'import pytest_timeout' > /dev/null 2>&1; then
    timeout_args=(--timeout="$per_test" --timeout-method=signal)
  else
    say "note: pytest-timeout is not installed: a hanging test ends the whole test stage"
  fi
  say "tests: ${tests[*]} -k cuda ${timeout_args[*]:-}"
  (
    t0=$(now)
    timeout -s INT -k 15 "$gcap" "$PY" -m pytest "${tests[@]}" -k cuda -q -rfE --tb=short -p no:cacheprovider \
      ${timeout_args[@]+"${timeout_args[@]}"} --junitxml="$OUT/tests_cuda.xml" > "$WORK/tests.txt" 2>&1
    echo "$? $(($(now) - t0))" > "$WORK/tests.rc"
  ) &
  pids+=($!)
fi
((${#pids[@]})) && wait "${pids[@]}"

for tool in memcheck racecheck; do
  if [ -f "$WORK/$tool.rc" ]; then
    read -r rc secs < "$WORK/$tool.rc"
    classify "$tool" "$rc" "$secs" --log "$WORK/$tool.txt"
  elif [ -f "$WORK/$tool.pre" ]; then
    read -r st secs detail < "$WORK/$tool.pre"
    record "$tool" "$st" "$secs" "$detail"
  fi
done
{
  for tool in memcheck racecheck; do
    [ -f "$WORK/$tool.txt" ] || continue
    echo "==== compute-sanitizer --tool $tool python bench/gpu_smoke.py --quick (exit $(cut -d' ' -f1 "$WORK/$tool.rc"))"
    if (($(wc -l < "$WORK/$tool.txt") > 700)); then
      head -n 500 "$WORK/$tool.txt"; echo "... ($(wc -l < "$WORK/$tool.txt") lines; middle cut) ..."; tail -n 150 "$WORK/$tool.txt"
    else
      cat "$WORK/$tool.txt"
    fi
  done
} > "$OUT/sanitizer.txt"
if [ -s "$OUT/sanitizer.txt" ]; then append_log "compute-sanitizer (sanitizer.txt)" "$OUT/sanitizer.txt"; else rm -f "$OUT/sanitizer.txt"; fi
if [ -f "$WORK/smoke.rc" ]; then
  read -r rc secs < "$WORK/smoke.rc"
  classify smoke "$rc" "$secs" --log "$OUT/smoke.txt"
  append_log "smoke (smoke.txt)" "$OUT/smoke.txt"
else
  record smoke skipped 0 "off (GPU_CHECK_SKIP)"
fi
if [ -f "$WORK/tests.rc" ]; then
  read -r rc secs < "$WORK/tests.rc"
  classify tests "$rc" "$secs" --junit "$OUT/tests_cuda.xml" --log "$WORK/tests.txt"
  append_log "CUDA tests (pytest ${tests[*]} -k cuda)" "$WORK/tests.txt"
else
  record tests skipped 0 "off (GPU_CHECK_SKIP)"
fi

# ---- profile: hardware counters of the epilogue kernels, kernel tables of two model forwards ----
# Informational: a refused or failed profiler makes the stage "incomplete", never the check.
section "profile (bench/gpu_profile.py: ops under ncu, then calls and models under torch.profiler; profile.txt)"
c=$(cap "${GPU_CHECK_PROFILE_CAP_S:-80}")
if skipping profile; then
  record profile skipped 0 "off (GPU_CHECK_SKIP)"
elif ((c < 30)); then
  record profile skipped 0 "skipped: no time left (${c}s)"
else
  t0=$(now)
  ncu_rc=none
  {
    if ncu_bin=$(find_cuda_tool ncu); then
      echo "==== $ncu_bin (SpeedOfLight, Occupancy, LaunchStats) python bench/gpu_profile.py ops"
      timeout -s INT -k 10 $((c / 2)) "$ncu_bin" --target-processes all \
        --kernel-name "regex:forward_|fused_|backward_|gate_table|reduce_tiles|label_counts|sigmoid_factor|copy" \
        --section SpeedOfLight --section Occupancy --section LaunchStats "$PY" bench/gpu_profile.py ops
      ncu_rc=$?
      echo "(ncu exit $ncu_rc)"
    else
      echo "ncu not found (PATH, /usr/local/cuda/bin)"
    fi
    echo
    echo "==== torch.profiler: python bench/gpu_profile.py calls, then models --models vit_small resnet18"
    timeout -s INT -k 10 30 "$PY" bench/gpu_profile.py calls --shapes nchw_98MiB channels_last_98MiB --rows 10
    echo "(calls exit $?)"
    timeout -s INT -k 10 $((c - ($(now) - t0) > 20 ? c - ($(now) - t0) : 20)) \
      "$PY" bench/gpu_profile.py models --models vit_small resnet18
    echo "(models exit $?)"
  } > "$OUT/profile.txt" 2>&1
  models_rc=$(sed -n 's/^(models exit \([0-9]*\))$/\1/p' "$OUT/profile.txt")
  ncu_kernels=$(grep -c -E '^  [A-Za-z_].*\(([0-9]+, ){2}[0-9]+\)x\(' "$OUT/profile.txt")
  detail="ncu exit $ncu_rc ($ncu_kernels kernels profiled), models exit ${models_rc:-?}"
  grep -q -m 1 "ERR_NVGPUCTRPERM" "$OUT/profile.txt" && detail="$detail; ncu: no permission for the counters"
  if [ "$ncu_rc" = 0 ] && [ "${models_rc:-1}" = 0 ]; then
    record profile ok $(($(now) - t0)) "$detail"
  else
    record profile incomplete $(($(now) - t0)) "$detail"
  fi
  append_log "profile (profile.txt), first 60 lines" <(head -n 60 "$OUT/profile.txt")
fi

# ---- benchmarks -----------------------------------------------------------------------------------
section "benchmarks (bench/gpu_targets.py$([ "$FULL" = 1 ] && echo ' --full'))"
c=$(cap "${GPU_CHECK_BENCH_CAP_S:-300}")
if skipping bench; then
  record bench skipped 0 "off (GPU_CHECK_SKIP)"
elif ((c < 25)); then
  record bench skipped 0 "skipped: no time left (${c}s)"
else
  t0=$(now)
  full_args=()
  [ "$FULL" = 1 ] && full_args=(--full)
  # shellcheck disable=SC2086  # MODELS is a word list
  timeout -s INT -k 10 "$c" "$PY" bench/gpu_targets.py --device cuda --out "$JSONL" --deadline-s $((c - 12)) \
    ${full_args[@]+"${full_args[@]}"} --models $MODELS 2>&1 | tee "$WORK/bench.txt"
  rc=${PIPESTATUS[0]}
  append_log "benchmarks" "$WORK/bench.txt"
  classify bench "$rc" $(($(now) - t0)) --jsonl "$JSONL" --log "$WORK/bench.txt"
fi

finish
