#!/usr/bin/env bash
# The seed study (issue 10): EquiformerV2 (e-ladder), the plain transformer (t-ladder) and the periodic transformer
# (p-ladder) over parameters, data and compute, then one comparison report with the families side by side per
# target, the naive baselines as reference lines and the seed's exponents for reference.
#
#   search_spaces/seed/run.sh cpu     # search_spaces/seed/cpu/*.yaml → reports/gallery/seed
#   search_spaces/seed/run.sh gpu     # search_spaces/seed/gpu/*.yaml → reports/gallery/seed-gpu
#
# From the repository root or anywhere; re-running resumes the sweeps that exist (finished trials are kept).
# Durations:
# - cpu: measured 2026-12-05 on the idle machine: EquiformerV2 params 65 min (e3 alone 3,855 s), data and
#   compute 86 min together (run overlapped; data 62 min, compute 50 min with two seeds), the transformer pieces
#   1.5-6 min each (about 20 min), the report 37 s. About 2 h 50 min in all. Under load (other jobs on the same
#   2 cores) everything is 2-3x slower: run it alone.
# - gpu: about 6-7 h on one modern GPU (ESTIMATED from FLOPs counted on CPU, see each file; dataset generation
#   ~27 min of one CPU core first). Largest single piece: gpu/eqv2-params (~3.6 h); a 10-minute GPU slot fits
#   e.g. gpu/transformer-data with --train-sizes 1000,10000 or one eqv2 trial.
set -euo pipefail
kind=${1:?usage: search_spaces/seed/run.sh cpu|gpu}
case "$kind" in cpu) out=reports/gallery/seed ;; gpu) out=reports/gallery/seed-gpu ;;
  *) echo "error: unknown study size '$kind'; use cpu or gpu" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SWEEPS=()
for family in eqv2 transformer periodic; do
  for axis in params data compute; do
    name="seed-$kind-$family-$axis"
    if [ -f "sweeps/$name/space.json" ]; then
      "$PY" -m engine.scale --name "$name" --resume --no-report   # the saved space; finished trials skipped
    else
      "$PY" -m engine.scale --space "search_spaces/seed/$kind/$family-$axis.yaml" --name "$name" --no-report
    fi
    SWEEPS+=(--sweep "$name")
  done
done
"$PY" -m engine.report "${SWEEPS[@]}" --out "$out"
