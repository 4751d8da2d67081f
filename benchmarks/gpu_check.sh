#!/usr/bin/env bash
# GPU check of the device sampler, for a machine with a CUDA GPU, CuPy and nvcc (torch may be
# there too; TensorRT and onnxruntime-gpu need not be). Under 5 minutes. What it checks:
#   - the device Philox/draw kernels (NVRTC-compiled from runtime/bld_runtime/csrc/bld_philox.h)
#     against numpy's Philox bit for bit, and against cuRAND's curand_uniform (an nvcc-built
#     helper, benchmarks/gpu_check/curand_uniform.cu);
#   - the full 16-step loop with the kernels on the GPU (CuPy launch, and the native backend's
#     cuda-python launch captured into one CUDA graph) against the CPU runtime's drawer, bit for
#     bit, given the same step outputs, with and without an inpainting mask;
#   - wherever TensorRT is importable and --bundle BUNDLE is given: engines built for the bundle
#     and the native TensorRT backend against the CPU runtime (bld_engines.parity).
#
#   benchmarks/gpu_check.sh [--bundle BUNDLE] [--precision fp16]
#   benchmarks/gpu_check.sh --dry-run        # what needs no GPU (CI runs this)
#
# Exit status 0 only if every check that ran passed; the last line is "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON_SET:-}" ] && [ "$PYTHON" = python3 ]; then
    PYTHON=.venv/bin/python
fi
exec timeout 290 "$PYTHON" benchmarks/gpu_check/gpu_check.py "$@"
