#include "images.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <filesystem>

#include "bld_image_host.h"
#include "bundle.hpp"
#include "error.hpp"

namespace bld::core {

void to_float_nchw(const uint8_t *images, size_t n, ImageShape s, float *out) {
    const size_t hw = s.height * s.width;
    for (size_t i = 0; i < n; ++i)
        for (size_t c = 0; c < s.channels; ++c)
            for (size_t p = 0; p < hw; ++p)
                out[(i * s.channels + c) * hw + p] =
                    static_cast<float>(images[(i * hw + p) * s.channels + c]) / 127.5f - 1.0f;
}

BLD_SIMD_CLONES
void from_float_nchw(const float *x, size_t n, ImageShape s, uint8_t *out) {
    bld_images_from_nchw(x, n, s.channels, s.height * s.width, out);  // Python's compiled pass too
}

std::vector<uint8_t> make_grid(const uint8_t *images, size_t n, ImageShape s, size_t cols,
                               ImageShape &g, size_t pad) {
    if (n == 0) invalid_request("a grid needs at least one image");
    if (cols == 0) cols = static_cast<size_t>(std::ceil(std::sqrt(static_cast<double>(n))));
    const size_t rows = (n + cols - 1) / cols;
    g = {rows * (s.height + pad) + pad, cols * (s.width + pad) + pad, s.channels};
    std::vector<uint8_t> grid(g.pixels(), 0);
    for (size_t i = 0; i < n; ++i) {
        const size_t top = pad + (i / cols) * (s.height + pad), left = pad + (i % cols) * (s.width + pad);
        for (size_t y = 0; y < s.height; ++y)
            std::copy_n(images + (i * s.height + y) * s.width * s.channels, s.width * s.channels,
                        grid.begin() + static_cast<std::ptrdiff_t>(((top + y) * g.width + left) * s.channels));
    }
    return grid;
}

namespace {

struct PngBuffer {
    std::vector<uint8_t> bytes;
};

void png_append(png_structp png, png_bytep data, png_size_t length) {
    auto *out = static_cast<PngBuffer *>(png_get_io_ptr(png));
    out->bytes.insert(out->bytes.end(), data, data + length);
}

}  // namespace

void save_png(const std::string &path, const uint8_t *image, ImageShape s) {
    if (s.channels != 1 && s.channels != 3)
        invalid_request("an image to save must be uint8 (H, W, 1 or 3), got " +
                        std::to_string(s.channels) + " channels");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    PngBuffer buffer;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fail(BLD_ERROR_INTERNAL, "libpng could not encode " + path);
    }
    png_set_write_fn(png, &buffer, png_append, nullptr);
    png_set_IHDR(png, info, static_cast<png_uint_32>(s.width), static_cast<png_uint_32>(s.height), 8,
                 s.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < s.height; ++y)
        png_write_row(png, const_cast<png_bytep>(image + y * s.width * s.channels));
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    const std::filesystem::path target(path);
    if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
    atomic_write(target, buffer.bytes.data(), buffer.bytes.size());
}

std::vector<uint8_t> load_png(const std::string &path, ImageShape s) {
    const std::vector<char> raw = read_file(path);
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, raw.data(), raw.size()))
        invalid_request("cannot read image " + path + ": " + image.message);
    const bool gray = !(image.format & PNG_FORMAT_FLAG_COLOR) && !(image.format & PNG_FORMAT_FLAG_ALPHA);
    const bool rgb = (image.format & PNG_FORMAT_FLAG_COLOR) && !(image.format & PNG_FORMAT_FLAG_ALPHA) &&
                     !(image.format & PNG_FORMAT_FLAG_COLORMAP);
    const size_t channels = gray ? 1 : (rgb ? 3 : 0);
    if (channels != s.channels) {
        png_image_free(&image);
        invalid_request("image " + path + " has " + (channels ? std::to_string(channels) : "other") +
                        " channels; this bundle needs " + std::to_string(s.channels));
    }
    if (image.width != s.width || image.height != s.height) {
        png_image_free(&image);
        invalid_request("image " + path + " is " + std::to_string(image.width) + "x" +
                        std::to_string(image.height) + "; this bundle needs " +
                        std::to_string(s.width) + "x" + std::to_string(s.height));
    }
    image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
    if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr))
        invalid_request("cannot read image " + path + ": " + image.message);
    return pixels;
}

}  // namespace bld::core
