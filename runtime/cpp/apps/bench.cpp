// `bld-cpp bench`: the C++ loop timed stage by stage, as `bld bench` times the Python one, so
// the two tables compare line by line. Each run is one Pipeline::generate of the same request
// as `bld bench` makes (seeds seed.., classes cycling through the bundle's), after 0.1 s idle.
// Stages come from the runtime's own profile: initial (request + initial draw), step model
// (the step graph call), step sampling (the draw), decode (the decoder graph), total.
// Overhead is everything but the model calls: 1 - (step model + decode) / total.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <thread>

#include "args.hpp"

namespace app {

std::vector<Option> runtime_options();
bld::Pipeline load(const std::string &bundle, const Args &args);
void check_bundle_dir(const std::string &bundle);

namespace {

double percentile(std::vector<double> v, double q) {  // numpy's default (linear)
    std::sort(v.begin(), v.end());
    const double pos = q / 100.0 * double(v.size() - 1);
    const size_t lo = size_t(pos);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

std::vector<size_t> parse_batches(const std::string &text) {
    std::vector<size_t> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        char *end = nullptr;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end || v < 1)
            throw Usage{"--batch must be a comma-separated list of integers >= 1, got '" + text + "'"};
        out.push_back(size_t(v));
    }
    return out;
}

struct Result {
    size_t batch;
    std::vector<double> total, model, sampling, decode, initial;
    double model_sum = 0, decode_sum = 0, total_sum = 0, sampling_sum = 0, initial_sum = 0;
};

}  // namespace

int bench(int argc, char **argv) {
    auto options = runtime_options();
    options.insert(options.begin(),
                   {{{"--batch"}, false, "1,16", "Batch sizes, comma-separated [1,16]"},
                    {{"--warmup"}, false, "1", "Untimed runs per batch size [1]"},
                    {{"--iters"}, false, "5", "Timed runs per batch size [5]"},
                    {{"--seed"}, false, "0", "Base seed [0]"},
                    {{"--guidance"}, false, "", "Guidance scale [0]"},
                    {{"--temperature"}, false, "", "Temperature [1]"},
                    {{"--json"}, false, "", "Also write the results as JSON to this file"},
                    {{"-h", "--help"}, true, "", "Show this message and exit"}});
    Args args(options, {"BUNDLE"});
    for (int i = 2; i < argc; ++i)
        if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
            std::cout << "Usage: bld-cpp bench [OPTIONS] BUNDLE\n\n  Time the sampling loop stage by stage."
                         "\n\nOptions:\n"
                      << args.help();
            return 0;
        }
    args.parse(argc, argv, 2);
    args.check_positionals();
    const std::string bundle = args.positional(0);
    check_bundle_dir(bundle);
    const auto batches = parse_batches(args.get("--batch"));
    const int64_t warmup = args.integer("--warmup"), iters = args.integer("--iters");
    if (warmup < 0 || iters < 1)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "need warmup >= 0 and iters >= 1, got " +
                                                        std::to_string(warmup) + " and " + std::to_string(iters));
    const uint64_t seed = parse_seed(args.get("--seed"));
    const double guidance = args.number("--guidance").value_or(0.0);
    const double temperature = args.number("--temperature").value_or(1.0);

    const auto t0 = std::chrono::steady_clock::now();
    bld::Pipeline pipe = load(bundle, args);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bld_pipeline_info &info = pipe.info();

    std::vector<Result> results;
    for (size_t batch : batches) {
        bld::Request request = bld::Request::seed_range(seed, batch);
        request.classes.resize(batch);
        for (size_t i = 0; i < batch; ++i)
            request.classes[i] = info.num_classes ? int64_t(i) % info.num_classes : 0;
        request.guidance = {guidance};
        request.temperature = {temperature};
        request.profile = true;
        Result r{batch, {}, {}, {}, {}, {}};
        for (int64_t round = 0; round < warmup + iters; ++round) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // arrive at an idle machine
            const bld::Generation g = pipe.generate(request);
            const auto &p = g.profile;
            std::fprintf(stderr, "batch %3zu  %s %2lld  %8.1f ms\n", batch, round < warmup ? "warmup" : "round ",
                         static_cast<long long>(round < warmup ? round : round - warmup), p.total * 1e3);
            if (round < warmup) continue;
            r.total.push_back(p.total), r.decode.push_back(p.decode), r.initial.push_back(p.initial);
            r.model.insert(r.model.end(), p.step_model.begin(), p.step_model.end());
            r.sampling.insert(r.sampling.end(), p.step_sampling.begin(), p.step_sampling.end());
            r.model_sum += std::accumulate(p.step_model.begin(), p.step_model.end(), 0.0);
            r.sampling_sum += std::accumulate(p.step_sampling.begin(), p.step_sampling.end(), 0.0);
            r.decode_sum += p.decode, r.total_sum += p.total, r.initial_sum += p.initial;
        }
        results.push_back(std::move(r));
    }

    std::printf("bundle: %lldx%lldx%lld, %lldx%lld bits, %lld steps, threads %s, load %.2f s\n",
                (long long)info.image_height, (long long)info.image_width, (long long)info.image_channels,
                (long long)(info.latent_height * info.latent_width), (long long)info.latent_bits,
                (long long)info.num_steps, args.get("--threads").c_str(), load_s);
    std::printf("%5s %9s %9s %9s %9s %9s %10s %9s %9s  %s\n", "batch", "p50 ms", "p90 ms", "img/s", "step ms",
                "sample ms", "initial ms", "decode ms", "overhead", "(sampling + initial + rest)");
    std::ostringstream json;
    json << "{\"schema\": \"bld-cpp-bench/1\", \"bundle\": \"" << bundle << "\", \"load_seconds\": " << load_s
         << ", \"settings\": {\"warmup\": " << warmup << ", \"iters\": " << iters << ", \"threads\": "
         << args.get("--threads") << ", \"guidance\": " << guidance << ", \"temperature\": " << temperature
         << ", \"seed\": " << seed << "}, \"results\": [";
    for (size_t k = 0; k < results.size(); ++k) {
        const Result &r = results[k];
        const double overhead = 1.0 - (r.model_sum + r.decode_sum) / r.total_sum;
        const double ips = double(r.batch) * double(r.total.size()) /
                           std::accumulate(r.total.begin(), r.total.end(), 0.0);
        const double sampling = r.sampling_sum / r.total_sum, initial = r.initial_sum / r.total_sum;
        std::printf("%5zu %9.2f %9.2f %9.1f %9.3f %9.3f %10.3f %9.2f %8.2f%%  (%.2f%% + %.2f%% + %.2f%%)\n",
                    r.batch, percentile(r.total, 50) * 1e3, percentile(r.total, 90) * 1e3, ips,
                    percentile(r.model, 50) * 1e3, percentile(r.sampling, 50) * 1e3,
                    percentile(r.initial, 50) * 1e3, percentile(r.decode, 50) * 1e3, overhead * 100,
                    sampling * 100, initial * 100, (overhead - sampling - initial) * 100);
        json << (k ? ", " : "") << "{\"batch\": " << r.batch << ", \"runs\": " << r.total.size()
             << ", \"latency_p50\": " << percentile(r.total, 50) << ", \"latency_p90\": " << percentile(r.total, 90)
             << ", \"images_per_second\": " << ips << ", \"step_model_p50\": " << percentile(r.model, 50)
             << ", \"step_sampling_p50\": " << percentile(r.sampling, 50)
             << ", \"initial_p50\": " << percentile(r.initial, 50) << ", \"decode_p50\": " << percentile(r.decode, 50)
             << ", \"overhead_share\": " << overhead << ", \"sampling_share\": " << sampling
             << ", \"initial_share\": " << initial << "}";
    }
    json << "]}\n";
    std::printf("step ms / sample ms: median step graph call and draw of one denoising step; "
                "overhead: everything but the model calls (step graphs and decoder).\n");
    if (args.has("--json")) {
        std::ofstream out(args.get("--json"));
        out << json.str();
        if (!out) throw bld::Error(BLD_ERROR_IO, "cannot write " + args.get("--json"));
    }
    return 0;
}

}  // namespace app
