#!/usr/bin/env bash
# Compile what -DBLD_WITH_TENSORRT=ON adds to libbld (the native TensorRT backend, the draw
# kernels' NVRTC build, the pipeline's hook) against TensorRT headers, once per header folder.
# No registry carries NvInfer.h, so CI cannot build the backend: run this wherever headers are,
# e.g. NVIDIA's public repository (github.com/NVIDIA/TensorRT, include/ of a release tag):
#
#   git -C TensorRT archive v10.3.0 include | tar -x -C /tmp/trt-headers/10.3.0
#   runtime/cpp/scripts/check_tensorrt_build.sh /tmp/trt-headers/10.3.0/include ...
#
# Folders: the arguments, else $TENSORRT_INCLUDE, else $TENSORRT_ROOT/include. CUDA headers
# (cuda.h, cuda_runtime_api.h): $CUDA_INCLUDE, else $CUDA_HOME/include, else
# /usr/local/cuda/include. nvrtc.h: $NVRTC_INCLUDE, else the CUDA headers, else the
# nvidia-cuda-nvrtc wheel in .venv. It compiles to objects (-c, warnings are errors, as the
# build does) and links nothing: linking needs libnvinfer, which only the TensorRT SDK has.
# Exit status 0 only when every folder compiles.
set -euo pipefail

cpp="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$cpp/../.." && pwd)"
cxx="${CXX:-g++}"

folders=("$@")
if [ ${#folders[@]} -eq 0 ]; then
    if [ -n "${TENSORRT_INCLUDE:-}" ]; then folders=("$TENSORRT_INCLUDE")
    elif [ -n "${TENSORRT_ROOT:-}" ]; then folders=("$TENSORRT_ROOT/include")
    else echo "no TensorRT headers: pass include folders, or set TENSORRT_INCLUDE or TENSORRT_ROOT" >&2; exit 2
    fi
fi
cuda="${CUDA_INCLUDE:-${CUDA_HOME:-/usr/local/cuda}/include}"
[ -f "$cuda/cuda.h" ] || { echo "no CUDA headers: $cuda/cuda.h is missing (set CUDA_INCLUDE)" >&2; exit 2; }
nvrtc="${NVRTC_INCLUDE:-}"
if [ -z "$nvrtc" ]; then
    if [ -f "$cuda/nvrtc.h" ]; then nvrtc="$cuda"
    else nvrtc="$(ls -d "$repo"/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/include 2>/dev/null | head -n1)"
    fi
fi
[ -n "$nvrtc" ] && [ -f "$nvrtc/nvrtc.h" ] || { echo "no nvrtc.h (set NVRTC_INCLUDE)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake -DBLD_PHILOX_DIR="$repo/runtime/bld_runtime/csrc" -DBLD_PHILOX_OUT="$work/generated/philox_source.hpp" \
    -P "$cpp/cmake/philox_source.cmake"

echo "compiler: $("$cxx" --version | head -n1)"
echo "CUDA headers: $cuda ($(grep -m1 '#define CUDA_VERSION' "$cuda/cuda.h" | awk '{print $3}'))"
echo "nvrtc.h: $nvrtc"
status=0
for inc in "${folders[@]}"; do
    version="$(grep -hE '^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH|BUILD)(_ENTERPRISE)? +[0-9]+' \
        "$inc/NvInferVersion.h" | awk '{print $3}' | head -n4 | paste -sd.)"
    # Flags of bld_core in CMakeLists.txt (BLD_WARNINGS, BLD_FP_FLAGS) with BLD_WITH_TENSORRT.
    if "$cxx" -std=c++17 -O2 -fPIC -Wall -Wextra -Werror -ffp-contract=off \
        -DBLD_WITH_TENSORRT -DBLD_BUILDING -DBLD_VERSION='"0.1.0"' \
        -I"$cpp/include" -I"$cpp/src" -I"$repo/runtime/bld_runtime/csrc" -I"$work/generated" \
        -isystem "$inc" -isystem "$cuda" -isystem "$nvrtc" \
        -c "$cpp/src/tensorrt_backend.cpp" -o "$work/tensorrt_backend.o" >"$work/log" 2>&1 &&
        "$cxx" -std=c++17 -O2 -fPIC -Wall -Wextra -Werror -ffp-contract=off -DBLD_BUILDING \
            -I"$cpp/include" -isystem "$nvrtc" -c "$cpp/src/nvrtc_draw.cpp" -o "$work/nvrtc_draw.o" >>"$work/log" 2>&1 &&
        "$cxx" -std=c++17 -O2 -fPIC -Wall -Wextra -Werror -ffp-contract=off \
            -DBLD_WITH_TENSORRT -DBLD_BUILDING -I"$cpp/include" -I"$cpp/src" \
            -c "$cpp/src/pipeline.cpp" -o "$work/pipeline.o" >>"$work/log" 2>&1; then
        echo "TensorRT $version headers ($inc): compiled"
    else
        echo "TensorRT $version headers ($inc): FAILED"
        cat "$work/log"
        status=1
    fi
done
exit $status
