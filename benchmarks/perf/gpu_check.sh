#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with one CUDA GPU; about a minute on an H200.
#   1. a CUDA run through every stage kind: benchmarks/smoke.toml, then benchmarks/perf/cuda_stages.toml
#      (one defense of each level and role, BadHash against a surrogate), with --device cuda;
#   2. benchmarks/perf/gpu_check.py: bf16 autocast + channels-last, the retrieval path on CUDA vs the CPU
#      (identical AP), ResNet-50 victim training and BadHash generator throughput at 224 px, peak GPU memory.
# Prints one table; exits 0 when every check passed, 1 when one failed, 3 when there is no CUDA GPU.
#   bash benchmarks/perf/gpu_check.sh            (PYTHON=... to use another interpreter; OUT=... keeps the results)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU is visible to $PY (torch.cuda.is_available() is False): nothing was checked." >&2
    echo "gpu_check: run it on a machine with a GPU; 'python benchmarks/perf/gpu_check.py --cpu' dry-runs the Python part." >&2
    exit 3
fi

rows=()
failed=0
stage_run() {  # one benchmark file on CUDA; a row with its outcome, time and the stages' peak GPU memory
    local file=$1 name results started seconds status peak
    name=$(basename "$file" .toml)
    results="$OUT/$name"
    started=$(date +%s)
    if timeout 240 "$PY" -m hashbench.cli run "$file" --device cuda --results "$results" -q > "$OUT/$name.log" 2>&1; then
        status=ok
    else
        status="FAILED (exit $?; see $OUT/$name.log)"
        failed=1
    fi
    seconds=$(( $(date +%s) - started ))
    peak=$("$PY" - "$results" <<'PY'
import json, pathlib, sys
peaks = [json.loads(p.read_text()).get("peak_memory_mb") or 0 for p in pathlib.Path(sys.argv[1]).rglob("manifest.json")]
devices = {json.loads(p.read_text()).get("device") for p in pathlib.Path(sys.argv[1]).rglob("manifest.json")}
print(f"{max(peaks, default=0):,.0f} | {len(peaks)} stages on {', '.join(sorted(map(str, devices - {None}))) or '-'}")
PY
)
    rows+=("| CUDA run of $file | $status | ${peak#* | } | ${peak%% | *} | $seconds |")
}

stage_run benchmarks/smoke.toml
stage_run benchmarks/perf/cuda_stages.toml

timeout 300 "$PY" benchmarks/perf/gpu_check.py > "$OUT/gpu_check.txt" 2> "$OUT/gpu_check.err"
python_status=$?
[ $python_status -eq 0 ] || failed=1
# one table: the two CUDA runs, then the python checks' rows (gpu_check.py prints the device line first)
grep -v '^|' "$OUT/gpu_check.txt" | sed '/^$/d'
echo "| check | result | measured | peak GPU MiB | seconds |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
grep '^| ' "$OUT/gpu_check.txt" | grep -v '^| check |'
if [ $python_status -ne 0 ] && [ $python_status -ne 1 ]; then
    echo "gpu_check.py ended with exit $python_status (timeout: 124); its errors:"; tail -20 "$OUT/gpu_check.err"
fi
echo
echo "results and logs: $OUT"
exit $failed
