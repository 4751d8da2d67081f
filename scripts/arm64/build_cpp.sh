#!/usr/bin/env bash
# Cross-compile the C++ runtime (libbld, bld-cpp, bld-probe, the unit tests) for aarch64:
# g++-aarch64-linux-gnu with the arm64 root as sysroot, the ONNX Runtime headers setup_deps.sh
# fetches for the x86 build (the same headers) and the aarch64 libonnxruntime.so.1.* of the
# onnxruntime wheel in the root (the library a Jetson's pip install gets).
#   scripts/arm64/build_cpp.sh ROOT [BUILD [SOURCE]]
# BUILD: runtime/cpp/build-aarch64; SOURCE: runtime/cpp of this checkout. Incremental, and
# through ccache (its cache beside the arm64 root) when installed: a fresh clone recompiles
# only what changed since any earlier build.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
root="${1:?usage: $0 ROOT [BUILD]}"
build="${2:-$repo/runtime/cpp/build-aarch64}"
source="${3:-$repo/runtime/cpp}"
launcher=()
if command -v ccache >/dev/null; then
    export CCACHE_DIR="${CCACHE_DIR:-$(dirname "$root")/ccache}" CCACHE_BASEDIR="$source/.."
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
headers="$repo/runtime/cpp/.deps/onnxruntime/include"
if [ ! -f "$headers/onnxruntime_c_api.h" ]; then
    "$repo/runtime/cpp/scripts/setup_deps.sh" --python "${PYTHON:-$repo/.venv/bin/python}" >&2
fi
lib="$(ls "$root"/usr/local/lib/python3.11/dist-packages/onnxruntime/capi/libonnxruntime.so.1.* | head -n 1)"
ort="$build/onnxruntime"  # an ONNXRUNTIME_ROOT: include/ and lib/
mkdir -p "$ort/lib"
ln -sfn "$headers" "$ort/include"
ln -sfn "$lib" "$ort/lib/libonnxruntime.so.1"
ln -sfn libonnxruntime.so.1 "$ort/lib/libonnxruntime.so"
mkdir -p "$build"
BLD_ARM64_ROOT="$root" nice -n 10 cmake -S "$source" -B "$build" -G "Unix Makefiles" "${launcher[@]}" \
    -DCMAKE_TOOLCHAIN_FILE="$repo/scripts/arm64/toolchain-aarch64.cmake" \
    -DBLD_ARM64_ROOT="$root" -DONNXRUNTIME_ROOT="$ort" >"$build/configure.log" 2>&1 \
    || { tail -n 30 "$build/configure.log" >&2; exit 1; }
nice -n 10 cmake --build "$build" -j "$(nproc)" --target bld-cpp bld-probe bld_unit_tests \
    >"$build/build.log" 2>&1 || { grep -E "error|Error" "$build/build.log" | head -n 30 >&2; exit 1; }
file "$build/bld-cpp" | grep -q "ARM aarch64" || { echo "$build/bld-cpp is not aarch64" >&2; exit 1; }
echo "$build"
