#include "draw.hpp"

#include "bld_philox.h"

namespace bld::core {

// Compiled at -O3 (CMakeLists.txt) and, on x86-64 Linux with GCC, once more for AVX-512
// (x86-64-v4), picked at load time: the 32x32->64-bit multiplies of the Philox rounds then run
// 8 to a register where SSE2 runs 2. Measured on the digits model's 512-bit latent (2-core AMD
// EPYC, AVX-512): 15 draws of 16 images took 188 us at -O2 with 16 lanes, 43 us now. The bits
// are the same on every path: integer rounds, and a uint32 -> float32 conversion, a product
// and a sum, each rounded to nearest (no contraction, -ffp-contract=off); every one of the 2^32
// words gives the same uniform vectorised for AVX2 and AVX-512 as in scalar code (checked).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define BLD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define BLD_SIMD_CLONES
#endif

// Whole blocks BLD_PHILOX_LANES at a time, one Philox word of every block per array, so the
// rounds run in SIMD registers (bld_philox4x32_10_lanes); the uniforms are then laid out in
// element order and compared with p in one contiguous loop. The blocks left over, and the
// partial last block, go through bld_draw_block.
BLD_SIMD_CLONES
void draw_image(const float *p, uint64_t seed, uint64_t subsequence, size_t n, float *bits,
                const uint8_t *keep, const float *known) {
    constexpr bld_u64 lanes = BLD_PHILOX_LANES;
    const auto k0 = static_cast<bld_u32>(seed), k1 = static_cast<bld_u32>(seed >> 32);
    const auto s0 = static_cast<bld_u32>(subsequence), s1 = static_cast<bld_u32>(subsequence >> 32);
    const bld_u64 whole = n / 4;
    bld_u64 j = 0;
    for (; j + lanes <= whole; j += lanes) {
        alignas(64) bld_u32 words[4][lanes];
        for (bld_u64 q = 0; q < lanes; ++q) {
            words[0][q] = static_cast<bld_u32>(j + q), words[1][q] = static_cast<bld_u32>((j + q) >> 32);
            words[2][q] = s0, words[3][q] = s1;
        }
        bld_philox4x32_10_lanes(words[0], words[1], words[2], words[3], k0, k1);
        alignas(64) float u[4 * lanes];  // element 4q + w of this run of blocks
        for (bld_u64 q = 0; q < lanes; ++q)
            for (int w = 0; w < 4; ++w) u[4 * q + w] = bld_uniform(words[w][q]);
        const float *pj = p + 4 * j;
        float *bj = bits + 4 * j;
        for (bld_u64 e = 0; e < 4 * lanes; ++e) bj[e] = u[e] <= pj[e] ? 1.0f : 0.0f;
    }
    if (keep)
        for (bld_u64 e = 0; e < 4 * j; ++e)
            if (keep[e]) bits[e] = known[e];
    for (; j < (n + 3) / 4; ++j) bld_draw_block(p, seed, subsequence, j, n, bits, keep, known);
}

void threshold_image(const float *p, size_t n, float *bits, const uint8_t *keep,
                     const float *known) {
    for (size_t e = 0; e < n; ++e) bits[e] = (keep && keep[e]) ? known[e] : (p[e] > 0.5f ? 1.0f : 0.0f);
}

void philox_words(uint64_t seed, uint64_t subsequence, size_t n, uint32_t *out) {
    for (size_t j = 0; 4 * j < n; ++j) {
        bld_u32 c[4] = {static_cast<bld_u32>(j), static_cast<bld_u32>(static_cast<uint64_t>(j) >> 32),
                        static_cast<bld_u32>(subsequence), static_cast<bld_u32>(subsequence >> 32)};
        bld_philox4x32_10(c, static_cast<bld_u32>(seed), static_cast<bld_u32>(seed >> 32));
        for (size_t w = 0; w < 4 && 4 * j + w < n; ++w) out[4 * j + w] = c[w];
    }
}

void philox_uniforms(uint64_t seed, uint64_t subsequence, size_t n, float *out) {
    for (size_t j = 0; 4 * j < n; ++j) {
        float u[4];
        bld_block_uniforms(seed, subsequence, j, u);
        for (size_t w = 0; w < 4 && 4 * j + w < n; ++w) out[4 * j + w] = u[w];
    }
}

void philox_block(uint32_t counter[4], uint32_t k0, uint32_t k1) {
    bld_philox4x32_10(counter, k0, k1);
}

float uniform_of_word(uint32_t word) { return bld_uniform(word); }

}  // namespace bld::core
