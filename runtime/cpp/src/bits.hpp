// Packed latent bits (SAMPLING_CONTRACT.md, section 1; bld_runtime/bits.py): each image's
// flat bits packed with numpy.packbits(..., bitorder="little"), and the .bldz file:
//     magic "BLDZ", version uint8 (1), batch, height, width, bits (uint32 each), crc32 of the
//     payload (uint32), payload: batch x ceil(height*width*bits / 8) bytes; little-endian.
// Errors are BLD_ERROR_PACKED_BITS with bits.py's messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bld::core {

size_t packed_bytes(size_t tokens, size_t bits);
// (batch, n) 0/1 -> (batch, ceil(n / 8)); refuses values other than 0 and 1.
void pack_bits(const uint8_t *bits, size_t batch, size_t n, uint8_t *packed);
// (batch, ceil(n / 8)) -> (batch, n); refuses non-zero padding bits.
void unpack_bits(const uint8_t *packed, size_t batch, size_t n, uint8_t *bits);

void save_bits(const std::string &path, const uint8_t *bits, size_t batch, uint32_t height,
               uint32_t width, uint32_t channels);
// The bits of a .bldz file holding height x width x channels latents; batch gets its count.
std::vector<uint8_t> load_bits(const std::string &path, uint32_t height, uint32_t width,
                               uint32_t channels, size_t &batch);

}  // namespace bld::core
