/* bld_draw_host.h: the contract's draws of one image on a CPU (SAMPLING_CONTRACT.md, 2 and 4).
 *
 * The one host source of the draw, built on bld_philox.h: the C++ runtime (runtime/cpp/src/
 * draw.cpp) and the Python runtime's compiled draws (bld_runtime/csrc/host.c) both compile it.
 * Plain C99, host only. Build it with optimisation (-O3: the 64 Philox lanes then run in SIMD
 * registers) and without fast-math; the uniform is a product and a sum in float32, and since
 * the product by 2^-32 is exact, contracting them into one fused multiply-add changes nothing.
 * Bits are float 0/1, as the step graph reads them. Mark the caller of bld_draw_image, which
 * inlines it, BLD_SIMD_CLONES (bld_simd.h): 15 draws of 16 images of the digits model's 512-bit
 * latent took 188 us at -O2 with 16 lanes, 43 us with 64 lanes at -O3 and the AVX-512 clone
 * (2-core AMD EPYC), where the 32x32->64 bit multiplies of the rounds run 8 to a register and
 * SSE2 runs 2. Same bits on every path (integer rounds; every one of the 2^32 words gives the
 * same uniform vectorised for AVX2 and AVX-512 as in scalar code, checked).
 */
#ifndef BLD_DRAW_HOST_H
#define BLD_DRAW_HOST_H

#include "bld_philox.h"
#include "bld_simd.h"

/* bits[e] = u_e <= p[e] for the n elements of one image (stream curand_init(seed, subsequence,
   0)), then the mask: where keep[e] != 0, bits[e] = known[e]. keep and known may be null.
   Whole blocks BLD_PHILOX_LANES at a time, one Philox word of every block per array, so the
   rounds run in SIMD registers (bld_philox4x32_10_lanes); the uniforms are then laid out in
   element order and compared with p in one contiguous loop. The blocks left over, and the
   partial last block, go through bld_draw_block. */
BLD_HOST_INLINE void bld_draw_image(const float *p, bld_u64 seed, bld_u64 subsequence,
                                    bld_u64 n, float *bits, const unsigned char *keep,
                                    const float *known) {
    const bld_u32 k0 = (bld_u32)seed, k1 = (bld_u32)(seed >> 32);
    const bld_u32 s0 = (bld_u32)subsequence, s1 = (bld_u32)(subsequence >> 32);
    const bld_u64 whole = n / 4;
    bld_u64 j = 0;
    for (; j + BLD_PHILOX_LANES <= whole; j += BLD_PHILOX_LANES) {
        bld_u32 words[4][BLD_PHILOX_LANES];
        float u[4 * BLD_PHILOX_LANES]; /* element 4q + w of this run of blocks */
        for (bld_u64 q = 0; q < BLD_PHILOX_LANES; ++q) {
            words[0][q] = (bld_u32)(j + q), words[1][q] = (bld_u32)((j + q) >> 32);
            words[2][q] = s0, words[3][q] = s1;
        }
        bld_philox4x32_10_lanes(words[0], words[1], words[2], words[3], k0, k1);
        for (bld_u64 q = 0; q < BLD_PHILOX_LANES; ++q)
            for (int w = 0; w < 4; ++w) u[4 * q + w] = bld_uniform(words[w][q]);
        const float *pj = p + 4 * j;
        float *bj = bits + 4 * j;
        for (bld_u64 e = 0; e < 4 * BLD_PHILOX_LANES; ++e) bj[e] = u[e] <= pj[e] ? 1.0f : 0.0f;
    }
    if (keep)
        for (bld_u64 e = 0; e < 4 * j; ++e)
            if (keep[e]) bits[e] = known[e];
    for (; j < (n + 3) / 4; ++j) bld_draw_block(p, seed, subsequence, j, n, bits, keep, known);
}

/* The last step: bits[e] = p[e] > 0.5, then the mask. */
BLD_HOST_INLINE void bld_threshold_image(const float *p, bld_u64 n, float *bits,
                                         const unsigned char *keep, const float *known) {
    for (bld_u64 e = 0; e < n; ++e)
        bits[e] = (keep && keep[e]) ? known[e] : (p[e] > 0.5f ? 1.0f : 0.0f);
}

#endif /* BLD_DRAW_HOST_H */
