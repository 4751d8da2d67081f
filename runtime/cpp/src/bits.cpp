#include "bits.hpp"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bundle.hpp"
#include "error.hpp"
#include "pyfmt.hpp"

namespace bld::core {
namespace {

constexpr char kMagic[4] = {'B', 'L', 'D', 'Z'};
constexpr uint8_t kVersion = 1;
constexpr size_t kHeader = 25;  // struct "<4sB4II"

[[noreturn]] void bits_error(const std::string &message) { fail(BLD_ERROR_PACKED_BITS, message); }

void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t get_u32(const uint8_t *p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint32_t crc32_of(const uint8_t *data, size_t size) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (size > 0) {  // zlib takes uInt lengths
        const uInt chunk = static_cast<uInt>(size > (1u << 30) ? (1u << 30) : size);
        crc = crc32(crc, data, chunk);
        data += chunk, size -= chunk;
    }
    return static_cast<uint32_t>(crc);
}

std::string hex8(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", v);
    return buf;
}

std::string shape3(uint32_t h, uint32_t w, uint32_t c) {
    return std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
}

}  // namespace

size_t packed_bytes(size_t tokens, size_t bits) { return (tokens * bits + 7) / 8; }

void pack_bits(const uint8_t *bits, size_t batch, size_t n, uint8_t *packed) {
    for (size_t i = 0; i < batch * n; ++i)
        if (bits[i] > 1) bits_error("bits must be 0 or 1, found the value " + std::to_string(bits[i]));
    const size_t row = (n + 7) / 8;
    std::memset(packed, 0, batch * row);
    for (size_t b = 0; b < batch; ++b)
        for (size_t e = 0; e < n; ++e)
            packed[b * row + e / 8] |= static_cast<uint8_t>(bits[b * n + e] << (e % 8));
}

void unpack_bits(const uint8_t *packed, size_t batch, size_t n, uint8_t *bits) {
    const size_t row = (n + 7) / 8;
    for (size_t b = 0; b < batch; ++b) {
        if (n % 8 && (packed[b * row + row - 1] >> (n % 8)))
            bits_error("packed bits are corrupt: the padding bits of the last byte are not zero");
        for (size_t e = 0; e < n; ++e) bits[b * n + e] = (packed[b * row + e / 8] >> (e % 8)) & 1;
    }
}

void save_bits(const std::string &path, const uint8_t *bits, size_t batch, uint32_t height,
               uint32_t width, uint32_t channels) {
    if (std::filesystem::path(path).extension() != ".bldz")
        bits_error(path + ": this runtime writes .bldz bits files");
    const size_t n = size_t(height) * width * channels;
    std::vector<uint8_t> data(kHeader + batch * packed_bytes(size_t(height) * width, channels));
    pack_bits(bits, batch, n, data.data() + kHeader);
    std::memcpy(data.data(), kMagic, 4);
    data[4] = kVersion;
    put_u32(&data[5], static_cast<uint32_t>(batch));
    put_u32(&data[9], height);
    put_u32(&data[13], width);
    put_u32(&data[17], channels);
    put_u32(&data[21], crc32_of(data.data() + kHeader, data.size() - kHeader));
    atomic_write(path, data.data(), data.size());
}

std::vector<uint8_t> load_bits(const std::string &file, uint32_t height, uint32_t width,
                               uint32_t channels, size_t &batch) {
    const std::string path = py::path(file);  // shown as pathlib shows it
    if (std::filesystem::path(path).extension() != ".bldz")
        bits_error(path + ": this runtime reads .bldz bits files");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) bits_error("bits file " + path + " does not exist");
    const std::vector<char> raw = read_file(path);
    const auto *data = reinterpret_cast<const uint8_t *>(raw.data());
    if (raw.size() < kHeader) {
        if (std::memcmp(data, kMagic, raw.size() < 4 ? raw.size() : 4) != 0)
            bits_error(path + " is not a .bldz bits file (bad magic bytes)");
        bits_error(path + " is truncated: its header has " + std::to_string(raw.size()) + " of " +
                   std::to_string(kHeader) + " bytes");
    }
    if (std::memcmp(data, kMagic, 4) != 0) bits_error(path + " is not a .bldz bits file (bad magic bytes)");
    if (data[4] != kVersion)
        bits_error(path + " is .bldz version " + std::to_string(data[4]) +
                   "; this runtime reads version " + std::to_string(kVersion));
    const uint32_t b = get_u32(data + 5), h = get_u32(data + 9), w = get_u32(data + 13),
                   c = get_u32(data + 17), crc = get_u32(data + 21);
    if (h < 1 || w < 1 || c < 1)
        bits_error(path + " is corrupt: its header has an empty latent shape " + shape3(h, w, c));
    if (h != height || w != width || c != channels)
        bits_error(path + " holds " + shape3(h, w, c) + " latents but the bundle expects " +
                   shape3(height, width, channels));
    const size_t payload = raw.size() - kHeader;
    const size_t expected = size_t(b) * packed_bytes(size_t(h) * w, c);
    if (payload != expected)
        bits_error(path + " is " + (payload < expected ? "truncated" : "too long") +
                   ": its payload has " + std::to_string(payload) +
                   " bytes, the header's shape needs " + std::to_string(expected));
    const uint32_t actual = crc32_of(data + kHeader, payload);
    if (actual != crc)
        bits_error(path + " is corrupt: the payload's crc32 is " + hex8(actual) +
                   ", the header says " + hex8(crc));
    std::vector<uint8_t> bits(size_t(b) * h * w * c);
    try {
        unpack_bits(data + kHeader, b, size_t(h) * w * c, bits.data());
    } catch (const Failure &e) {
        bits_error(path + ": " + e.what());
    }
    batch = b;
    return bits;
}

}  // namespace bld::core
