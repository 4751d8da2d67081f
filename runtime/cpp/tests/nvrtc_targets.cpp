// The draw kernels as the native TensorRT backend builds them (nvrtc_draw.cpp), for the compute
// capabilities given: needs libnvrtc only, no GPU. tests/test_cpp_tensorrt_compile.py builds
// and runs it and checks what comes out.
//   nvrtc_targets PHILOX_H KERNELS_CU OUTDIR 8.0 8.7 9.0 ...
// writes OUTDIR/sm_XY.cubin (or .ptx) and prints one line per target:
//   sm_87 cubin 12345 --std=c++11 --gpu-architecture=sm_87 | note
#include <nvrtc.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "error.hpp"
#include "nvrtc_draw.hpp"

namespace {

std::string read_text(const char *path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(std::string("cannot read ") + path);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 5) {
        std::cerr << "usage: nvrtc_targets PHILOX_H KERNELS_CU OUTDIR MAJOR.MINOR...\n";
        return 2;
    }
    try {
        int major = 0, minor = 0;
        nvrtcVersion(&major, &minor);
        std::cout << "nvrtc " << major << "." << minor << "\n";
        const std::string source = bld::core::draw_source(read_text(argv[1]), read_text(argv[2]));
        for (int i = 4; i < argc; ++i) {
            int cc_major = 0, cc_minor = 0;
            if (std::sscanf(argv[i], "%d.%d", &cc_major, &cc_minor) != 2) throw std::runtime_error("bad cc");
            const auto binary = bld::core::compile_draw(source, cc_major, cc_minor);
            const std::string sm = "sm_" + std::to_string(cc_major * 10 + cc_minor);
            const char *kind = binary.target.cubin ? "cubin" : "ptx";
            std::ofstream(std::string(argv[3]) + "/" + sm + "." + kind, std::ios::binary)
                .write(binary.image.data(), std::streamsize(binary.image.size()));
            std::cout << sm << " " << kind << " " << binary.image.size();
            for (const auto &o : binary.target.options) std::cout << " " << o;
            std::cout << " | " << binary.target.note << "\n";
        }
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
