#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one call (issue 23), most important first, within a time budget:
#   1. step.py     ImageNet distillation step, ResNet-34 -> ResNet-18, batch 256 at 224x224: WTTM vs KD
#   2. cifar.py    the CIFAR-100 job (WTTM resnet56 -> resnet20, batch 64) through `ttm-distill train`: PIL loader
#                  (the machine's cores as workers) vs in-memory, eager vs --compile, 1 vs 4 packed runs, loaders alone
#   3. runner.py   `ttm-distill train` ImageNet ResNet-34 -> ResNet-18, batch 256 at 224x224, JPEG tree vs synthetic
#                  batches: fp32 vs --amp bf16 --channels-last
#   4. lockstep.py an 8-point gamma x beta sweep of the CIFAR-100 job, point by point vs --lockstep (issue 28)
#   5. cifar.py    the rest: --compile reduce-overhead (CUDA graphs), PIL loader with --compile, 4 packed --compile runs
# Usage: bash benchmarks/gpu_benchmarks.sh [OUT]   (OUT: the argument, else $OUT; it must exist or be creatable)
# Writes two files, so a device call's few returned files suffice: OUT/benchmarks.log (every table and message, one
# "gpu_benchmarks: NAME: passed|failed|cut|skipped" line per step) and OUT/benchmarks.json (each step's results file,
# benchmarks/results/NAME-cuda.json, by step name). Exit status 1 when a step failed or was cut, else 0.
# Environment: BENCH_BUDGET_S (default 480): seconds for all steps together; a step gets at most its own cap and what
# is left, is stopped (with its runs) when that runs out, and is skipped under 30 s. BENCH_PYTHON (default
# $GPU_CHECK_PYTHON, else python3). The project is used from this tree (put first on PYTHONPATH).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-${OUT:?give OUT as the argument or in the environment}}
mkdir -p "$OUT" || exit 1
PY=${BENCH_PYTHON:-${GPU_CHECK_PYTHON:-python3}}
BUDGET=${BENCH_BUDGET_S:-480}
LOG=$OUT/benchmarks.log
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$LOG"
start=$SECONDS
status=0
steps=()

step() {  # step NAME CAP_S RESULT_NAME SCRIPT ARGS...: run one benchmark script from benchmarks/
  local name=$1 cap=$2 result=$3 left rc
  shift 3
  left=$((BUDGET - (SECONDS - start)))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 30 ]; then
    echo "gpu_benchmarks: $name: skipped (${left} s of the ${BUDGET} s budget left)" | tee -a "$LOG"
    return
  fi
  echo "=== $name: $* (at most ${limit} s)" | tee -a "$LOG"
  rm -f "$HERE/results/$result-cuda.json"
  (cd "$HERE" && timeout -k 15 "$limit" "$PY" "$@" --device cuda) >>"$LOG" 2>&1
  rc=$?
  if [ -f "$HERE/results/$result-cuda.json" ]; then
    cp "$HERE/results/$result-cuda.json" "$OUT/.$name.json" && steps+=("$name")
  fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "gpu_benchmarks: $name: cut after ${limit} s" | tee -a "$LOG"
    status=1
  elif [ $rc -ne 0 ]; then
    echo "gpu_benchmarks: $name: failed (exit $rc; see above)" | tee -a "$LOG"
    status=1
  else
    echo "gpu_benchmarks: $name: passed ($((SECONDS - start)) s so far)" | tee -a "$LOG"
  fi
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); host: $(uname -srm); cpus: $(nproc 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi: not here"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} >>"$LOG" 2>&1

step step 120 step step.py --reps 5 --inner 3
step cifar 240 cifar cifar.py --images 12800 --epochs 3 --cases pil,memory,packed,loader,memory-compile
step runner 180 runner runner.py --images 3840
step lockstep 180 lockstep lockstep.py --images 12800 --epochs 2 --loader memory
step cifar_more 240 cifar cifar.py --images 12800 --epochs 3 --cases memory-reduce-overhead,packed-compile,pil-compile

"$PY" - "$OUT" "${steps[@]}" <<'EOF' >>"$LOG" 2>&1
import json, pathlib, sys
out, names = pathlib.Path(sys.argv[1]), sys.argv[2:]
merged = {}
for name in names:
    hidden = out / f'.{name}.json'
    merged[name] = json.loads(hidden.read_text())
    hidden.unlink()
(out / 'benchmarks.json').write_text(json.dumps(merged, indent=1) + '\n')
print(f'gpu_benchmarks: wrote {out / "benchmarks.json"} ({", ".join(names) or "no results"})')
EOF
echo "gpu_benchmarks: done in $((SECONDS - start)) s, exit $status" | tee -a "$LOG"
exit $status
