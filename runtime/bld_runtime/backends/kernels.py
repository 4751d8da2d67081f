"""CUDA source of the device-side draw, built from the project's one Philox C source.

`CORE` is csrc/bld_philox.h (plain C: Philox4x32-10, curand_uniform and the contract's draw of
one block), the same file the C++ runtime includes; a test compiles it with the host C compiler
and checks it against bld_runtime.philox bit for bit. `KERNELS` wraps it in the two __global__
functions the GPU backends launch (CuPy here; NVRTC for the native TensorRT backend).
"""

from importlib.resources import files

PHILOX_HEADER = "bld_philox.h"
CORE = files("bld_runtime").joinpath("csrc", PHILOX_HEADER).read_text(encoding="utf-8")

KERNELS = (
    "#define BLD_DEVICE __device__\n"
    + CORE
    + r"""
/* One thread per (image, Philox block); keep/known are read only when `masked` is set. */
extern "C" __global__ void bld_draw(const float *p, const bld_u64 *seeds, bld_u64 subsequence,
                                    long long n, long long blocks, int batch, float *bits,
                                    const unsigned char *keep, const float *known, int masked) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)batch * blocks) return;
    long long image = t / blocks, block = t % blocks, base = image * n;
    bld_draw_block(p + base, seeds[image], subsequence, block, n, bits + base,
                   masked ? keep + base : 0, masked ? known + base : 0);
}

/* The last step: bits = p0 > 0.5, then the mask. One thread per element. */
extern "C" __global__ void bld_threshold(const float *p, long long total, float *bits,
                                         const unsigned char *keep, const float *known,
                                         int masked) {
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    float z = p[e] > 0.5f ? 1.0f : 0.0f;
    bits[e] = (masked && keep[e]) ? known[e] : z;
}
"""
)
