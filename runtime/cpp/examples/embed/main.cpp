// embed BUNDLE OUT_DIR: eight images of class 3 with guidance 1, as PNGs and packed bits.
#include <bld/bld.hpp>
#include <iostream>

int main(int argc, char **argv) try {
    if (argc != 3) return std::cerr << "usage: embed BUNDLE OUT_DIR\n", 2;
    bld::Pipeline pipe = bld::Pipeline::load(argv[1]);  // checks manifest, files and hashes
    bld::Request request = bld::Request::seed_range(42, 8);  // seeds 42..49
    request.classes = {3};
    request.guidance = {1.0};
    bld::Generation out = pipe.generate(request);  // out.images: 8 x H x W x ch, uint8
    const auto &info = pipe.info();
    for (size_t i = 0; i < out.count; ++i)
        bld::save_png(std::string(argv[2]) + "/" + std::to_string(i) + ".png",
                      &out.images[i * pipe.image_size()], info.image_height, info.image_width,
                      info.image_channels);
    bld::save_bits(std::string(argv[2]) + "/bits.bldz", out.bits, out.count, info.latent_height,
                   info.latent_width, info.latent_bits);
} catch (const bld::Error &e) {  // the Python runtime's message, e.g. a tampered graph
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
