#!/usr/bin/env bash
# GPU check, in three parts that run and report on their own (own process, own timeout):
#
#   (a) cuda          a GPU with CuPy and cuda-python, no TensorRT or onnxruntime-gpu needed:
#                     the NVRTC-compiled draw kernels (CuPy and cuda-python launches) against
#                     numpy's Philox bit for bit and against cuRAND's curand_uniform (an nvcc
#                     helper built for this GPU's sm; skipped without nvcc or curand_kernel.h),
#                     the full 16-step loop against the CPU runtime's drawer with and without a
#                     mask, the loop captured as one CUDA graph, and device memory over 1,000
#                     requests through it (those two skipped without cuda-python, e.g. a
#                     CuPy-only bld[cupy-cuda12] install). Timeout: GPU_CHECK_CUDA_TIMEOUT
#                     (290 s).
#   (b) gpu-runtimes  TensorRT and onnxruntime-gpu, each skipped where missing; with --bundle:
#                     engines built for the bundle (the build counts here, not in (a)), the
#                     native TensorRT backend and the `cuda` backend against the CPU runtime,
#                     CUDA-graph replay vs step by step, a request from another thread, the last
#                     GPU when there are several (device binding), device memory over
#                     --requests requests. Timeout: GPU_CHECK_RUNTIMES_TIMEOUT (1800 s; a 256px
#                     bundle's engine builds take minutes).
#   (c) cpp-tensorrt  the C++ native TensorRT backend, where the TensorRT SDK is (NvInfer.h and
#                     libnvinfer under $TENSORRT_ROOT, or JetPack's /usr): runtime/cpp built with
#                     -DBLD_WITH_TENSORRT=ON into runtime/cpp/build-gpu-check (ONNX Runtime SDK
#                     from $ONNXRUNTIME_ROOT, else runtime/cpp/.deps/onnxruntime), engines built
#                     by the Python TensorRT into a copy of the bundle (or the bundle's own
#                     engines/), then bld-probe: --backend tensorrt bits equal the CPU runtime's
#                     at batch 1, 3 and max_batch, two threads running different batch sizes at
#                     once equal one thread, no "NVRTC does not know" on stderr; and bld-cpp
#                     bench: its device memory (nvidia-smi, per process) flat over repeated
#                     requests. Skipped, with the reason, without the SDK, a GPU or --bundle.
#                     Timeout: GPU_CHECK_CPP_TIMEOUT (900 s: the C++ build and the engines').
#
#   benchmarks/gpu_check.sh [--bundle BUNDLE] [--precision fp16] [--requests N] [--budget S]
#   benchmarks/gpu_check.sh --dry-run        # what needs no GPU (CI runs this)
#
# --budget S (or GPU_CHECK_BUDGET=S): the whole check must end within S seconds, e.g. --budget
# 570 under a 600 s limit on one command. Each part's timeout is then sized when it starts from
# what is left (skipped or quick parts hand their time on): the time left, less the kill grace
# of every part still to run, shared 1 : 2 : 1 between (a), (b) and (c). A GPU_CHECK_*_TIMEOUT
# that is set still caps its part. Without --budget the defaults above apply (over 50 minutes
# in all: too long for a 600 s device run, so pass --budget there; a 256px bundle's TensorRT
# builds may then be KILLED, which is reported as such).
#
# Each part ends with "part NAME: N passed, M failed"; this script then prints one line per part
# (passed, skipped with its reason, FAILED, KILLED after its timeout, or interrupted) and the
# summary "gpu_check: N parts passed, M failed[, S skipped]" from an EXIT trap, so a part killed
# mid-build cannot hide it. Ctrl-C or SIGTERM stop the running part (its process group gets
# SIGTERM, then SIGKILL after 10 s) and end with that summary, exit status 130. Exit status 0
# only if no part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON_SET:-}" ] && [ "$PYTHON" = python3 ]; then
    PYTHON=.venv/bin/python
fi
CHECK=benchmarks/gpu_check/gpu_check.py
GRACE=10 # timeout --kill-after: SIGKILL this long after SIGTERM
for arg in "$@"; do
    if [ "$arg" = --dry-run ]; then
        exec timeout 240 "$PYTHON" "$CHECK" --dry-run
    fi
done

# --budget is this script's; every other argument goes to parts (b) and (c).
BUDGET="${GPU_CHECK_BUDGET:-}"
BUNDLE=""
declare -a ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --budget) BUDGET="${2:-}"; shift 2 || shift ;;
        --budget=*) BUDGET="${1#--budget=}"; shift ;;
        --bundle) BUNDLE="${2:-}"; ARGS+=("$1" "${2:-}"); shift 2 || shift ;;
        --bundle=*) BUNDLE="${1#--bundle=}"; ARGS+=("$1"); shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if [ -n "$BUDGET" ] && ! [[ "$BUDGET" =~ ^[0-9]+$ ]]; then
    echo "error: --budget must be a whole number of seconds, got '$BUDGET'" >&2
    exit 2
fi

declare -a LINES=()
PASSED=0
FAILED=0
SKIPPED=0
PART="" # the part running now
PART_PID="" # its `timeout` process (leader of the part's own process group)
summary() {
    local line
    for line in "${LINES[@]}"; do echo "$line"; done
    if [ "$SKIPPED" -gt 0 ]; then
        echo "gpu_check: $PASSED parts passed, $FAILED failed, $SKIPPED skipped"
    else
        echo "gpu_check: $PASSED parts passed, $FAILED failed"
    fi
}
on_signal() {  # SIG
    trap '' INT TERM  # one stop: a second Ctrl-C must not cut the clean-up short
    local pids
    # A part started just before the signal runs before this shell has set PART_PID (seen under
    # load: the part lived on and held the output open): its job is in `jobs -p` already.
    pids=$(echo $PART_PID $(jobs -p))
    if [ -n "$pids" ]; then
        # timeout forwards SIGTERM to the part and SIGKILLs it GRACE seconds later.
        kill -TERM $pids 2>/dev/null
        wait $pids 2>/dev/null
        LINES+=("part $PART: interrupted by SIG$1 (its results above are partial)")
    else
        LINES+=("interrupted by SIG$1")
    fi
    FAILED=$((FAILED + 1))
    exit 130
}
trap summary EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# The timeout for a part: its GPU_CHECK_*_TIMEOUT (or default) without --budget; with one, its
# share of what is left (WEIGHT of WEIGHTS_LEFT, after the grace of PARTS_LEFT parts), capped by
# an explicitly set GPU_CHECK_*_TIMEOUT.
part_limit() {  # VAR DEFAULT WEIGHT WEIGHTS_LEFT PARTS_LEFT
    local var=$1 default=$2 weight=$3 weights=$4 parts=$5 set left share
    set="${!var:-}"
    if [ -z "$BUDGET" ]; then
        echo "${set:-$default}"
        return
    fi
    left=$((BUDGET - SECONDS - parts * GRACE - 2))
    share=$((left * weight / weights))
    if [ -n "$set" ] && [ "$set" -lt "$share" ]; then share=$set; fi
    [ "$share" -lt 1 ] && share=1
    echo "$share"
}

run_part() {  # NAME TIMEOUT ARGS...
    local name=$1 limit=$2 rc
    shift 2
    echo "== part $name (timeout ${limit}s)"
    PART=$name
    timeout --kill-after="$GRACE" "$limit" "$PYTHON" "$CHECK" --part "$name" "$@" &
    PART_PID=$!
    wait "$PART_PID"
    rc=$?
    PART_PID=""
    if [ "$rc" -eq 0 ]; then
        LINES+=("part $name: passed")
        PASSED=$((PASSED + 1))
    elif [ "$rc" -eq 3 ]; then  # gpu_check.py: every check of the part skipped
        LINES+=("part $name: skipped (see its [skip] lines above)")
        SKIPPED=$((SKIPPED + 1))
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        LINES+=("part $name: KILLED after its ${limit}s timeout (its results above are partial)")
        FAILED=$((FAILED + 1))
    else
        LINES+=("part $name: FAILED (exit $rc)")
        FAILED=$((FAILED + 1))
    fi
}

skip_part() {  # NAME REASON
    echo "== part $1"
    echo "[skip] $1: $2"
    LINES+=("part $1: skipped ($2)")
    SKIPPED=$((SKIPPED + 1))
}

# Where the TensorRT SDK is (prints its root), or nothing: NvInfer.h and libnvinfer under
# $TENSORRT_ROOT, else JetPack's (or a Debian package's) /usr.
find_trt_sdk() {
    local root inc lib f
    for root in ${TENSORRT_ROOT:+"$TENSORRT_ROOT"} /usr; do
        inc=""
        lib=""
        for f in "$root"/include/NvInfer.h "$root"/include/*-linux-gnu/NvInfer.h; do
            [ -f "$f" ] && inc=$f && break
        done
        for f in "$root"/lib/libnvinfer.so* "$root"/lib64/libnvinfer.so* "$root"/lib/*-linux-gnu/libnvinfer.so*; do
            [ -e "$f" ] && lib=$f && break
        done
        if [ -n "$inc" ] && [ -n "$lib" ]; then
            echo "$root"
            return 0
        fi
    done
    return 1
}

# Whether (c) runs is known before (a) starts, so that a budget is shared by the parts that run.
CPP_SKIP=""
if ! SDK="$(find_trt_sdk)"; then
    CPP_SKIP="no TensorRT SDK (NvInfer.h and libnvinfer.so under \$TENSORRT_ROOT${TENSORRT_ROOT:+=$TENSORRT_ROOT} or /usr); set TENSORRT_ROOT to run it"
elif [ -z "$BUNDLE" ]; then
    CPP_SKIP="TensorRT SDK at $SDK; pass --bundle to build and run the C++ backend"
fi

# (a) takes no bundle options; (b) and (c) take them all.
if [ -z "$CPP_SKIP" ]; then
    run_part cuda "$(part_limit GPU_CHECK_CUDA_TIMEOUT 290 1 4 3)"
    run_part gpu-runtimes "$(part_limit GPU_CHECK_RUNTIMES_TIMEOUT 1800 2 3 2)" "${ARGS[@]}"
    run_part cpp-tensorrt "$(part_limit GPU_CHECK_CPP_TIMEOUT 900 1 1 1)" --trt-root "$SDK" "${ARGS[@]}"
else
    run_part cuda "$(part_limit GPU_CHECK_CUDA_TIMEOUT 290 1 3 2)"
    run_part gpu-runtimes "$(part_limit GPU_CHECK_RUNTIMES_TIMEOUT 1800 2 2 1)" "${ARGS[@]}"
    skip_part cpp-tensorrt "$CPP_SKIP"
fi
[ "$FAILED" -eq 0 ]
