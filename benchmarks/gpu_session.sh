#!/usr/bin/env bash
# One call on the device machine: issue 10's H200 measurements (gpu_engine.py), then a profile of
# our engine on the GPU (`ascendra profile` alone: the machine has no fastapi, pyzmq or ray).
# Each part runs under its own time limit, so one part's failure or hang keeps the other's results.
#
#   bash benchmarks/gpu_session.sh                                   # on the H200, results in $OUT
#   DEVICE=cpu MODEL=dummy:tiny OUT=/tmp/g bash benchmarks/gpu_session.sh   # tiny shapes: proves it runs
set -u
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-dummy:llama-3-8b}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/nvidia_smi.csv" 2>&1
timeout 330 "$PY" benchmarks/gpu_engine.py --device "$DEVICE" --model "$MODEL" --out "$OUT" \
    --time-limit 300 ${ATTENTION:+--attention "$ATTENTION"} 2>&1 | tee "$OUT/gpu_engine.log"
quick=()
[ "$DEVICE" = cpu ] && quick=(--quick)
timeout 150 "$PY" -m ascendra.cli.profile --device "$DEVICE" --model "$MODEL" "${quick[@]}" \
    --name "h200-${MODEL#dummy:}" --out "$OUT/profile.json" >"$OUT/profile.log" 2>&1
echo "profile: rc $?"
tail -n 4 "$OUT/profile.log"
