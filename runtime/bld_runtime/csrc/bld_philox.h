/* bld_philox.h: the sampling contract's random numbers (SAMPLING_CONTRACT.md, section 2).
 *
 * The one C source of Philox4x32-10 in this project, shared by every native sampler: the C++
 * runtime includes it, and the CUDA kernels (CuPy, NVRTC) are compiled from it
 * (bld_runtime/backends/kernels.py reads this file). Plain C99 with no CUDA types, so the host
 * C compiler can build it too; define BLD_DEVICE (e.g. as __device__) before including it to
 * compile the functions for a GPU.
 *
 * Stream: the key is the image's seed, block j's counter is (j lo, j hi, subsequence lo,
 * subsequence hi), element 4j + w uses word w, u = f32(f32(word) * 2^-32 + 2^-33) and
 * bit = (u <= p). The multiply by 2^-32 is exact, so a fused multiply-add rounds exactly like
 * the two steps.
 */
#ifndef BLD_PHILOX_H
#define BLD_PHILOX_H

#ifndef BLD_DEVICE
#define BLD_DEVICE
#endif

typedef unsigned int bld_u32;
typedef unsigned long long bld_u64;

/* One Philox4x32 round on the words (c0, c1, c2, c3) under key (k0, k1) (Random123's round).
   Every Philox here is made of this macro. */
#define BLD_PHILOX_ROUND(c0, c1, c2, c3, k0, k1)                                                 \
    do {                                                                                       \
        bld_u64 bld_p0_ = (bld_u64)0xD2511F53u * (c0);                                         \
        bld_u64 bld_p1_ = (bld_u64)0xCD9E8D57u * (c2);                                         \
        bld_u32 bld_n0_ = (bld_u32)(bld_p1_ >> 32) ^ (c1) ^ (k0);                              \
        bld_u32 bld_n2_ = (bld_u32)(bld_p0_ >> 32) ^ (c3) ^ (k1);                              \
        (c0) = bld_n0_; (c1) = (bld_u32)bld_p1_; (c2) = bld_n2_; (c3) = (bld_u32)bld_p0_;     \
    } while (0)

/* Philox4x32 with 10 rounds on counter c under key (k0, k1), in place. */
BLD_DEVICE static inline void bld_philox4x32_10(bld_u32 c[4], bld_u32 k0, bld_u32 k1) {
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        BLD_PHILOX_ROUND(c[0], c[1], c[2], c[3], k0, k1);
    }
}

/* BLD_PHILOX_LANES counters at once, word by word (c0[i], c1[i], c2[i], c3[i] is counter i),
   under one key: the same rounds as bld_philox4x32_10, laid out so that a host compiler runs
   the lanes in SIMD registers (the CPU samplers' hot loop). 64 lanes: with AVX-512 the draws of
   a 512-bit latent ran 4.4x faster than with 16 (runtime/cpp/src/draw.cpp says how). */
#define BLD_PHILOX_LANES 64
BLD_DEVICE static inline void bld_philox4x32_10_lanes(bld_u32 *c0, bld_u32 *c1, bld_u32 *c2,
                                                      bld_u32 *c3, bld_u32 k0, bld_u32 k1) {
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        for (int i = 0; i < BLD_PHILOX_LANES; ++i)
            BLD_PHILOX_ROUND(c0[i], c1[i], c2[i], c3[i], k0, k1);
    }
}

/* curand_uniform: (0, 1], in float32 with round-to-nearest. */
BLD_DEVICE static inline float bld_uniform(bld_u32 word) {
    return (float)word * 2.3283064365386962890625e-10f + 1.16415321826934814453125e-10f;
}

/* The four uniforms of Philox block `block` of stream curand_init(seed, subsequence, 0). */
BLD_DEVICE static inline void bld_block_uniforms(bld_u64 seed, bld_u64 subsequence,
                                                 bld_u64 block, float u[4]) {
    bld_u32 c[4] = {(bld_u32)block, (bld_u32)(block >> 32),
                    (bld_u32)subsequence, (bld_u32)(subsequence >> 32)};
    bld_philox4x32_10(c, (bld_u32)seed, (bld_u32)(seed >> 32));
    for (int w = 0; w < 4; ++w) u[w] = bld_uniform(c[w]);
}

/* Draw elements 4*block .. 4*block+3 of one image of n elements: bits[e] = u <= p[e], then
   the inpainting mask (keep[e] != 0 writes known[e] back). Bits are float 0/1, as the step
   graph reads them. */
BLD_DEVICE static inline void bld_draw_block(const float *p, bld_u64 seed, bld_u64 subsequence,
                                             bld_u64 block, bld_u64 n, float *bits,
                                             const unsigned char *keep, const float *known) {
    float u[4];
    bld_block_uniforms(seed, subsequence, block, u);
    for (int w = 0; w < 4; ++w) {
        bld_u64 e = 4 * block + w;
        if (e >= n) break;
        float z = u[w] <= p[e] ? 1.0f : 0.0f;
        bits[e] = (keep && keep[e]) ? known[e] : z;
    }
}
#endif /* BLD_PHILOX_H */
