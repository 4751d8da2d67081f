// bld-cpp: the C++ runtime's example app, built on the public C++ API (bld.hpp) only, and on
// the runtime's Python-style formatting (src/pyfmt.cpp, compiled in) for its messages.
//
//   bld-cpp sample BUNDLE --seed S -n N --class C --guidance G -o DIR   # as `bld sample`
//   bld-cpp bench BUNDLE --batch 1,16                                   # stage timings
//
// `sample` writes what `bld sample` writes: 00000.png ..., bits.bldz and grid.png. Errors print
// one line, `error: <message>` (the Python runtime's words), and exit 1.
#include <signal.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "args.hpp"
#include "output.hpp"
#include "bld/bld.hpp"

namespace fs = std::filesystem;

namespace app {

int bench(int argc, char **argv);

// `bld`'s --thread-pool default: $BLD_THREAD_POOL, else shared (click's envvar; checked as a value)
std::string default_thread_pool() {
    const char *env = std::getenv("BLD_THREAD_POOL");
    return env && *env ? env : "shared";
}

std::vector<Option> runtime_options() {
    return {{{"--backend"}, false, "cpu", "cpu | cuda | tensorrt-ep | tensorrt | openvino (Python only) [cpu]"},
            {{"--precision"}, false, "fp32", "fp32 | fp16 (the bundle's *_fp16 graphs) | int8 (*_int8 step graphs, cpu or tensorrt) | bf16 (openvino only) [fp32]"},
            {{"--threads"}, false, "0", "onnxruntime intra-op threads (0 = one per core) [0]"},
            {{"--thread-pool"}, false, default_thread_pool(),
             "shared | session: onnxruntime's threads, one pool the step graphs and the decoder share, which "
             "spins between steps (the command owns its process), or a pool per graph session (the library's "
             "default) [env var: BLD_THREAD_POOL; default: shared]"},
            {{"--pin-threads"}, true, "",
             "With the shared pool: its threads on the cores after the first, the generating thread on "
             "the first (Linux) [default: on with --thread-pool shared]"},
            {{"--no-pin-threads"}, true, "", "Leave the threads where the system puts them"}};
}

void check_thread_pool(const Args &args) {
    const std::string pool = args.get("--thread-pool");
    if (pool != "session" && pool != "shared")
        throw Usage{"Invalid value for '--thread-pool': " + py::repr(pool) + " is not one of 'shared', 'session'."};
}

bld::Pipeline load(const std::string &bundle, const Args &args) {
    const int64_t threads = args.integer("--threads", 0);
    bld::Options options;
    options.backend = args.get("--backend");
    options.precision = args.get("--precision");
    options.intra_op_threads = static_cast<int>(threads);
    check_thread_pool(args);
    options.thread_pool = args.get("--thread-pool");
    // as bld_runtime.cli.pin_threads_for: on with the shared pool unless told otherwise, the
    // later of --pin-threads and --no-pin-threads deciding
    const int pin = args.last_given("--pin-threads"), no_pin = args.last_given("--no-pin-threads");
    options.pin_threads = pin != no_pin ? pin > no_pin : options.thread_pool == "shared";
    return bld::Pipeline::load(bundle, options);
}

// click.Path(file_okay=False): a regular file (symlinks followed) is refused; a FIFO, a socket or
// a device passes, and is the loader's to refuse, as a missing folder is, in its words.
void check_bundle_dir(const std::string &bundle) {
    std::error_code ec;
    if (fs::is_regular_file(bundle, ec))
        throw Usage{"Invalid value for 'BUNDLE': Directory " + py::repr(bundle) + " is a file."};
}

constexpr int64_t kMaxLatents = 4294967295;  // the most a .bldz holds: its header's batch is a uint32

// 00000.png ...: zero-padded to at least 5 digits (outputs.image_name)
std::string image_name(size_t index, size_t count) {
    const size_t width = std::max<size_t>(5, std::to_string(count - 1).size());
    std::string digits = std::to_string(index);
    return std::string(width > digits.size() ? width - digits.size() : 0, '0') + digits + ".png";
}

// The stop path (bld_runtime/sampling.py): SIGINT, SIGTERM and SIGHUP (the terminal closed)
// only set this flag. The sampling loop checks it at every step (the step callback cancels the
// chunk in progress) and between chunks, then keeps what it finished and says so, once: later
// signals, of any of the three, only set the flag again, and the process exits 1 with one line
// whatever arrives.
volatile std::sig_atomic_t stop_signal = 0;

extern "C" void on_stop_signal(int signum) { stop_signal = signum; }

void catch_stop_signals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // the files being written are finished, not cut short by EINTR
    for (const int signum : {SIGINT, SIGTERM, SIGHUP}) sigaction(signum, &action, nullptr);
}

// An OS error as `bld` words one (errors.describe): strerror, then the file (or both of a rename).
std::string os_error(const std::filesystem::filesystem_error &e) {
    std::string text = e.code().message();
    if (!e.path1().empty()) text += ": " + e.path1().string();
    if (!e.path2().empty()) text += " -> " + e.path2().string();
    return text;
}

struct Stopped {  // a run stopped early: the one line saying what it kept where
    std::string message;
};

// Why a run stopped, in the words `bld` uses (errors.describe).
std::string stop_reason(const std::exception_ptr &error) {
    if (stop_signal) return "interrupted";
    try {
        std::rethrow_exception(error);
    } catch (const std::bad_alloc &) {
        return kOutOfMemory;
    } catch (const std::filesystem::filesystem_error &e) {
        return os_error(e);
    } catch (const std::exception &e) {
        return e.what();
    } catch (...) {
        return "unknown error";
    }
}

int sample(int argc, char **argv) {
    catch_stop_signals();
    auto options = runtime_options();
    options.insert(options.begin(),
                   {{{"-n"}, false, "1", "Number of images [1]"},
                    {{"--seed"}, false, "0", "Base seed, an integer in [0, 2^64); image i uses seed + i [0]"},
                    {{"--class"}, false, "none", "A class index, 'all' or 'none' (unconditional) [none]"},
                    {{"--guidance"}, false, "", "Classifier-free guidance scale, >= 0 (default: the bundle's)"},
                    {{"--temperature"}, false, "", "> 0 (default: the bundle's)"},
                    {{"-o", "--out"}, false, "", "Folder for the PNGs, bits.bldz, grid.png and samples.json (new or empty)"},
                    {{"--force"}, true, "", "Replace an earlier run's output in that folder"},
                    {{"--chunk"}, true, "", "Split batches above the bundle's max_batch into chunks [default]"},
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
    int64_t count = 1;
    std::optional<double> guidance, temperature;
    std::string out_dir;
    const std::string precision = args.get("--precision"), backend = args.get("--backend");
    std::string count_text = "1";
    args.convert({{"-n",
                   [&] {
                       const PyInt v = args.integer_as_python("-n", 1);
                       count = v.value, count_text = v.text;
                   }},
                  {"--threads", [&] { args.integer("--threads", 0); }},
                  {"--thread-pool", [&] { check_thread_pool(args); }},
                  {"--guidance", [&] { guidance = args.number("--guidance"); }},
                  {"--temperature", [&] { temperature = args.number("--temperature"); }},
                  {"--out",
                   [&] {
                       out_dir = args.required("--out");
                       std::error_code ec;
                       if (fs::is_regular_file(out_dir, ec))  // as check_bundle_dir: click's S_ISREG
                           throw Usage{"Invalid value for '-o' / '--out': Directory " + py::repr(out_dir) + " is a file."};
                   }},
                  {"--precision",
                   [&] {
                       if (precision != "fp32" && precision != "fp16" && precision != "int8" && precision != "bf16")
                           throw Usage{"Invalid value for '--precision': " + py::repr(precision) +
                                       " is not one of 'fp32', 'fp16', 'int8', 'bf16'."};
                   }},
                  {"--backend", [&] {
                       if (backend != "cpu" && backend != "cuda" && backend != "tensorrt-ep" && backend != "tensorrt" &&
                           backend != "openvino")
                           throw Usage{"Invalid value for '--backend': " + py::repr(backend) +
                                       " is not one of 'cpu', 'cuda', 'tensorrt-ep', 'tensorrt', 'openvino'."};
                   }}});
    if (args.count_positional() > 0) check_bundle_dir(args.positional(0));
    args.check_positionals();
    const std::string bundle = args.positional(0);

    if (count > kMaxLatents)  // before anything is loaded or written
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "-n must be at most " + std::to_string(kMaxLatents) +
                                                        " (the most images one bits.bldz holds), got " + count_text);
    const uint64_t seed = parse_seed(args.get("--seed"));
    bld::Pipeline pipe = load(bundle, args);
    const bld_pipeline_info &info = pipe.info();
    const std::string class_text = args.get("--class");
    const std::optional<int64_t> one_class = parse_class(class_text, info.num_classes);
    const auto max = size_t(info.max_batch), n = size_t(count);
    if (args.has("--no-chunk") && n > max)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "batch size " + std::to_string(n) + " is above this bundle's max_batch of " +
                                                        std::to_string(max) + " (allow chunking or send fewer images)");
    // Chunk by chunk, as `bld sample` streams: memory stays bounded whatever -n is. The first
    // chunk is made before the folder is touched, so a refused request writes nothing; a chunk
    // that fails otherwise (or is interrupted) stops the run as `bld sample` does, which has
    // made the folder by then.
    auto chunk = [&](size_t lo) {
        bld::Request request = bld::Request::seed_range(seed + lo, std::min(max, n - lo));
        if (class_text == "all")  // image i gets class i % classes
            for (size_t i = 0; i < request.seeds.size(); ++i) request.classes.push_back(int64_t((lo + i) % size_t(info.num_classes)));
        else if (one_class) request.classes = {*one_class};
        if (guidance) request.guidance = {*guidance};
        if (temperature) request.temperature = {*temperature};
        request.on_step = [](int64_t, int64_t, const uint8_t *, size_t) { return stop_signal == 0; };
        return pipe.generate(request);
    };
    if (stop_signal) throw bld::Error(BLD_ERROR_CANCELLED, "interrupted");  // while loading: nothing written
    std::optional<bld::Generation> first;
    std::exception_ptr first_failed;
    try {
        first = chunk(0);
    } catch (const bld::Error &e) {
        if (e.kind() == BLD_ERROR_INVALID_REQUEST && !stop_signal) throw;
        first_failed = std::current_exception();
    }

    OutputFolder out(py::path(out_dir), args.has("--force"));  // named as Path(out_dir) is, "out/" as "out"
    OutputFolder::Json request = {{"bundle", bundle}, {"seed", seed}, {"n", count}, {"class", class_text},
                                  {"guidance", guidance ? OutputFolder::Json(*guidance) : OutputFolder::Json()},
                                  {"temperature", temperature ? OutputFolder::Json(*temperature) : OutputFolder::Json()},
                                  {"precision", precision}, {"backend", backend}};
    const size_t h = size_t(info.image_height), w = size_t(info.image_width), ch = size_t(info.image_channels);
    const size_t cols = class_text == "all" && count >= info.num_classes ? size_t(info.num_classes) : 0;
    auto save_bits = [&](const std::vector<uint8_t> &bits, size_t images) {
        bld::save_bits(out.file("bits.bldz").string(), bits, images, size_t(info.latent_height),
                       size_t(info.latent_width), size_t(info.latent_bits));
    };
    auto save_grid = [&](const std::vector<uint8_t> &grid) {
        const bld::Image tiles = bld::make_grid(grid.data(), grid.size() / (h * w * ch), h, w, ch, cols);
        bld::save_png(out.file("grid.png").string(), tiles.pixels.data(), tiles.height, tiles.width, ch);
    };
    // The stop path's words (sampling._stopped): why, how far, and what the folder holds.
    auto stopped_after = [&](const std::string &reason, size_t done, const std::string &kept) {
        return reason + "; stopped after " + std::to_string(done) + " of " + std::to_string(n) + " images: " + kept;
    };
    auto holds = [&](size_t done, bool bits_kept) {
        const std::string first_name = image_name(0, n);
        return done ? py::path(out_dir) + " holds images " + first_name.substr(0, first_name.size() - 4) + ".." +
                          image_name(done - 1, n) + " (of " + std::to_string(n) + ")" +
                          (bits_kept ? " and their bits (bits.bldz)" : "")
                    : "nothing was written to " + py::path(out_dir);
    };
    std::vector<uint8_t> bits, grid;  // all bits; the first 100 images for grid.png
    size_t done = 0;                  // images whose PNGs and bits are all written
    try {
        out.start(request, count);
        if (first_failed) std::rethrow_exception(first_failed);
        for (size_t lo = 0; lo < n; lo += max) {
            if (stop_signal) throw bld::Error(BLD_ERROR_CANCELLED, "interrupted");
            const bld::Generation g = lo == 0 ? std::move(*first) : chunk(lo);
            for (size_t i = 0; i < g.count; ++i)
                bld::save_png(out.file(image_name(lo + i, n)).string(), &g.images[i * h * w * ch], h, w, ch);
            bits.insert(bits.end(), g.bits.begin(), g.bits.end());
            const size_t room = std::min(g.count, lo < 100 ? 100 - lo : 0);
            grid.insert(grid.end(), g.images.begin(), g.images.begin() + long(room * h * w * ch));
            done = lo + g.count;
            out.progress(int64_t(done));
        }
        // Complete: a signal from here on changes nothing, the run ends as it would have.
        save_bits(bits, n);
        save_grid(grid);
        out.finish();
        out.publish();
        if (stop_signal)  // asked to stop while the last files were written: they all were
            throw Stopped{stopped_after("interrupted", n, holds(n, true))};
    } catch (const Stopped &) {
        throw;
    } catch (...) {
        // Stopped: keep the finished images with exactly their bits, say where it stopped.
        const std::string reason = stop_reason(std::current_exception());
        if (out.staged())  // --force over an earlier output: that stays, this run's files go
            throw Stopped{stopped_after(reason, done, py::path(out_dir) + " still holds the earlier output (--force "
                                                                          "replaces it only with a complete one)")};
        for (size_t i = done; i < n; ++i)  // the images of the chunk it stopped in
            if (std::error_code ec; !fs::remove(out.file(image_name(i, n)), ec)) break;
        bool bits_kept = false;
        try {
            if (done > 0) save_bits(bits, done), bits_kept = true;
            if (done > 0) save_grid(grid);
            out.finish("stopped", reason);
        } catch (...) {  // e.g. the disk that stopped the run is still full; the PNGs are complete
        }
        out.sweep_temporaries();  // none of its writes is in flight now: no .NAME.*.tmp stays
        throw Stopped{stopped_after(reason, done, holds(done, bits_kept))};
    }
    std::cout << "wrote " << count << " image" << (count != 1 ? "s" : "") << ", bits.bldz and grid.png to "
              << out_dir << "\n";
    return 0;
}

}  // namespace app

// The one line of an error, its whitespace collapsed as `bld` prints it (cli._fail).
void fail(const std::string &message) {
    std::string line, word;
    std::istringstream words(message);
    while (words >> word) line += (line.empty() ? "" : " ") + word;
    std::cerr << "error: " << line << std::endl;
}

int main(int argc, char **argv) {
    const std::string usage =
        "Usage: bld-cpp [OPTIONS] COMMAND [ARGS]...\n\n  Binary Latent Diffusion bundles, from C++.\n\n"
        "Options:\n"
        "  --version   Show the versions of bld-cpp, the bundle format and onnxruntime, and exit.\n"
        "  -h, --help  Show this message and exit.\n\nCommands:\n"
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
        if (command == "--version") {  // as `bld --version` (bld_runtime/version.py) lays it out
            std::cout << "bld-cpp " << bld_version() << " (bundle format " << bld_bundle_format()
                      << "; onnxruntime " << bld_onnxruntime_version() << ")" << std::endl;
            return 0;
        }
        throw app::Usage{app::no_such("command", command, {"bench", "sample"})};
    } catch (const app::Usage &e) {
        fail(e.message);
    } catch (const app::Stopped &e) {
        fail(e.message);
    } catch (const std::bad_alloc &) {
        fail(app::kOutOfMemory);
    } catch (const std::filesystem::filesystem_error &e) {  // e.g. -o a dangling symlink
        fail(app::os_error(e));
    } catch (const std::exception &e) {
        fail(e.what());
    }
    return 1;
}
