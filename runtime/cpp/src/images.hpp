// Images at the runtime's boundary (bld_runtime/images.py): uint8 NHWC for the user, float32
// NCHW in [-1, 1] for the graphs, with the project's conversion x = u8 / 127.5 - 1 and
// u8 = clip(round_half_even((x + 1) * 127.5), 0, 255); PNG files (libpng) and grids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bld::core {

struct ImageShape {
    size_t height, width, channels;
    size_t pixels() const { return height * width * channels; }
};

// uint8 NHWC -> float NCHW in [-1, 1]
void to_float_nchw(const uint8_t *images, size_t n, ImageShape shape, float *out);
// float NCHW -> uint8 NHWC
void from_float_nchw(const float *x, size_t n, ImageShape shape, uint8_t *out);

// Tile n images into rows x cols with `pad` black pixels around each (images.make_grid);
// cols 0 means ceil(sqrt(n)). Returns the grid; grid_shape gets its shape.
std::vector<uint8_t> make_grid(const uint8_t *images, size_t n, ImageShape shape, size_t cols,
                               ImageShape &grid_shape, size_t pad = 2);

// One uint8 image (H, W, 1 or 3) as an 8-bit grayscale or RGB PNG, written atomically.
void save_png(const std::string &path, const uint8_t *image, ImageShape shape);
// An 8-bit grayscale or RGB PNG, which must have exactly this shape (no conversion).
std::vector<uint8_t> load_png(const std::string &path, ImageShape shape);

}  // namespace bld::core
