#!/usr/bin/env bash
# ACTIVA training throughput on a GPU machine, in one command (within 8 minutes):
#
#   bash benchmarks/gpu_run.sh                  # on a fresh machine with an NVIDIA GPU
#   bash benchmarks/gpu_run.sh --cpu-dry-run    # every code path at tiny sizes on the CPU (tests)
#
# 1. Installs the project with the CUDA JAX wheel (pip install -e ".[cuda]") unless the Python
#    found already has a JAX that sees a GPU together with numpyro, flax and optax (machines
#    without network access then run the checkout in place, through PYTHONPATH). --no-install
#    skips this step; PYTHON=... picks the interpreter (default python3).
# 2. Runs benchmarks/gpu_bench.py: the paper preset's compiled training chunk at the Gauss 8,
#    SERGIO and Gauss 2 shapes, float32 and bfloat16 matmuls; tasks/s, % of the device's peak,
#    projected wall time of the paper's schedules.
# 3. Writes $OUT/gpu_bench.json ($OUT defaults to ./gpu_out) and prints it.
#
# Extra arguments go to gpu_bench.py (e.g. --shapes gauss8 --batch-size 64). See docs/scaling.md.
set -euo pipefail

TOTAL_S=${GPU_RUN_TOTAL_S:-480}          # the whole run, install included
START=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

DRY=0 INSTALL=1 ARGS=()
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) DRY=1; ARGS+=("$a") ;;
    --no-install) INSTALL=0 ;;
    *) ARGS+=("$a") ;;
  esac
done

if [ "$DRY" = 1 ]; then
  INSTALL=0
  export JAX_PLATFORMS=cpu
fi

has_gpu_stack() {
  "$PY" - <<'EOF' 2>/dev/null
import sys
import jax, numpyro, flax, optax  # noqa: F401
sys.exit(0 if jax.default_backend() == "gpu" else 1)
EOF
}

if [ "$INSTALL" = 1 ]; then
  if has_gpu_stack; then
    echo "[gpu_run] $PY already has JAX on a GPU with numpyro, flax, optax: running the checkout in place" >&2
  else
    echo "[gpu_run] installing the project with the CUDA JAX wheel ..." >&2
    if [ ! -d .venv-gpu ]; then "$PY" -m venv .venv-gpu; fi
    PY=$PWD/.venv-gpu/bin/python
    timeout 240 "$PY" -m pip install -q --upgrade pip
    timeout 240 "$PY" -m pip install -q -e ".[cuda]"
    has_gpu_stack || { echo "[gpu_run] JAX does not see a GPU after the install" >&2; exit 3; }
  fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ELAPSED=$(( $(date +%s) - START ))
LEFT=$(( TOTAL_S - ELAPSED ))
# The benchmark stops starting cells 60 s before the end; the hard limit leaves 20 s for the JSON.
BUDGET=$(( LEFT > 120 ? LEFT - 60 : 60 ))
STATUS=0
timeout $(( LEFT > 40 ? LEFT - 20 : 20 )) "$PY" benchmarks/gpu_bench.py --out "$OUT/gpu_bench.json" \
  --budget-s "$BUDGET" ${ARGS[@]+"${ARGS[@]}"} || STATUS=$?
if [ -f "$OUT/gpu_bench.json" ]; then cat "$OUT/gpu_bench.json"; fi
exit "$STATUS"
