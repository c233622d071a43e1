#!/usr/bin/env bash
# bench/gpu_check.sh: every check of the CUDA backend that needs a GPU, in one call, from the
# repository root. Results go under $OUT (default ./gpu-check-out):
#
#   env.txt              GPU, driver, toolkit, Python packages
#   build.log            pip install of this tree (adamcore._cuda compiled for this GPU too)
#   info.txt             python -m adamcore info
#   pytest.txt, pytest.xml        tests/test_cuda.py + the no-GPU CUDA tests + the C ABI tests
#   memcheck.txt         compute-sanitizer --tool memcheck over tests/test_cuda.py (a subset:
#                        the 2^31-element and 100-step tests are too slow under the sanitizer)
#   bench_cuda.txt, bench_cuda.json  python -m adamcore bench --device cuda: copy, probe,
#                        adamcore, torch fused/foreach, CuPy ElementwiseKernel
#   summary.txt          one line per phase: ok / FAILED (exit code)
#
# The machine needs Python with torch (CUDA build) and ideally CuPy, and the build requirements
# (scikit-build-core, nanobind) installed or in ./.whl (a wheelhouse: pip download them there
# beforehand on a machine with a network). Racecheck is not run: no kernel uses shared memory,
# which is all racecheck inspects.
#
#   bench/gpu_check.sh                      all phases (about 8 minutes on an H100/H200)
#   bench/gpu_check.sh build test           only those (build memcheck bench ... likewise),
#                                           e.g. to fit a 10-minute limit per command
set -u
PHASES=${*:-build test memcheck bench}
want() { [[ " $PHASES " == *" $1 "* ]]; }
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

phase() {  # phase NAME LIMIT_S LOGFILE CMD...: runs CMD with a time limit, logs, records status
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    timeout "$limit" "$@" > "$log" 2>&1
    local rc=$?
    local status="ok"
    [ $rc -ne 0 ] && status="FAILED (exit $rc)"
    echo "$name: $status in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    return $rc
}

{
    date -u
    nvidia-smi || true
    nvcc --version || true
    "$PY" --version
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" || true
    "$PY" -c "import cupy; print('cupy', cupy.__version__)" || true
    git log --oneline -1 || true
} > "$OUT/env.txt" 2>&1

# Build for this GPU's architecture too (the default list is 80-real;90).
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
CMAKE_ARGS="-DADAMCORE_CUDA=ON${ARCH:+ -DADAMCORE_CUDA_ARCHITECTURES=${ARCH}-real}"
export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
PIP_EXTRA=()
[ -d .whl ] && PIP_EXTRA=(--find-links .whl)
if want build; then
    phase build 300 "$OUT/build.log" "$PY" -m pip install --no-build-isolation "${PIP_EXTRA[@]}" . \
        || { echo "build failed: see build.log" | tee -a "$SUMMARY"; exit 1; }
fi

phase info 60 "$OUT/info.txt" "$PY" -m adamcore info

want test && phase pytest 240 "$OUT/pytest.txt" "$PY" -m pytest -q -ra -p no:cacheprovider \
    --junitxml="$OUT/pytest.xml" tests/test_cuda.py tests/test_cuda_unavailable.py tests/test_c_abi.py tests/test_distributed_cupy.py

if ! want memcheck; then
    :
elif command -v compute-sanitizer > /dev/null; then
    # --error-exitcode makes a reported error fail the phase even when the tests pass
    # torch's caching allocator would hide an overrun inside its pooled blocks: one allocation
    # per tensor makes every tensor's end visible to memcheck
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1
    phase memcheck 300 "$OUT/memcheck.txt" compute-sanitizer --tool memcheck --error-exitcode 99 \
        "$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda.py \
        -k "not more_than_two and not 100_steps and not sixteen_million"
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
else
    echo "memcheck: SKIPPED (compute-sanitizer not found)" | tee -a "$SUMMARY"
fi

want bench && phase bench 300 "$OUT/bench_cuda.txt" "$PY" -m adamcore bench --device cuda \
    --json "$OUT/bench_cuda.json"

cat "$SUMMARY"
