#!/usr/bin/env bash
# The seed study (issue 10), CPU version: EquiformerV2 (e-ladder), the plain transformer (t-ladder) and the
# periodic transformer (p-ladder) over parameters, data and compute, then one comparison report with the
# families side by side per target, the naive baselines as reference lines and the seed's exponents for reference.
#
#   search_spaces/seed/run_cpu.sh              # from the repository root; re-running resumes finished sweeps
#
# Duration: about 60 min on an idle 2-core machine (estimated from step times measured here; sum of the per-file
# estimates: EquiformerV2 params ~20, data ~8, compute ~7; transformer and periodic transformer ~3 each per
# axis; report ~3), 2-3x longer while others load the machine.
# Each sweep is resumable: if interrupted, re-run this script (finished sweeps are skipped via --resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SWEEPS=()
for family in eqv2 transformer periodic; do
  for axis in params data compute; do
    name="seed-cpu-$family-$axis"
    space="search_spaces/seed/cpu/$family-$axis.yaml"
    if [ -d "sweeps/$name" ]; then
      "$PY" -m engine.scale --name "$name" --resume --no-report   # the saved space; finished trials skipped
    else
      "$PY" -m engine.scale --space "$space" --name "$name" --no-report
    fi
    SWEEPS+=(--sweep "$name")
  done
done
"$PY" -m engine.report "${SWEEPS[@]}" --out reports/gallery/seed
