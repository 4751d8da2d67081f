// The core pipeline (bld_runtime/pipeline.py in C++): load a bundle onto a backend, check
// every request argument before any work (one clear error per problem, in Python's words),
// run the K-step loop in chunks of at most max_batch, decode, encode. Thread-safe: the
// sessions are shared, and each call takes a loop of its batch size from a pool.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.hpp"
#include "bundle.hpp"
#include "images.hpp"

namespace bld::core {

struct Request {
    std::vector<uint64_t> seeds{0};     // one per image
    std::vector<int64_t> classes;       // empty: unconditional; 1: all; else one per image
    std::vector<double> guidance;       // empty: the bundle's default; 1: all; else per image
    std::vector<double> temperature;
    std::vector<uint8_t> mask, known;   // inpainting, each (rows, tokens, bits); 1 keeps
    bool mask_given = false, known_given = false;
    size_t mask_rows = 0, mask_tokens = 0, mask_bits = 0;
    bool chunk = true;
    bool trace = false;
    bool profile = false;
    // After each step (1..K) of each chunk with its bits (batch x L x C); false cancels.
    std::function<bool(int64_t step, int64_t num_steps, const uint8_t *bits, size_t batch)> on_step;
};

struct Generation {
    size_t count = 0;
    std::vector<uint8_t> images;  // (N, H, W, ch)
    std::vector<uint8_t> bits;    // (N, L, C)
    std::vector<uint64_t> seeds;
    std::vector<int64_t> classes;
    std::vector<uint8_t> trace_states;  // (K, N, L, C) with trace
    std::vector<float> trace_probs;
    bool profiled = false;  // with profile: seconds per stage
    double total_s = 0, initial_s = 0, decode_s = 0;
    std::vector<double> step_model_s, step_sampling_s;
};

class Pipeline {
  public:
    static std::unique_ptr<Pipeline> load(const std::string &bundle, const BackendOptions &options);

    Generation generate(const Request &request);
    void encode_probs(const uint8_t *images, size_t n, float *probs);
    void encode(const uint8_t *images, size_t n, uint8_t *bits);
    void encode_seeded(const uint8_t *images, size_t n, const uint64_t *seeds, uint8_t *bits);
    // graph_seconds, if given, gets the time spent in the decoder graph added.
    void decode(const uint8_t *bits, size_t n, uint8_t *images, double *graph_seconds = nullptr);

    const Manifest &manifest() const { return bundle_.manifest; }
    ImageShape image_shape() const;
    size_t latent_size() const;  // L * C
    int64_t num_steps() const { return manifest().schedule.sampling_steps; }

  private:
    Pipeline(Bundle bundle, std::unique_ptr<Backend> backend);
    std::unique_ptr<Loop> acquire(size_t batch);
    void release(std::unique_ptr<Loop> loop);
    void check_batch(size_t count, bool chunk) const;
    Generation generate_pinned(const Request &request);  // generate, on the pinned thread
    // decode for bits known to hold only 0 and 1 (generate's own)
    void decode_bits(const uint8_t *bits, size_t n, uint8_t *images, double *graph_seconds);

    Bundle bundle_;
    std::unique_ptr<Backend> backend_;
    std::mutex pool_mutex_;
    std::multimap<size_t, std::unique_ptr<Loop>> pool_;  // idle loops by batch size
};

}  // namespace bld::core
