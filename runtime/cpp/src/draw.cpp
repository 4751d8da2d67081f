#include "draw.hpp"

#include "bld_draw_host.h"

namespace bld::core {

// Compiled at -O3 (CMakeLists.txt), with bld_draw_host.h's AVX-512 clone where it has one.
BLD_SIMD_CLONES
void draw_image(const float *p, uint64_t seed, uint64_t subsequence, size_t n, float *bits,
                const uint8_t *keep, const float *known) {
    bld_draw_image(p, seed, subsequence, n, bits, keep, known);
}

void threshold_image(const float *p, size_t n, float *bits, const uint8_t *keep,
                     const float *known) {
    bld_threshold_image(p, n, bits, keep, known);
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
