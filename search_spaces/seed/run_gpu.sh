#!/usr/bin/env bash
# The seed study (issue 10), GPU version: EquiformerV2 (e-ladder), the plain transformer (t-ladder) and the
# periodic transformer (p-ladder) over parameters, data and compute, then one comparison report with the
# families side by side per target, the naive baselines as reference lines and the seed's exponents for reference.
#
#   search_spaces/seed/run_gpu.sh              # from the repository root; re-running resumes finished sweeps
#
# Duration: about 6-7 h on one modern GPU (ESTIMATED from FLOPs counted on CPU, see each file; dataset
# generation ~27 min of one CPU core first). Largest single piece: gpu/eqv2-params (~3.6 h); a 10-minute GPU
# slot fits e.g. gpu/transformer-data with --train-sizes 1000,10000 or one eqv2 trial.
# Each sweep is resumable: if interrupted, re-run this script (finished sweeps are skipped via --resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SWEEPS=()
for family in eqv2 transformer periodic; do
  for axis in params data compute; do
    name="seed-gpu-$family-$axis"
    space="search_spaces/seed/gpu/$family-$axis.yaml"
    if [ -d "sweeps/$name" ]; then
      "$PY" -m engine.scale --name "$name" --resume --no-report   # the saved space; finished trials skipped
    else
      "$PY" -m engine.scale --space "$space" --name "$name" --no-report
    fi
    SWEEPS+=(--sweep "$name")
  done
done
"$PY" -m engine.report "${SWEEPS[@]}" --out reports/gallery/seed-gpu
