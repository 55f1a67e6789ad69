#!/usr/bin/env bash
# The CUDA check of issue 22 in one call: install what the machine lacks, record the machine, run every CUDA-marked
# test, and write everything under $OUT (a temporary folder when OUT is unset):
#   env.txt      nvidia-smi; Python, torch (CUDA, cuDNN, NCCL), torchvision, timm, torchdistill versions; the GPU
#   install.log  what was installed, and the import check
#   tests.log    pytest -m cuda -rs -v over the test files that mark tests `cuda` (tests/test_cuda.py, ...)
#   junit.xml    the same results, machine-readable
#   summary.txt  one line per part and per test: "NAME: passed|failed|skipped (why)"
#   gpu_check.log  everything this script printed
# Exit status 0 when every part passed or was skipped, 1 otherwise. On a CPU machine it runs to the end with the CUDA
# tests skipped (tests/test_gpu_check_script.py runs it so). How a GPU session calls it: BENCHMARKS.md, "GPU check
# script".
#
# Environment: OUT; GPU_CHECK_PYTHON (default python3); GPU_CHECK_WHEELS (default .whl/ in the tree: wheels to install
# with --no-deps when torchdistill or this project does not import); GPU_CHECK_SITE (default /tmp/gpu_check_site: where
# they go, put on PYTHONPATH); GPU_CHECK_INSTALL=force installs them even where everything imports;
# GPU_CHECK_TEST_TIMEOUT (default 480 s: pytest is stopped then, and the summary says so); GPU_CHECK_PARTS (default
# tests): a comma list of tests and benchmarks; benchmarks runs benchmarks/gpu_benchmarks.sh (issue 23's GPU rows,
# within its own BENCH_BUDGET_S) into the same OUT, skipped without a GPU. Each part fits one device call of 10 minutes:
# call the script once per part.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT" || exit 1
PY=${GPU_CHECK_PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-480}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
: >"$OUT/install.log"
status=0
start=$SECONDS

part() {  # part NAME passed|failed|skipped [WHY]
  local line="$1: $2${3:+ ($3)}"
  echo "$line" >>"$SUMMARY"
  echo "gpu_check: $line"
  if [ "$2" = failed ]; then status=1; fi
}

echo "gpu_check: writing to $OUT"

# 1. install: the carried wheels (e.g. torchdistill, which the machine's image lacks) and the project from the tree
if [ "${GPU_CHECK_INSTALL:-auto}" != force ] && "$PY" -c 'import torchdistill, ttm_torchdistill' >/dev/null 2>&1; then
  part install skipped "torchdistill and ttm_torchdistill already import"
else
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  installed=ok
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "pip install --no-deps --target $SITE: ${wheels[*]##*/}" >>"$OUT/install.log"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" >>"$OUT/install.log" 2>&1; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      installed=failed
    fi
  fi
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the project itself: pure Python, used from the tree
  echo "PYTHONPATH=$PYTHONPATH" >>"$OUT/install.log"
  if [ "$installed" = failed ]; then
    part install failed "pip could not install the wheels in $WHEELS: see install.log"
  else
    part install passed "${#wheels[@]} wheel(s) from $WHEELS into $SITE; the project from the tree"
  fi
fi

# 2. the machine and the versions the tests will use
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm); cpus: $(nproc 2>/dev/null || echo '?')"
  echo "--- nvidia-smi"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available here"
  echo "--- python"
  "$PY" - <<'EOF'
import importlib, platform, sys
print('python', platform.python_version(), sys.executable)
for name in ('torch', 'torchvision', 'timm', 'torchdistill', 'ttm_torchdistill', 'numpy', 'pytest'):
    try:
        module = importlib.import_module(name)
        print(f'{name} {getattr(module, "__version__", "?")} ({module.__file__})')
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        print(f'{name}: does not import: {type(exc).__name__}: {str(exc)[:300]}')
import torch
import torch.distributed as dist
print('torch CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(), '| CUDA available',
      torch.cuda.is_available())
if torch.cuda.is_available():
    print('NCCL', '.'.join(map(str, torch.cuda.nccl.version())) if dist.is_nccl_available() else 'none')
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f'GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}')
EOF
} >"$OUT/env.txt" 2>&1
part env passed "env.txt"

# 3. the import check, and the GPU the tests will see
check=$("$PY" -c 'import torch, torchdistill, ttm_torchdistill
for m in (torchdistill, ttm_torchdistill):
    print(m.__name__, m.__version__, "from", m.__file__)
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1)
rc=$?
echo "$check" >>"$OUT/install.log"
if [ "$rc" = 0 ]; then
  part import passed "torchdistill and ttm_torchdistill import"
else
  part import failed "torchdistill or ttm_torchdistill does not import: see install.log"
fi
gpu=$(sed -n 's/^GPU: //p' <<<"$check")
if [ -n "$gpu" ]; then
  part cuda passed "$gpu"
elif nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  part cuda failed "nvidia-smi lists a GPU but torch sees none: see env.txt"
else
  part cuda skipped "no CUDA device: the CUDA tests skip"
fi

# 4. the CUDA tests
mapfile -t files < <(grep -lE '^pytestmark = .*pytest\.mark\.cuda|^@pytest\.mark\.cuda' tests/test_*.py | sort)
PARTS=${GPU_CHECK_PARTS:-tests}
if [[ ",$PARTS," != *,tests,* ]]; then
  part tests skipped "not asked for (GPU_CHECK_PARTS=$PARTS)"
elif [ "$status" != 0 ]; then
  part tests failed "not run: an earlier part failed"
elif [ ${#files[@]} -eq 0 ]; then
  part tests failed "no test file marks tests cuda"
else
  echo "gpu_check: pytest -m cuda ${files[*]} (stopped after $TEST_TIMEOUT s)"
  timeout -s INT -k 30 "$TEST_TIMEOUT" "$PY" -m pytest -m cuda -rs -v --durations=15 -p no:cacheprovider \
    -o junit_family=xunit1 --junitxml="$OUT/junit.xml" "${files[@]}" >"$OUT/tests.log" 2>&1
  rc=$?
  if [ -s "$OUT/junit.xml" ]; then
    counts=$("$PY" - "$OUT/junit.xml" "$SUMMARY" <<'EOF'
import sys
import xml.etree.ElementTree as ET

counts = {'passed': 0, 'failed': 0, 'skipped': 0}
with open(sys.argv[2], 'a') as summary:
    for case in ET.parse(sys.argv[1]).getroot().iter('testcase'):
        bad = [e for e in case if e.tag in ('failure', 'error')]
        skipped = case.find('skipped')
        status, why = (('failed', bad[0].get('message', '')) if bad else
                       ('skipped', skipped.get('message', '')) if skipped is not None else ('passed', ''))
        counts[status] += 1
        why = ' '.join(why.split())[:300]
        summary.write(f"test {case.get('file') or case.get('classname')}::{case.get('name')}: {status}"
                      + (f' ({why})' if why else '') + '\n')
print(counts['passed'], counts['failed'], counts['skipped'])
EOF
)
    read -r passed failed skipped <<<"${counts:-0 0 0}"
  else
    passed=0 failed=0 skipped=0
  fi
  what="$passed passed, $failed failed, $skipped skipped; tests.log"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    part tests failed "stopped after $TEST_TIMEOUT s: $what"
  elif [ ! -s "$OUT/junit.xml" ]; then
    part tests failed "pytest exited with $rc and wrote no results: see tests.log"
  elif [ "$failed" != 0 ] || { [ "$rc" != 0 ] && [ "$rc" != 5 ]; }; then
    part tests failed "$what (pytest exit $rc)"
  elif [ "$passed" = 0 ]; then
    part tests skipped "$what"
  else
    part tests passed "$what"
  fi
  echo "--- the end of tests.log"
  tail -n 40 "$OUT/tests.log"
fi

# 5. the GPU benchmark rows (issue 23), when asked for
if [[ ",$PARTS," == *,benchmarks,* ]]; then
  if [ -z "$gpu" ]; then
    part benchmarks skipped "no CUDA device: the GPU rows need one"
  elif BENCH_PYTHON="$PY" bash "$ROOT/benchmarks/gpu_benchmarks.sh" "$OUT"; then
    part benchmarks passed "benchmarks.log, benchmarks.json"
  else
    part benchmarks failed "a step failed or was cut: see benchmarks.log"
  fi
fi

echo "--- summary.txt ($((SECONDS - start)) s)"
cat "$SUMMARY"
exit "$status"
