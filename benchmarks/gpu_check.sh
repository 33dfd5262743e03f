#!/usr/bin/env bash
# Device check on one GPU (issue 12): matmul peaks, training throughput and utilisation of EquiformerV2
# e3/e5/eqV2-S and the transformer's largest presets in fp32/bf16/fp16, agreement of the precisions,
# NCCL, one engine sweep with --gpus-per-worker 1 (the frontier policy), peak GPU memory. At most 8 minutes.
#
#   benchmarks/gpu_check.sh                        # writes $OUT/gpu_check.md (or ./gpu_check.md)
#   benchmarks/gpu_check.sh --into BENCHMARKS.md   # and replaces the "gpu" section of BENCHMARKS.md
#   benchmarks/gpu_check.sh --dry-run              # tiny sizes on CPU: the rehearsal the tests run
#
# Python: $PYTHON, else .venv/bin/python, else python3. Details: benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# hard stop at 8 minutes (the Python side stops starting new parts after --budget-s, 450 s by default)
exec timeout --signal=TERM --kill-after=10 480 "$PY" -m benchmarks.gpu_check "$@"
