// The contract's draws on the host (SAMPLING_CONTRACT.md, section 2), built on the project's
// one Philox source, bld_runtime/csrc/bld_philox.h. The bits are float 0/1, as the step graph
// reads them. Compiled with -ffp-contract=off: the uniform is a product and a sum in float32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bld::core {

// bits[e] = u_e <= p[e] for the n elements of one image (stream curand_init(seed, subsequence,
// 0)), then the mask: where keep[e] != 0, bits[e] = known[e]. keep/known may be null.
void draw_image(const float *p, uint64_t seed, uint64_t subsequence, size_t n, float *bits,
                const uint8_t *keep, const float *known);

// The last step: bits[e] = p[e] > 0.5, then the mask.
void threshold_image(const float *p, size_t n, float *bits, const uint8_t *keep,
                     const float *known);

// The raw words and the uniforms of elements 0..n-1 of one stream (tests, seeded encoding).
void philox_words(uint64_t seed, uint64_t subsequence, size_t n, uint32_t *out);
void philox_uniforms(uint64_t seed, uint64_t subsequence, size_t n, float *out);
// One Philox4x32-10 block and curand_uniform of one word (known-answer tests).
void philox_block(uint32_t counter[4], uint32_t k0, uint32_t k1);
float uniform_of_word(uint32_t word);

}  // namespace bld::core
