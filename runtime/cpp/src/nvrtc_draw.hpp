// The draw kernels' NVRTC build, one function for the native TensorRT backend and for the
// test that compiles them for sm_80, sm_87 and sm_90 (tests/test_cpp_tensorrt_compile.py).
// Needs nvrtc.h and libnvrtc only: no GPU, no driver.
#pragma once

#include <string>
#include <vector>

namespace bld::core {

// What NVRTC is asked for on a device of compute capability major.minor: a cubin for that very
// sm, because the driver refuses PTX newer than itself (CUDA_ERROR_UNSUPPORTED_PTX_VERSION) and
// an NVRTC newer than the driver emits exactly that. Only when this NVRTC does not know the sm
// (a GPU newer than the NVRTC) is the target PTX for the newest architecture it knows, which the
// driver JIT-compiles; `note` then says so.
struct DrawTarget {
    std::vector<std::string> options;  // e.g. {"--std=c++11", "--gpu-architecture=sm_87"}
    bool cubin = true;
    std::string note;  // empty for a cubin
};

// `supported` is what nvrtcGetSupportedArchs lists (87 for sm_87).
DrawTarget draw_target(int major, int minor, const std::vector<int> &supported);

// The kernels' source as NVRTC compiles it: bld_philox.h, then bld_kernels.cu.
std::string draw_source(const std::string &philox, const std::string &kernels);

struct DrawBinary {
    std::string image;  // cubin (ELF) or PTX text, for cuModuleLoadData
    DrawTarget target;
};

// Compile `source` for the device; throws Failure(BLD_ERROR_BACKEND_UNAVAILABLE) with NVRTC's
// log when NVRTC refuses it.
DrawBinary compile_draw(const std::string &source, int major, int minor);

}  // namespace bld::core
