// bld-cpp: the C++ runtime's example app, built on the public C++ API (bld.hpp) only.
//
//   bld-cpp sample BUNDLE --seed S -n N --class C --guidance G -o DIR   # as `bld sample`
//   bld-cpp bench BUNDLE --batch 1,16                                   # stage timings
//
// `sample` writes what `bld sample` writes: 00000.png ..., bits.bldz and grid.png. Errors print
// one line, `error: <message>` (the Python runtime's words), and exit 1.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "args.hpp"
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
    const int64_t threads = args.integer("--threads");
    if (threads < 0)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST,
                         "--threads must be >= 0 (0 = one per core), got " + std::to_string(threads));
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

std::string five_digits(size_t i) {
    char name[32];
    std::snprintf(name, sizeof name, "%05zu.png", i);
    return name;
}

int sample(int argc, char **argv) {
    auto options = runtime_options();
    options.insert(options.begin(),
                   {{{"-n"}, false, "1", "Number of images [1]"},
                    {{"--seed"}, false, "0", "Base seed, an integer in [0, 2^64); image i uses seed + i [0]"},
                    {{"--class"}, false, "none", "A class index, 'all' or 'none' (unconditional) [none]"},
                    {{"--guidance"}, false, "", "Classifier-free guidance scale, >= 0 (default: the bundle's)"},
                    {{"--temperature"}, false, "", "> 0 (default: the bundle's)"},
                    {{"-o", "--out"}, false, "", "Directory for the PNGs, bits.bldz and grid.png"},
                    {{"--no-chunk"}, true, "", "Refuse batches above the bundle's max_batch"},
                    {{"-h", "--help"}, true, "", "Show this message and exit"}});
    Args args(options, {"BUNDLE"});
    for (int i = 2; i < argc; ++i)
        if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
            std::cout << "Usage: bld-cpp sample [OPTIONS] BUNDLE\n\n  Generate images: one PNG each, "
                         "their packed bits (bits.bldz) and a grid.png.\n\nOptions:\n"
                      << args.help();
            return 0;
        }
    args.parse(argc, argv, 2);
    const std::string bundle = args.positional(0);
    check_bundle_dir(bundle);
    const int64_t count = args.integer("-n");
    const auto guidance = args.number("--guidance"), temperature = args.number("--temperature");
    const std::string out_dir = args.required("--out");
    std::error_code ec;
    if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec))
        throw Usage{"Invalid value for '-o' / '--out': Directory '" + out_dir + "' is a file."};

    const uint64_t seed = parse_seed(args.get("--seed"));
    bld::Pipeline pipe = load(bundle, args);
    const bld_pipeline_info &info = pipe.info();
    const std::string class_text = args.get("--class");
    bld::Request request;
    request.classes = parse_classes(class_text, count, info.num_classes);
    if (count < 1)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "batch size must be at least 1, got " + std::to_string(count));
    request.seeds = bld::Request::seed_range(seed, size_t(count)).seeds;
    if (guidance) request.guidance = {*guidance};
    if (temperature) request.temperature = {*temperature};
    request.chunk = !args.has("--no-chunk");
    const bld::Generation out = pipe.generate(request);

    const size_t h = size_t(info.image_height), w = size_t(info.image_width), ch = size_t(info.image_channels);
    for (size_t i = 0; i < out.count; ++i)
        bld::save_png((fs::path(out_dir) / five_digits(i)).string(), &out.images[i * h * w * ch], h, w, ch);
    bld::save_bits((fs::path(out_dir) / "bits.bldz").string(), out.bits, out.count, size_t(info.latent_height),
                   size_t(info.latent_width), size_t(info.latent_bits));
    const size_t cols = class_text == "all" && count >= info.num_classes ? size_t(info.num_classes) : 0;
    const bld::Image grid = bld::make_grid(out.images.data(), out.count, h, w, ch, cols);
    bld::save_png((fs::path(out_dir) / "grid.png").string(), grid.pixels.data(), grid.height, grid.width, ch);
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
