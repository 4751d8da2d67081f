// bld.hpp: the C++17 API of the bld runtime, header-only over the C ABI (bld.h).
//
//     auto pipe = bld::Pipeline::load("runs/digits/bundle");
//     bld::Request request = bld::Request::seed_range(42, 8);
//     request.classes = {3};
//     request.guidance = {1.0};
//     bld::Generation out = pipe.generate(request);   // out.images: (8, H, W, ch) uint8
//
// Errors are bld::Error exceptions carrying the Python runtime's sentence and a kind. One
// Pipeline may be shared by threads; Requests and Generations are plain values.
#ifndef BLD_HPP
#define BLD_HPP

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bld/bld.h"

namespace bld {

class Error : public std::runtime_error {
  public:
    Error(bld_error_kind kind, const std::string &message) : std::runtime_error(message), kind_(kind) {}
    bld_error_kind kind() const noexcept { return kind_; }

  private:
    bld_error_kind kind_;
};

namespace detail {

inline void check(bld_status *status) {
    if (!status) return;
    Error error(bld_status_kind(status), bld_status_message(status));
    bld_status_free(status);
    throw error;
}

template <class T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

}  // namespace detail

struct Options {
    std::string backend = "cpu";  // cpu | cuda | tensorrt-ep | tensorrt
    std::string precision = "fp32";
    int intra_op_threads = 0;  // 0: onnxruntime's default
    int inter_op_threads = 0;
    std::string graph_optimization = "all";
    int device_id = 0;
    std::string trt_cache_dir;
    bool trt_fp16 = false;
    bool stop_spinning = true;
    bool verify_hashes = true;
};

struct Request {
    std::vector<uint64_t> seeds{0};  // one per image
    std::vector<int64_t> classes;    // empty: unconditional; one: all images; else per image
    std::vector<double> guidance;    // empty: the bundle's default; one; or per image
    std::vector<double> temperature;
    // Inpainting in latent space, uint8 0/1 of shape mask_shape = {rows, L, C}, rows 1 or one
    // per image (empty mask_shape: rows = mask.size() / (L * C)); where mask is 1 the known
    // bit is kept.
    std::vector<uint8_t> mask, known_bits;
    std::vector<size_t> mask_shape;
    bool chunk = true;  // batches above max_batch run in chunks (false: an error)
    bool trace = false;  // record every step's input bits and probabilities
    bool profile = false;  // time the stages (Generation::profile)
    // After each step (1..K) of each chunk with its bits (batch x L x C); false cancels.
    std::function<bool(int64_t step, int64_t num_steps, const uint8_t *bits, size_t batch)> on_step;

    static Request seed_range(uint64_t base, size_t n) {  // seeds base, base + 1, ... mod 2^64
        Request r;
        r.seeds.resize(n);
        for (size_t i = 0; i < n; ++i) r.seeds[i] = base + i;
        return r;
    }
};

struct Generation {
    size_t count = 0;
    std::vector<uint8_t> images;  // (N, H, W, channels)
    std::vector<uint8_t> bits;    // (N, L, C) 0/1
    std::vector<uint64_t> seeds;
    std::vector<int64_t> classes;  // the null class means unconditional
    std::vector<uint8_t> trace_states;  // with trace: (K, N, L, C) bits fed to each step
    std::vector<float> trace_probs;     // with trace: (K, N, L, C) what each step returned
    struct Profile {  // with profile: seconds per stage (see bld_profile in bld.h)
        double total = 0, initial = 0, decode = 0;
        std::vector<double> step_model, step_sampling;  // one per step call
    } profile;
};

struct Image {  // uint8 (height, width, channels)
    std::vector<uint8_t> pixels;
    size_t height = 0, width = 0, channels = 0;
};

inline void save_png(const std::string &path, const uint8_t *image, size_t height, size_t width,
                     size_t channels) {
    detail::check(bld_save_png(path.c_str(), image, height, width, channels));
}

inline Image load_png(const std::string &path, size_t height, size_t width, size_t channels) {
    Image out{std::vector<uint8_t>(height * width * channels), height, width, channels};
    detail::check(bld_load_png(path.c_str(), height, width, channels, out.pixels.data()));
    return out;
}

// n images (n, H, W, ch) tiled cols to a row (0: ceil(sqrt(n))), 2 black pixels apart.
inline Image make_grid(const uint8_t *images, size_t n, size_t height, size_t width, size_t channels,
                       size_t cols = 0) {
    bld_buffer *buffer = nullptr;
    Image out;
    detail::check(bld_make_grid(images, n, height, width, channels, cols, &buffer, &out.height, &out.width));
    detail::Handle<bld_buffer, bld_buffer_free> owned(buffer);
    size_t size = 0;
    const uint8_t *data = bld_buffer_data(buffer, &size);
    out.pixels.assign(data, data + size);
    out.channels = channels;
    return out;
}

inline std::vector<uint8_t> pack_bits(const std::vector<uint8_t> &bits, size_t batch, size_t tokens,
                                      size_t channels) {
    if (bits.size() != batch * tokens * channels)
        throw Error(BLD_ERROR_PACKED_BITS, "bits must have batch * tokens * channels values");
    std::vector<uint8_t> packed(batch * bld_packed_bytes(tokens, channels));
    detail::check(bld_pack_bits(bits.data(), batch, tokens, channels, packed.data()));
    return packed;
}

inline std::vector<uint8_t> unpack_bits(const std::vector<uint8_t> &packed, size_t batch, size_t tokens,
                                        size_t channels) {
    if (packed.size() != batch * bld_packed_bytes(tokens, channels))
        throw Error(BLD_ERROR_PACKED_BITS, "packed bits must have batch * packed_bytes values");
    std::vector<uint8_t> bits(batch * tokens * channels);
    detail::check(bld_unpack_bits(packed.data(), batch, tokens, channels, bits.data()));
    return bits;
}

// .bldz files (self-describing, crc-checked; bld_runtime/bits.py's format)
inline void save_bits(const std::string &path, const std::vector<uint8_t> &bits, size_t batch,
                      size_t latent_height, size_t latent_width, size_t latent_bits) {
    if (bits.size() != batch * latent_height * latent_width * latent_bits)
        throw Error(BLD_ERROR_PACKED_BITS, "bits must have batch * height * width * bits values");
    detail::check(bld_save_bits(path.c_str(), bits.data(), batch, latent_height, latent_width, latent_bits));
}

inline std::vector<uint8_t> load_bits(const std::string &path, size_t latent_height, size_t latent_width,
                                      size_t latent_bits, size_t *batch = nullptr) {
    bld_buffer *buffer = nullptr;
    size_t count = 0;
    detail::check(bld_load_bits(path.c_str(), latent_height, latent_width, latent_bits, &buffer, &count));
    detail::Handle<bld_buffer, bld_buffer_free> owned(buffer);
    size_t size = 0;
    const uint8_t *data = bld_buffer_data(buffer, &size);
    if (batch) *batch = count;
    return std::vector<uint8_t>(data, data + size);
}

class Pipeline {
  public:
    static Pipeline load(const std::string &bundle, const Options &options = {}) {
        bld_options *raw = nullptr;
        detail::check(bld_options_create(&raw));
        detail::Handle<bld_options, bld_options_free> opts(raw);
        const std::pair<const char *, std::string> settings[] = {
            {"backend", options.backend},
            {"precision", options.precision},
            {"intra_op_threads", std::to_string(options.intra_op_threads)},
            {"inter_op_threads", std::to_string(options.inter_op_threads)},
            {"graph_optimization", options.graph_optimization},
            {"device_id", std::to_string(options.device_id)},
            {"trt_cache_dir", options.trt_cache_dir},
            {"trt_fp16", options.trt_fp16 ? "true" : "false"},
            {"stop_spinning", options.stop_spinning ? "true" : "false"},
            {"verify_hashes", options.verify_hashes ? "true" : "false"}};
        for (const auto &[key, value] : settings) detail::check(bld_options_set(raw, key, value.c_str()));
        bld_pipeline *pipeline = nullptr;
        detail::check(bld_pipeline_load(bundle.c_str(), raw, &pipeline));
        return Pipeline(pipeline);
    }

    const bld_pipeline_info &info() const { return info_; }
    size_t latent_size() const { return size_t(info_.latent_height * info_.latent_width * info_.latent_bits); }
    size_t image_size() const { return size_t(info_.image_height * info_.image_width * info_.image_channels); }
    bld_pipeline *handle() const { return handle_.get(); }

    Generation generate(const Request &request) {
        bld_request *raw = nullptr;
        detail::check(bld_request_create(&raw));
        detail::Handle<bld_request, bld_request_free> req(raw);
        detail::check(bld_request_set_seeds(raw, request.seeds.data(), request.seeds.size()));
        detail::check(bld_request_set_classes(raw, request.classes.data(), request.classes.size()));
        detail::check(bld_request_set_guidance(raw, request.guidance.data(), request.guidance.size()));
        detail::check(bld_request_set_temperature(raw, request.temperature.data(), request.temperature.size()));
        if (!request.mask.empty() || !request.known_bits.empty()) set_mask(raw, request);
        detail::check(bld_request_set_chunk(raw, request.chunk));
        detail::check(bld_request_set_trace(raw, request.trace));
        detail::check(bld_request_set_profile(raw, request.profile));
        Callback callback{&request.on_step, nullptr};
        if (request.on_step) detail::check(bld_request_set_callback(raw, &Callback::call, &callback));
        bld_generation *gen = nullptr;
        bld_status *status = bld_pipeline_generate(handle_.get(), raw, &gen);
        if (callback.error) {  // the callback threw: rethrow it, not the cancellation
            bld_status_free(status);
            std::rethrow_exception(callback.error);
        }
        detail::check(status);
        detail::Handle<bld_generation, bld_generation_free> owned(gen);
        Generation out;
        out.count = bld_generation_count(gen);
        size_t size = 0;
        const uint8_t *p = bld_generation_images(gen, &size);
        out.images.assign(p, p + size);
        p = bld_generation_bits(gen, &size);
        out.bits.assign(p, p + size);
        out.seeds.assign(bld_generation_seeds(gen), bld_generation_seeds(gen) + out.count);
        out.classes.assign(bld_generation_classes(gen), bld_generation_classes(gen) + out.count);
        if ((p = bld_generation_trace_states(gen, &size))) out.trace_states.assign(p, p + size);
        if (const float *f = bld_generation_trace_probs(gen, &size)) out.trace_probs.assign(f, f + size);
        bld_profile profile{};
        if (bld_generation_get_profile(gen, &profile)) {
            out.profile.total = profile.total, out.profile.initial = profile.initial;
            out.profile.decode = profile.decode;
            out.profile.step_model.assign(profile.step_model, profile.step_model + profile.steps);
            out.profile.step_sampling.assign(profile.step_sampling, profile.step_sampling + profile.steps);
        }
        return out;
    }

    // uint8 images (n, H, W, ch) -> float (n, L, C) bit probabilities
    std::vector<float> encode_probs(const std::vector<uint8_t> &images) {
        const size_t n = count_of(images, image_size(), "images");
        std::vector<float> probs(n * latent_size());
        detail::check(bld_pipeline_encode_probs(handle_.get(), images.data(), n, probs.data()));
        return probs;
    }

    // Deterministic encoding: bits = p > 0.5.
    std::vector<uint8_t> encode(const std::vector<uint8_t> &images) {
        const size_t n = count_of(images, image_size(), "images");
        std::vector<uint8_t> bits(n * latent_size());
        detail::check(bld_pipeline_encode(handle_.get(), images.data(), n, bits.data()));
        return bits;
    }

    // Seeded encoding: each bit drawn from p (Philox subsequence 0 of its image's seed).
    std::vector<uint8_t> encode(const std::vector<uint8_t> &images, const std::vector<uint64_t> &seeds) {
        const size_t n = count_of(images, image_size(), "images");
        if (seeds.size() != n)
            throw Error(BLD_ERROR_INVALID_REQUEST, "got " + std::to_string(seeds.size()) + " seeds for " +
                                                       std::to_string(n) + " images");
        std::vector<uint8_t> bits(n * latent_size());
        detail::check(bld_pipeline_encode_seeded(handle_.get(), images.data(), n, seeds.data(), bits.data()));
        return bits;
    }

    // bits (n, L, C) -> uint8 images (n, H, W, ch)
    std::vector<uint8_t> decode(const std::vector<uint8_t> &bits) {
        const size_t n = count_of(bits, latent_size(), "bits");
        std::vector<uint8_t> images(n * image_size());
        detail::check(bld_pipeline_decode(handle_.get(), bits.data(), n, images.data()));
        return images;
    }

  private:
    explicit Pipeline(bld_pipeline *p) : handle_(p) { bld_pipeline_get_info(p, &info_); }

    struct Callback {  // carries the std::function and any exception across the C ABI
        const std::function<bool(int64_t, int64_t, const uint8_t *, size_t)> *fn;
        std::exception_ptr error;
        static int call(void *user, int64_t step, int64_t steps, const uint8_t *bits, size_t batch) {
            auto *self = static_cast<Callback *>(user);
            try {
                return (*self->fn)(step, steps, bits, batch) ? 1 : 0;
            } catch (...) {
                self->error = std::current_exception();
                return 0;
            }
        }
    };

    void set_mask(bld_request *raw, const Request &r) const {
        const size_t L = size_t(info_.latent_height * info_.latent_width), C = size_t(info_.latent_bits);
        std::vector<size_t> shape = r.mask_shape;
        const size_t size = r.mask.empty() ? r.known_bits.size() : r.mask.size();
        if (shape.empty()) shape = size % (L * C) == 0 ? std::vector<size_t>{size / (L * C), L, C}
                                                       : std::vector<size_t>{1, size, 1};
        if (shape.size() != 3 || shape[0] * shape[1] * shape[2] != size ||
            (!r.mask.empty() && !r.known_bits.empty() && r.mask.size() != r.known_bits.size()))
            throw Error(BLD_ERROR_INVALID_REQUEST,
                        "mask and known_bits must both hold mask_shape = {rows, tokens, bits} values");
        detail::check(bld_request_set_mask(raw, r.mask.empty() ? nullptr : r.mask.data(),
                                           r.known_bits.empty() ? nullptr : r.known_bits.data(),
                                           shape[0], shape[1], shape[2]));
    }

    static size_t count_of(const std::vector<uint8_t> &v, size_t per_item, const char *what) {
        if (per_item == 0 || v.size() % per_item != 0)
            throw Error(BLD_ERROR_INVALID_REQUEST, std::string(what) + " must hold whole items of " +
                                                       std::to_string(per_item) + " values each");
        return v.size() / per_item;
    }

    detail::Handle<bld_pipeline, bld_pipeline_free> handle_;
    bld_pipeline_info info_{};
};

}  // namespace bld

#endif  // BLD_HPP
