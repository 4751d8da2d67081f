/* bld_kernels.cu: the device side of the sampling loop, on top of bld_philox.h.
 *
 * The two kernels every GPU backend launches: the contract's draw and the last step's threshold,
 * both followed by the inpainting mask. Bits are float 0/1, as the step graph reads them. This
 * text is appended to bld_philox.h (with BLD_DEVICE defined as __device__) and compiled by NVRTC
 * or CuPy: bld_runtime/backends/kernels.py does it for Python, the C++ runtime's native TensorRT
 * backend embeds both files at build time.
 */

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
