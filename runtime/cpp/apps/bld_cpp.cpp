// bld-cpp: the C++ runtime's example app, built on the public C++ API (bld.hpp) only.
//
//   bld-cpp sample BUNDLE --seed S -n N --class C --guidance G -o DIR   # as `bld sample`
//   bld-cpp bench BUNDLE --batch 1,16                                   # stage timings
//
// `sample` writes what `bld sample` writes: 00000.png ..., bits.bldz and grid.png. Errors print
// one line, `error: <message>` (the Python runtime's words), and exit 1.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <iostream>

#include "args.hpp"
#include "output.hpp"
#include "bld/bld.hpp"

namespace fs = std::filesystem;

namespace app {

int bench(int argc, char **argv);

std::vector<Option> runtime_options() {
    return {{{"--backend"}, false, "cpu", "cpu | cuda | tensorrt-ep | tensorrt [cpu]"},
            {{"--precision"}, false, "fp32", "fp32 | fp16 (the bundle's *_fp16 graphs) [fp32]"},
            {{"--threads"}, false, "0", "onnxruntime intra-op threads (0 = one per core) [0]"}};
}

bld::Pipeline load(const std::string &bundle, const Args &args) {
    const int64_t threads = args.integer("--threads", 0);
    bld::Options options;
    options.backend = args.get("--backend");
    options.precision = args.get("--precision");
    options.intra_op_threads = static_cast<int>(threads);
    return bld::Pipeline::load(bundle, options);
}

void check_bundle_dir(const std::string &bundle) {  // click.Path(exists=True, file_okay=False)
    std::error_code ec;
    if (!fs::exists(bundle, ec))
        throw Usage{"Invalid value for 'BUNDLE': Directory '" + bundle + "' does not exist."};
    if (!fs::is_directory(bundle, ec))
        throw Usage{"Invalid value for 'BUNDLE': Directory '" + bundle + "' is a file."};
}

// 00000.png ...: zero-padded to at least 5 digits (outputs.image_name)
std::string image_name(size_t index, size_t count) {
    const size_t width = std::max<size_t>(5, std::to_string(count - 1).size());
    std::string digits = std::to_string(index);
    return std::string(width > digits.size() ? width - digits.size() : 0, '0') + digits + ".png";
}

int sample(int argc, char **argv) {
    auto options = runtime_options();
    options.insert(options.begin(),
                   {{{"-n"}, false, "1", "Number of images [1]"},
                    {{"--seed"}, false, "0", "Base seed, an integer in [0, 2^64); image i uses seed + i [0]"},
                    {{"--class"}, false, "none", "A class index, 'all' or 'none' (unconditional) [none]"},
                    {{"--guidance"}, false, "", "Classifier-free guidance scale, >= 0 (default: the bundle's)"},
                    {{"--temperature"}, false, "", "> 0 (default: the bundle's)"},
                    {{"-o", "--out"}, false, "", "Folder for the PNGs, bits.bldz, grid.png and samples.json (new or empty)"},
                    {{"--force"}, true, "", "Replace an earlier run's output in that folder"},
                    {{"--no-chunk"}, true, "", "Refuse batches above the bundle's max_batch"},
                    {{"-h", "--help"}, true, "", "Show this message and exit"}});
    Args args(options, {"BUNDLE"});
    for (int i = 2; i < argc; ++i)
        if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
            std::cout << "Usage: bld-cpp sample [OPTIONS] BUNDLE\n\n  Generate images: PNGs, their packed bits "
                         "(bits.bldz), a grid.png, samples.json.\n\nOptions:\n"
                      << args.help();
            return 0;
        }
    args.parse(argc, argv, 2);
    const std::string bundle = args.positional(0);
    check_bundle_dir(bundle);
    const int64_t count = args.integer("-n", 1);
    args.integer("--threads", 0);
    const auto guidance = args.number("--guidance"), temperature = args.number("--temperature");
    const std::string out_dir = args.required("--out");
    std::error_code ec;
    if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec))
        throw Usage{"Invalid value for '-o' / '--out': Directory '" + out_dir + "' is a file."};
    const std::string precision = args.get("--precision"), backend = args.get("--backend");
    if (precision != "fp32" && precision != "fp16")
        throw Usage{"Invalid value for '--precision': '" + precision + "' is not one of 'fp32', 'fp16'."};

    const uint64_t seed = parse_seed(args.get("--seed"));
    bld::Pipeline pipe = load(bundle, args);
    const bld_pipeline_info &info = pipe.info();
    const std::string class_text = args.get("--class");
    const std::vector<int64_t> classes = parse_classes(class_text, count, info.num_classes);
    const auto max = size_t(info.max_batch), n = size_t(count);
    if (args.has("--no-chunk") && n > max)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "batch size " + std::to_string(n) + " is above this bundle's max_batch of " +
                                                        std::to_string(max) + " (allow chunking or send fewer images)");
    // Chunk by chunk, as `bld sample` streams: memory stays bounded whatever -n is. The first
    // chunk is made before the folder is touched, so a refused request writes nothing.
    auto chunk = [&](size_t lo) {
        bld::Request request = bld::Request::seed_range(seed + lo, std::min(max, n - lo));
        if (classes.size() > 1) request.classes.assign(classes.begin() + long(lo), classes.begin() + long(lo + request.seeds.size()));
        else request.classes = classes;
        if (guidance) request.guidance = {*guidance};
        if (temperature) request.temperature = {*temperature};
        return pipe.generate(request);
    };
    bld::Generation first = chunk(0);

    OutputFolder out(fs::path(out_dir).lexically_normal().string() == "." ? "." : out_dir, args.has("--force"));
    OutputFolder::Json request = {{"bundle", bundle}, {"seed", seed}, {"n", count}, {"class", class_text},
                                  {"guidance", guidance ? OutputFolder::Json(*guidance) : OutputFolder::Json()},
                                  {"temperature", temperature ? OutputFolder::Json(*temperature) : OutputFolder::Json()},
                                  {"precision", precision}, {"backend", backend}};
    out.start(request, count);
    const size_t h = size_t(info.image_height), w = size_t(info.image_width), ch = size_t(info.image_channels);
    std::vector<uint8_t> bits, grid;  // all bits; the first 100 images for grid.png
    for (size_t lo = 0; lo < n; lo += max) {
        const bld::Generation g = lo == 0 ? std::move(first) : chunk(lo);
        for (size_t i = 0; i < g.count; ++i)
            bld::save_png(out.file(image_name(lo + i, n)).string(), &g.images[i * h * w * ch], h, w, ch);
        bits.insert(bits.end(), g.bits.begin(), g.bits.end());
        const size_t room = std::min(g.count, lo < 100 ? 100 - lo : 0);
        grid.insert(grid.end(), g.images.begin(), g.images.begin() + long(room * h * w * ch));
        out.progress(int64_t(lo + g.count));
    }
    bld::save_bits(out.file("bits.bldz").string(), bits, n, size_t(info.latent_height), size_t(info.latent_width),
                   size_t(info.latent_bits));
    const size_t cols = class_text == "all" && count >= info.num_classes ? size_t(info.num_classes) : 0;
    const bld::Image tiles = bld::make_grid(grid.data(), grid.size() / (h * w * ch), h, w, ch, cols);
    bld::save_png(out.file("grid.png").string(), tiles.pixels.data(), tiles.height, tiles.width, ch);
    out.finish();
    std::cout << "wrote " << count << " image" << (count != 1 ? "s" : "") << ", bits.bldz and grid.png to "
              << out_dir << "\n";
    return 0;
}

}  // namespace app

int main(int argc, char **argv) {
    const std::string usage =
        "Usage: bld-cpp COMMAND [ARGS]...\n\n  Binary Latent Diffusion bundles, from C++.\n\nCommands:\n"
        "  sample  Generate images: one PNG each, their packed bits (bits.bldz) and a grid.png.\n"
        "  bench   Time the sampling loop stage by stage.\n";
    const std::string command = argc > 1 ? argv[1] : "";
    try {
        if (command == "sample") return app::sample(argc, argv);
        if (command == "bench") return app::bench(argc, argv);
        if (command.empty() || command == "--help" || command == "-h") {
            std::cout << usage;
            return 0;
        }
        throw app::Usage{"No such command '" + command + "'."};
    } catch (const app::Usage &e) {
        std::cerr << "error: " << e.message << "\n";
    } catch (const bld::Error &e) {
        std::cerr << "error: " << e.what() << "\n";
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
    }
    return 1;
}
