#!/usr/bin/env bash
# GPU check, in two parts that run and report on their own (own process, own timeout):
#
#   (a) cuda          a GPU with CuPy and cuda-python, no TensorRT or onnxruntime-gpu needed:
#                     the NVRTC-compiled draw kernels (CuPy and cuda-python launches) against
#                     numpy's Philox bit for bit and against cuRAND's curand_uniform (an nvcc
#                     helper built for this GPU's sm; skipped without nvcc or curand_kernel.h),
#                     the full 16-step loop against the CPU runtime's drawer with and without a
#                     mask, the loop captured as one CUDA graph, and device memory over 1,000
#                     requests through it. Timeout: GPU_CHECK_CUDA_TIMEOUT (290 s).
#   (b) gpu-runtimes  TensorRT and onnxruntime-gpu, each skipped where missing; with --bundle:
#                     engines built for the bundle (the build counts here, not in (a)), the
#                     native TensorRT backend and the `cuda` backend against the CPU runtime,
#                     CUDA-graph replay vs step by step, a request from another thread, the last
#                     GPU when there are several (device binding), device memory over
#                     --requests requests. Timeout: GPU_CHECK_RUNTIMES_TIMEOUT (1800 s; a 256px
#                     bundle's engine builds take minutes).
#
#   benchmarks/gpu_check.sh [--bundle BUNDLE] [--precision fp16] [--requests N]
#   benchmarks/gpu_check.sh --dry-run        # what needs no GPU (CI runs this)
#
# Each part ends with "part NAME: N passed, M failed"; this script then prints one line per part
# (passed, FAILED, or KILLED after its timeout) and the summary "gpu_check: N parts passed, M
# failed" from an EXIT trap, so a part killed mid-build (or Ctrl-C) cannot hide it. Exit status
# 0 only if every part passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON_SET:-}" ] && [ "$PYTHON" = python3 ]; then
    PYTHON=.venv/bin/python
fi
CHECK=benchmarks/gpu_check/gpu_check.py
for arg in "$@"; do
    if [ "$arg" = --dry-run ]; then
        exec timeout 240 "$PYTHON" "$CHECK" --dry-run
    fi
done

declare -a LINES=()
PASSED=0
FAILED=0
summary() {
    local line
    for line in "${LINES[@]}"; do echo "$line"; done
    echo "gpu_check: $PASSED parts passed, $FAILED failed"
}
trap summary EXIT
trap 'LINES+=("interrupted"); FAILED=$((FAILED + 1)); exit 130' INT TERM

run_part() {  # NAME TIMEOUT ARGS...
    local name=$1 limit=$2 rc
    shift 2
    echo "== part $name (timeout ${limit}s)"
    timeout --kill-after=10 "$limit" "$PYTHON" "$CHECK" --part "$name" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        LINES+=("part $name: passed")
        PASSED=$((PASSED + 1))
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        LINES+=("part $name: KILLED after its ${limit}s timeout (its results above are partial)")
        FAILED=$((FAILED + 1))
    else
        LINES+=("part $name: FAILED (exit $rc)")
        FAILED=$((FAILED + 1))
    fi
}

# (a) takes no bundle options; (b) takes them all.
run_part cuda "${GPU_CHECK_CUDA_TIMEOUT:-290}"
run_part gpu-runtimes "${GPU_CHECK_RUNTIMES_TIMEOUT:-1800}" "$@"
[ "$FAILED" -eq 0 ]
