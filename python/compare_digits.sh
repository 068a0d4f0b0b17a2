#!/usr/bin/env bash
# The README's comparison on the embedded digits over several seeds: for each seed, train, untrain every class in
# one round, the eight single-class baselines on classes 0, 3 and 8, evaluate every method (the depth metrics
# included: linear probe, retain fine-tuning recovery, MIA-efficacy) and one report; then the mean ± std table.
# Usage: bash python/compare_digits.sh [OUT_DIR] [compare_seeds.py options, e.g. --seeds 5]
#        (default runs/compare, 3 seeds; needs the project's .venv or `wfkern` importable)
set -euo pipefail
D=${1:-runs/compare}
shift || true
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" "$(dirname "$0")/compare_seeds.py" --out "$D" "$@"
