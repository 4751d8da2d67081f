#include "nvrtc_draw.hpp"

#include <nvrtc.h>

#include <algorithm>

#include "error.hpp"

namespace bld::core {

DrawTarget draw_target(int major, int minor, const std::vector<int> &supported) {
    const int sm = major * 10 + minor;
    DrawTarget t;
    t.options = {"--std=c++11"};
    if (std::find(supported.begin(), supported.end(), sm) != supported.end()) {
        t.options.push_back("--gpu-architecture=sm_" + std::to_string(sm));
        return t;
    }
    // The newest architecture below the device's that NVRTC knows: its PTX runs on the device.
    int best = 0;
    for (int a : supported)
        if (a <= sm) best = std::max(best, a);
    if (best == 0)
        fail(BLD_ERROR_BACKEND_UNAVAILABLE, "NVRTC knows no architecture up to sm_" + std::to_string(sm) +
                                                " (this GPU); the draw kernels cannot be built for it");
    t.options.push_back("--gpu-architecture=compute_" + std::to_string(best));
    t.cubin = false;
    t.note = "NVRTC does not know sm_" + std::to_string(sm) + "; the draw kernels are PTX for compute_" +
             std::to_string(best) + ", JIT-compiled by the driver (a driver older than this NVRTC refuses it)";
    return t;
}

std::string draw_source(const std::string &philox, const std::string &kernels) {
    return "#define BLD_DEVICE __device__\n" + philox + "\n" + kernels;
}

namespace {

std::vector<int> supported_archs() {
    int count = 0;
    if (nvrtcGetNumSupportedArchs(&count) != NVRTC_SUCCESS || count <= 0) return {};
    std::vector<int> archs(static_cast<size_t>(count));
    if (nvrtcGetSupportedArchs(archs.data()) != NVRTC_SUCCESS) return {};
    return archs;
}

}  // namespace

DrawBinary compile_draw(const std::string &source, int major, int minor) {
    DrawBinary out{{}, draw_target(major, minor, supported_archs())};
    nvrtcProgram program = nullptr;
    if (nvrtcCreateProgram(&program, source.c_str(), "bld_draw.cu", 0, nullptr, nullptr) != NVRTC_SUCCESS)
        fail(BLD_ERROR_BACKEND_UNAVAILABLE, "NVRTC could not create the draw kernels' program");
    std::vector<const char *> opts;
    for (const auto &o : out.target.options) opts.push_back(o.c_str());
    const nvrtcResult built = nvrtcCompileProgram(program, static_cast<int>(opts.size()), opts.data());
    size_t size = 0;
    nvrtcResult got = NVRTC_SUCCESS;
    if (built != NVRTC_SUCCESS) {
        std::string log;
        if (nvrtcGetProgramLogSize(program, &size) == NVRTC_SUCCESS) {
            log.resize(size);
            nvrtcGetProgramLog(program, log.data());
        }
        nvrtcDestroyProgram(&program);
        fail(BLD_ERROR_BACKEND_UNAVAILABLE, std::string("NVRTC could not compile the draw kernels (") +
                                                nvrtcGetErrorString(built) + "): " + log.c_str());
    }
    if (out.target.cubin) {
        got = nvrtcGetCUBINSize(program, &size);
        out.image.resize(size);
        if (got == NVRTC_SUCCESS) got = nvrtcGetCUBIN(program, out.image.data());
    } else {
        got = nvrtcGetPTXSize(program, &size);  // size counts the terminating NUL
        out.image.resize(size);
        if (got == NVRTC_SUCCESS) got = nvrtcGetPTX(program, out.image.data());
    }
    nvrtcDestroyProgram(&program);
    if (got != NVRTC_SUCCESS)
        fail(BLD_ERROR_BACKEND_UNAVAILABLE,
             std::string("NVRTC could not hand back the draw kernels: ") + nvrtcGetErrorString(got));
    return out;
}

}  // namespace bld::core
