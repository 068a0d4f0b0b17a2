#!/usr/bin/env bash
# The README's comparison on the embedded digits, every command at its defaults: train, untrain every class
# in one round, the six single-class baselines on classes 0, 3 and 8, evaluate each, one report.
# Usage: bash python/compare_digits.sh [OUT_DIR]   (default runs/compare; needs `wfkern` on PATH, e.g. .venv/bin)
set -euo pipefail
D=${1:-runs/compare}
mkdir -p "$D"
wfkern train --out "$D/model.safetensors" --no-progress
wfkern unlearn --checkpoint "$D/model.safetensors" --out-dir "$D/wf" --no-progress
wfkern evaluate --checkpoint "$D/model.safetensors" --filters "$D/wf/filters.safetensors" --out "$D/eval_wf" --no-progress
results=("$D/eval_wf")
for m in retrain ft ssd salun random-labels neg-grad; do
  wfkern baseline --method "$m" --checkpoint "$D/model.safetensors" --out-dir "$D/b_$m" --classes 0,3,8 --no-progress
  wfkern evaluate --checkpoint "$D/model.safetensors" --baseline-dir "$D/b_$m" --out "$D/eval_$m" --no-progress
  results+=("$D/eval_$m")
done
wfkern report "${results[@]}" --out "$D/report" --run-dir "$D/wf"
