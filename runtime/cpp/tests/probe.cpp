// bld-probe: runs generation requests through the public C++ API for the Python tests
// (tests/test_cpp_runtime.py), which run the same requests through bld_runtime and compare, and
// hold its answers to the conformance cases (tests/conformance/: a bundle's load.error, each
// request's error or bits).
//
//   bld-probe BUNDLE SPEC.json OUTDIR
//
// SPEC: {"options": {"backend": ..., "precision": ..., "threads": N},
//        "threads": T (run the requests again on T threads sharing the pipeline),
//        "requests": [{"name", "seeds", "classes", "guidance", "temperature", "mask",
//                      "known_bits", "mask_shape", "chunk", "trace"}]}
// For each request OUTDIR gets NAME.bits.npy, NAME.images.npy (and with trace NAME.states.npy,
// NAME.probs.npy), or NAME.error holding "KIND MESSAGE". With threads, NAME.threaded.bits.npy.
// A request with "op": "encode" (images: flat uint8, count) writes NAME.bits.npy (p > 0.5) and
// NAME.probs.npy; "encode_seeded" (images, count, seeds) NAME.bits.npy; "decode" (bits, count)
// NAME.images.npy. A pipeline that does not load gives OUTDIR/load.error.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "bld/bld.hpp"

using Json = nlohmann::json;

namespace {

template <class T>
void write_npy(const std::string &path, const std::vector<T> &data, std::vector<size_t> shape, const char *descr) {
    std::string dims;
    for (size_t d : shape) dims += std::to_string(d) + ", ";
    if (shape.size() > 1) dims.erase(dims.size() - 2);
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    header += std::string(63 - (10 + header.size()) % 64, ' ') + "\n";
    std::ofstream out(path, std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(header.size());
    out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
    out << header;
    out.write(reinterpret_cast<const char *>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(T)));
}

void write_text(const std::string &path, const std::string &text) { std::ofstream(path) << text; }

// Numbers, or strings for what JSON cannot hold ("nan", "inf").
std::vector<double> numbers(const Json &spec, const char *key) {
    std::vector<double> out;
    for (const Json &v : spec.value(key, Json::array()))
        out.push_back(v.is_string() ? std::strtod(v.get<std::string>().c_str(), nullptr) : v.get<double>());
    return out;
}

bld::Request make_request(const Json &spec) {
    bld::Request r;
    r.seeds = spec.value("seeds", std::vector<uint64_t>{0});
    r.classes = spec.value("classes", std::vector<int64_t>{});
    r.guidance = numbers(spec, "guidance");
    r.temperature = numbers(spec, "temperature");
    r.mask = spec.value("mask", std::vector<uint8_t>{});
    r.known_bits = spec.value("known_bits", std::vector<uint8_t>{});
    r.mask_shape = spec.value("mask_shape", std::vector<size_t>{});
    r.chunk = spec.value("chunk", true);
    r.trace = spec.value("trace", false);
    if (spec.contains("cancel_after")) {
        const int64_t stop = spec["cancel_after"];
        r.on_step = [stop](int64_t step, int64_t, const uint8_t *, size_t) { return step < stop; };
    }
    return r;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: bld-probe BUNDLE SPEC.json OUTDIR\n";
        return 2;
    }
    const std::string out = std::string(argv[3]) + "/";
    const Json spec = Json::parse(std::ifstream(argv[2]));
    const Json opts = spec.value("options", Json::object());
    bld::Options options;
    options.backend = opts.value("backend", "cpu");
    options.precision = opts.value("precision", "fp32");
    options.intra_op_threads = opts.value("threads", 0);
    std::unique_ptr<bld::Pipeline> pipe;
    try {
        pipe = std::make_unique<bld::Pipeline>(bld::Pipeline::load(argv[1], options));
    } catch (const bld::Error &e) {
        write_text(out + "load.error", std::to_string(e.kind()) + " " + e.what());
        return 0;
    }
    const auto &info = pipe->info();
    const size_t L = size_t(info.latent_height * info.latent_width), C = size_t(info.latent_bits);
    const size_t K = size_t(info.num_steps);
    std::vector<std::string> names;
    std::vector<bld::Request> requests;
    for (const Json &r : spec.at("requests"))
        if (r.value("op", "generate") == "generate") names.push_back(r.at("name")), requests.push_back(make_request(r));
    const std::vector<size_t> image_dims = {size_t(info.image_height), size_t(info.image_width),
                                            size_t(info.image_channels)};
    for (const Json &r : spec.at("requests")) {  // the autoencoder's operations
        const std::string op = r.value("op", "generate"), name = r.at("name");
        if (op == "generate") continue;
        const size_t count = r.at("count");
        try {
            if (op == "decode") {
                const auto images = pipe->decode(r.at("bits").get<std::vector<uint8_t>>());
                write_npy(out + name + ".images.npy", images, {count, image_dims[0], image_dims[1], image_dims[2]}, "|u1");
                continue;
            }
            const auto images = r.at("images").get<std::vector<uint8_t>>();
            if (op == "encode") {
                write_npy(out + name + ".bits.npy", pipe->encode(images), {count, L, C}, "|u1");
                write_npy(out + name + ".probs.npy", pipe->encode_probs(images), {count, L, C}, "<f4");
            } else {
                write_npy(out + name + ".bits.npy", pipe->encode(images, r.at("seeds").get<std::vector<uint64_t>>()),
                          {count, L, C}, "|u1");
            }
        } catch (const bld::Error &e) {
            write_text(out + name + ".error", std::to_string(e.kind()) + " " + e.what());
        }
    }
    for (size_t i = 0; i < requests.size(); ++i) {
        try {
            const bld::Generation g = pipe->generate(requests[i]);
            const size_t n = g.count;
            write_npy(out + names[i] + ".bits.npy", g.bits, {n, L, C}, "|u1");
            write_npy(out + names[i] + ".images.npy", g.images,
                      {n, size_t(info.image_height), size_t(info.image_width), size_t(info.image_channels)}, "|u1");
            if (requests[i].trace) {
                write_npy(out + names[i] + ".states.npy", g.trace_states, {K, n, L, C}, "|u1");
                write_npy(out + names[i] + ".probs.npy", g.trace_probs, {K, n, L, C}, "<f4");
            }
        } catch (const bld::Error &e) {
            write_text(out + names[i] + ".error", std::to_string(e.kind()) + " " + e.what());
        }
    }
    const int threads = spec.value("threads", 0);
    if (threads > 1) {  // every thread runs every request, in a different order, on one pipeline
        std::vector<std::vector<bld::Generation>> results(static_cast<size_t>(threads));
        std::vector<std::string> errors(static_cast<size_t>(threads));
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                results[size_t(t)].resize(requests.size());
                try {
                    for (size_t k = 0; k < requests.size(); ++k) {
                        const size_t i = (k + size_t(t)) % requests.size();
                        results[size_t(t)][i] = pipe->generate(requests[i]);
                    }
                } catch (const std::exception &e) {
                    errors[size_t(t)] = e.what();
                }
            });
        for (auto &th : pool) th.join();
        for (const auto &e : errors)
            if (!e.empty()) {
                write_text(out + "threads.error", e);
                return 1;
            }
        for (int t = 0; t < threads; ++t)
            for (size_t i = 0; i < requests.size(); ++i)
                write_npy(out + names[i] + ".thread" + std::to_string(t) + ".bits.npy", results[size_t(t)][i].bits,
                          {results[size_t(t)][i].count, L, C}, "|u1");
    }
    return 0;
}
