// Philox4x32-10, the cuRAND stream mapping and curand_uniform, from bld_philox.h through the
// core's draw functions, against the vectors of tests/test_philox.py (keep them in step).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "draw.hpp"

using namespace bld::core;

namespace {

constexpr uint32_t M32 = 0xFFFFFFFFu;

// cuRAND's state machine: a 128-bit counter subsequence * 2^64 + offset / 4, with carry.
std::vector<uint32_t> ref_curand(uint64_t seed, uint64_t subsequence, unsigned __int128 offset, size_t count) {
    unsigned __int128 ctr = (static_cast<unsigned __int128>(subsequence) << 64) + offset / 4;
    size_t pos = static_cast<size_t>(offset % 4);
    std::vector<uint32_t> out;
    while (out.size() < count) {
        uint32_t c[4];
        for (int i = 0; i < 4; ++i) c[i] = static_cast<uint32_t>(ctr >> (32 * i));
        philox_block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        for (size_t w = pos; w < 4; ++w) out.push_back(c[w]);
        ++ctr, pos = 0;
    }
    out.resize(count);
    return out;
}

// curand_uniform exactly: f32(word) * 2^-32 + 2^-33 is exact in double, then one rounding.
float ref_uniform(uint32_t word) {
    const double exact = static_cast<double>(static_cast<float>(word)) * 0x1p-32 + 0x1p-33;
    return static_cast<float>(exact);
}

}  // namespace

TEST_CASE("Philox4x32-10 known answers (SAMPLING_CONTRACT.md, section 2)") {
    struct Case {
        uint32_t counter[4], key[2], expected[4];
    } cases[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8}},
        {{M32, M32, M32, M32}, {M32, M32}, {0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD}},
        {{0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344},
         {0xA4093822, 0x299F31D0},
         {0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1}},
    };
    for (auto &c : cases) {
        philox_block(c.counter, c.key[0], c.key[1]);
        for (int w = 0; w < 4; ++w) CHECK(c.counter[w] == c.expected[w]);
    }
}

TEST_CASE("the stream of curand_init(1337, 42, 0) as recorded on a GPU") {
    // OpenMPCD's tests (DavidToneian/OpenMPCD), the same values as tests/test_philox.py.
    const std::vector<uint32_t> words = {3146701458u, 3726081436u, 3745301797u, 3148492510u, 1361546154u,
                                         3356713841u, 465341286u,  836505607u,  3984407405u, 42409606u};
    const std::vector<double> floats = {0.732648551464080810546875,  0.86754596233367919921875,
                                        0.872021019458770751953125,  0.733065545558929443359375,
                                        0.3170096576213836669921875, 0.781545817852020263671875,
                                        0.108345709741115570068359375, 0.19476413726806640625,
                                        0.927692115306854248046875,  0.00987425632774829864501953125};
    std::vector<uint32_t> got(10);
    philox_words(1337, 42, 10, got.data());
    CHECK(got == words);
    std::vector<float> u(10);
    philox_uniforms(1337, 42, 10, u.data());
    for (size_t i = 0; i < 10; ++i) CHECK(static_cast<double>(u[i]) == floats[i]);
}

TEST_CASE("the stream mapping equals cuRAND's 128-bit counter, high words included") {
    const uint64_t seeds[] = {0, 1, 0xA4093822299F31D0ull, UINT64_MAX};
    const uint64_t subsequences[] = {0, 1, 9, 0x13198A2E03707344ull, UINT64_MAX};
    for (uint64_t seed : seeds)
        for (uint64_t s : subsequences)
            for (size_t n : {1u, 4u, 7u, 13u}) {
                std::vector<uint32_t> got(n);
                philox_words(seed, s, n, got.data());
                CHECK(got == ref_curand(seed, s, 0, n));
            }
    // Blocks past 2^32 put their high index word in counter word 1.
    const uint64_t seed = 0x0123456789ABCDEFull, s = 0xFEDCBA9876543210ull;
    for (uint64_t j : {0xFFFFFFFFull, 0x100000000ull, 0x100000005ull, 0x8000000000000007ull}) {
        uint32_t c[4] = {static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32), static_cast<uint32_t>(s),
                         static_cast<uint32_t>(s >> 32)};
        philox_block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        CHECK(std::vector<uint32_t>(c, c + 4) == ref_curand(seed, s, static_cast<unsigned __int128>(j) * 4, 4));
    }
}

TEST_CASE("curand_uniform in float32: edge words, ties and the interval (0, 1]") {
    const uint32_t words[] = {0, 1, M32, 0xFFFFFF80, 0xFFFFFF7F, 0x01000001, 0x01000003, 0x80000080,
                              0x7FFFFFC0, 12345678};
    for (uint32_t w : words) CHECK(uniform_of_word(w) == ref_uniform(w));
    CHECK(uniform_of_word(0) == 0x1p-33f);  // never 0
    CHECK(uniform_of_word(M32) == 1.0f);    // rounds up to exactly 1
    uint32_t x = 2463534242u;  // xorshift32: many more words
    for (int i = 0; i < 100000; ++i) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        REQUIRE(uniform_of_word(x) == ref_uniform(x));
    }
}

TEST_CASE("draws: u <= p, the mask, the last step's threshold, the seed wrap") {
    const size_t n = 15;  // not a multiple of 4
    std::vector<float> u(n), bits(n), p(n);
    philox_uniforms(11, 2, n, u.data());
    for (size_t e = 0; e < n; ++e) p[e] = static_cast<float>(e) / static_cast<float>(n);
    draw_image(p.data(), 11, 2, n, bits.data(), nullptr, nullptr);
    for (size_t e = 0; e < n; ++e) CHECK(bits[e] == (u[e] <= p[e] ? 1.0f : 0.0f));
    std::vector<uint8_t> keep(n, 0);
    std::vector<float> known(n, 1.0f);
    keep[3] = keep[14] = 1;
    std::vector<float> zeros(n, 0.0f);
    draw_image(zeros.data(), 11, 2, n, bits.data(), keep.data(), known.data());  // u > 0: all 0
    for (size_t e = 0; e < n; ++e) CHECK(bits[e] == (keep[e] ? 1.0f : 0.0f));
    const float probs[] = {0.5f, std::nextafter(0.5f, 1.0f), 0.0f, 1.0f};
    float out[4];
    threshold_image(probs, 4, out, nullptr, nullptr);
    CHECK(out[0] == 0.0f);  // p0 > 0.5, strictly
    CHECK(out[1] == 1.0f);
    CHECK(out[2] == 0.0f);
    CHECK(out[3] == 1.0f);
    std::vector<uint32_t> top(4), wrapped(4);
    philox_words(UINT64_MAX, 9, 4, top.data());  // key (0xffffffff, 0xffffffff)
    philox_words(UINT64_MAX + uint64_t(1), 9, 4, wrapped.data());  // the next seed is 0
    CHECK(top == ref_curand(UINT64_MAX, 9, 0, 4));
    CHECK(wrapped == ref_curand(0, 9, 0, 4));
}

TEST_CASE("draws on the vectorised path: every element at its tie and just below it") {
    // 3 whole runs of BLD_PHILOX_LANES blocks (draw.cpp's SIMD loop), 1 more block and a
    // partial one (its scalar tail); p = u must draw 1, the float just below u must draw 0.
    const size_t n = 4 * 64 * 3 + 7;
    std::vector<float> u(n), bits(n), at(n), below(n);
    for (uint64_t seed : {uint64_t(0), uint64_t(7), UINT64_MAX}) {
        for (uint64_t subsequence : {uint64_t(1), uint64_t(15), uint64_t(1) << 40}) {
            philox_uniforms(seed, subsequence, n, u.data());
            const std::vector<uint32_t> words = ref_curand(seed, subsequence, 0, n);
            for (size_t e = 0; e < n; ++e) {
                REQUIRE(u[e] == ref_uniform(words[e]));
                at[e] = u[e], below[e] = std::nextafter(u[e], 0.0f);
            }
            draw_image(at.data(), seed, subsequence, n, bits.data(), nullptr, nullptr);
            for (size_t e = 0; e < n; ++e) REQUIRE(bits[e] == 1.0f);
            draw_image(below.data(), seed, subsequence, n, bits.data(), nullptr, nullptr);
            for (size_t e = 0; e < n; ++e) REQUIRE(bits[e] == 0.0f);
        }
    }
}
