/**
 * @file bld.hpp
 * @brief The C++17 API of the bld runtime, header-only over the C ABI (bld.h).
 *
 * @code
 * auto pipe = bld::Pipeline::load("runs/digits/bundle");
 * bld::Request request = bld::Request::seed_range(42, 8);
 * request.classes = {3};
 * request.guidance = {1.0};
 * bld::Generation out = pipe.generate(request);   // out.images: (8, H, W, ch) uint8
 * @endcode
 *
 * Errors are bld::Error exceptions carrying the Python runtime's sentence and a kind. One
 * Pipeline may be shared by threads; Requests and Generations are plain values.
 */
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

/** The C++ API of the bld runtime. */
namespace bld {

/** A failed call: what() is the Python runtime's sentence, kind() what went wrong. */
class Error : public std::runtime_error {
  public:
    /**
     * @param kind What went wrong.
     * @param message One sentence.
     */
    Error(bld_error_kind kind, const std::string &message) : std::runtime_error(message), kind_(kind) {}
    /** @return What went wrong (bld_error_kind in bld.h). */
    bld_error_kind kind() const noexcept { return kind_; }

  private:
    bld_error_kind kind_;
};

/** Implementation details of the wrappers; not part of the API. */
namespace detail {

/**
 * @brief Throw a status as an Error (freeing it); nothing for NULL (success).
 * @param status What a C call returned.
 * @throws Error The status's kind and sentence.
 */
inline void check(bld_status *status) {
    if (!status) return;
    Error error(bld_status_kind(status), bld_status_message(status));
    bld_status_free(status);
    throw error;
}

/** Frees a C handle with its *_free function. */
template <class T, void (*Free)(T *)>
struct Deleter {
    /** @param p The handle to free (NULL is fine). */
    void operator()(T *p) const noexcept { Free(p); }
};
/** A C handle that frees itself. */
template <class T, void (*Free)(T *)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

}  // namespace detail

/** How Pipeline::load runs a bundle; the keys of bld_options_set (bld.h). */
struct Options {
    std::string backend = "cpu";  ///< cpu | cuda | tensorrt-ep | tensorrt
    std::string precision = "fp32";  ///< fp32 | fp16 (the bundle's *_fp16 graphs) | int8 (cpu, tensorrt)
    int intra_op_threads = 0;  ///< 0: onnxruntime's default
    int inter_op_threads = 0;  ///< 0: onnxruntime's default
    std::string graph_optimization = "all";  ///< disable | basic | extended | all
    int device_id = 0;  ///< the CUDA device
    std::string trt_cache_dir;  ///< engine cache folder (tensorrt-ep, tensorrt)
    bool trt_fp16 = false;  ///< tensorrt-ep: let TensorRT use fp16
    bool stop_spinning = true;  ///< park onnxruntime's threads after each call
    std::string thread_pool = "session";  ///< session | shared: one onnxruntime pool per process
    bool pin_threads = false;  ///< shared pool: its threads and the generating thread on own cores
    bool verify_hashes = true;  ///< check the graphs' sha256 when loading
};

/** What Pipeline::generate makes: one image per seed (see the bld_request_set_* in bld.h). */
struct Request {
    std::vector<uint64_t> seeds{0};  ///< one per image
    std::vector<int64_t> classes;    ///< empty: unconditional; one: all images; else per image
    std::vector<double> guidance;    ///< empty: the bundle's default; one; or per image
    std::vector<double> temperature;  ///< empty: the bundle's default; one; or per image
    /**
     * @var mask
     * Inpainting in latent space, uint8 0/1 of shape mask_shape = {rows, L, C}, rows 1 or one
     * per image (empty mask_shape: rows = mask.size() / (L * C)); where mask is 1 the known
     * bit is kept.
     * @var known_bits
     * The bits kept where mask is 1, of the same shape.
     */
    std::vector<uint8_t> mask, known_bits;
    std::vector<size_t> mask_shape;  ///< {rows, L, C}; empty: inferred from the sizes
    bool chunk = true;  ///< batches above max_batch run in chunks (false: an error)
    bool trace = false;  ///< record every step's input bits and probabilities
    bool profile = false;  ///< time the stages (Generation::profile)
    /** After each step (1..K) of each chunk with its bits (batch x L x C); false cancels. */
    std::function<bool(int64_t step, int64_t num_steps, const uint8_t *bits, size_t batch)> on_step;

    /**
     * @brief n images with seeds base, base + 1, ... (mod 2^64).
     * @param base The first seed.
     * @param n How many images.
     * @return A request with those seeds and every other field at its default.
     */
    static Request seed_range(uint64_t base, size_t n) {
        Request r;
        r.seeds.resize(n);
        for (size_t i = 0; i < n; ++i) r.seeds[i] = base + i;
        return r;
    }
};

/** What Pipeline::generate returns. */
struct Generation {
    size_t count = 0;  ///< N, the images
    std::vector<uint8_t> images;  ///< (N, H, W, channels)
    std::vector<uint8_t> bits;    ///< (N, L, C) 0/1
    std::vector<uint64_t> seeds;  ///< one per image
    std::vector<int64_t> classes;  ///< the null class means unconditional
    std::vector<uint8_t> trace_states;  ///< with trace: (K, N, L, C) bits fed to each step
    std::vector<float> trace_probs;     ///< with trace: (K, N, L, C) what each step returned
    /**
     * With profile: seconds per stage (see bld_profile in bld.h).
     */
    struct Profile {
        /**
         * @var Profile::total
         * The whole call.
         * @var Profile::initial
         * The request's checks and the initial draw.
         * @var Profile::decode
         * The decoder graphs.
         * @var Profile::step_model
         * The step graph, one per step call.
         * @var Profile::step_sampling
         * The draw, one per step call.
         */
        double total = 0, initial = 0, decode = 0;
        std::vector<double> step_model, step_sampling;  // one per step call
    } profile;  ///< zeros and empty unless Request::profile
};

/**
 * An image: uint8 (height, width, channels), row-major.
 */
struct Image {
    /**
     * @var Image::height
     * H.
     * @var Image::width
     * W.
     * @var Image::channels
     * 1 or 3.
     */
    std::vector<uint8_t> pixels;  ///< height * width * channels bytes
    size_t height = 0, width = 0, channels = 0;
};

/**
 * @brief Write one uint8 image (H, W, 1 or 3) as a PNG, atomically (bld_save_png).
 * @param path The file.
 * @param image height * width * channels bytes.
 * @param height H.
 * @param width W.
 * @param channels 1 or 3.
 * @throws Error For another channel count or a file that cannot be written.
 */
inline void save_png(const std::string &path, const uint8_t *image, size_t height, size_t width,
                     size_t channels) {
    detail::check(bld_save_png(path.c_str(), image, height, width, channels));
}

/**
 * @brief Read an 8-bit grayscale or RGB PNG that must have exactly this shape (bld_load_png).
 * @param path The file.
 * @param height H it must have.
 * @param width W it must have.
 * @param channels 1 or 3, which it must have.
 * @return The image.
 * @throws Error For another shape or mode, or a file that cannot be read.
 */
inline Image load_png(const std::string &path, size_t height, size_t width, size_t channels) {
    Image out{std::vector<uint8_t>(height * width * channels), height, width, channels};
    detail::check(bld_load_png(path.c_str(), height, width, channels, out.pixels.data()));
    return out;
}

/**
 * @brief n images (n, H, W, ch) tiled cols to a row (0: ceil(sqrt(n))), 2 black pixels apart.
 * @param images n * height * width * channels bytes.
 * @param n Images (>= 1).
 * @param height H of each.
 * @param width W of each.
 * @param channels Of each.
 * @param cols Tiles per row; 0 for ceil(sqrt(n)).
 * @return The grid.
 * @throws Error For no images.
 */
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

/**
 * @brief Pack (batch, L, C) 0/1 values as numpy.packbits(..., bitorder="little") per image.
 * @param bits batch * tokens * channels values, 0 or 1.
 * @param batch Images.
 * @param tokens L.
 * @param channels C.
 * @return batch * bld_packed_bytes(L, C) bytes.
 * @throws Error (BLD_ERROR_PACKED_BITS) For another size or a value other than 0 and 1.
 */
inline std::vector<uint8_t> pack_bits(const std::vector<uint8_t> &bits, size_t batch, size_t tokens,
                                      size_t channels) {
    if (bits.size() != batch * tokens * channels)
        throw Error(BLD_ERROR_PACKED_BITS, "bits must have batch * tokens * channels values");
    std::vector<uint8_t> packed(batch * bld_packed_bytes(tokens, channels));
    detail::check(bld_pack_bits(bits.data(), batch, tokens, channels, packed.data()));
    return packed;
}

/**
 * @brief Unpack what pack_bits made.
 * @param packed batch * bld_packed_bytes(L, C) bytes.
 * @param batch Images.
 * @param tokens L.
 * @param channels C.
 * @return batch * L * C values, 0 or 1.
 * @throws Error (BLD_ERROR_PACKED_BITS) For another size or a set pad bit.
 */
inline std::vector<uint8_t> unpack_bits(const std::vector<uint8_t> &packed, size_t batch, size_t tokens,
                                        size_t channels) {
    if (packed.size() != batch * bld_packed_bytes(tokens, channels))
        throw Error(BLD_ERROR_PACKED_BITS, "packed bits must have batch * packed_bytes values");
    std::vector<uint8_t> bits(batch * tokens * channels);
    detail::check(bld_unpack_bits(packed.data(), batch, tokens, channels, bits.data()));
    return bits;
}

// .bldz files (self-describing, crc-checked; bld_runtime/bits.py's format)
/**
 * @brief Write (batch, H*W, C) bits as a .bldz file, atomically (bld_save_bits).
 * @param path The file, ending in .bldz.
 * @param bits batch * H * W * C values, 0 or 1.
 * @param batch Latents.
 * @param latent_height H, in tokens.
 * @param latent_width W, in tokens.
 * @param latent_bits C.
 * @throws Error For another size, bits that are not 0/1, or a file that cannot be written.
 */
inline void save_bits(const std::string &path, const std::vector<uint8_t> &bits, size_t batch,
                      size_t latent_height, size_t latent_width, size_t latent_bits) {
    if (bits.size() != batch * latent_height * latent_width * latent_bits)
        throw Error(BLD_ERROR_PACKED_BITS, "bits must have batch * height * width * bits values");
    detail::check(bld_save_bits(path.c_str(), bits.data(), batch, latent_height, latent_width, latent_bits));
}

/**
 * @brief Read a .bldz file that must hold latents of this shape (bld_load_bits).
 * @param path The file.
 * @param latent_height H, in tokens.
 * @param latent_width W, in tokens.
 * @param latent_bits C.
 * @param[out] batch Set to the number of latents when not NULL.
 * @return batch * H * W * C values, 0 or 1.
 * @throws Error For a file that is truncated, corrupt, of another shape, or unreadable.
 */
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

/** A loaded bundle on a backend; one may be shared by threads. Movable, not copyable. */
class Pipeline {
  public:
    /**
     * @brief Load a bundle (bld_pipeline_load): manifest, paths, hashes, then the graphs.
     * @param bundle The bundle's folder, or its bld.json.
     * @param options The backend and its settings.
     * @return The pipeline.
     * @throws Error When the bundle does not check, an option is refused, or the backend
     *         cannot run here.
     */
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
            {"thread_pool", options.thread_pool},
            {"pin_threads", options.pin_threads ? "true" : "false"},
            {"verify_hashes", options.verify_hashes ? "true" : "false"}};
        for (const auto &[key, value] : settings) detail::check(bld_options_set(raw, key, value.c_str()));
        bld_pipeline *pipeline = nullptr;
        detail::check(bld_pipeline_load(bundle.c_str(), raw, &pipeline));
        return Pipeline(pipeline);
    }

    /** @return The bundle's shapes and defaults. */
    const bld_pipeline_info &info() const { return info_; }
    /** @return L * C, the values of one latent. */
    size_t latent_size() const { return size_t(info_.latent_height * info_.latent_width * info_.latent_bits); }
    /** @return H * W * channels, the bytes of one image. */
    size_t image_size() const { return size_t(info_.image_height * info_.image_width * info_.image_channels); }
    /** @return The C handle, for the C functions (owned by this Pipeline). */
    bld_pipeline *handle() const { return handle_.get(); }

    /**
     * @brief Generate the request's images (bld_pipeline_generate).
     * @param request What to make.
     * @return The images, bits, seeds and classes (and trace and profile when asked).
     * @throws Error For a request out of range, or BLD_ERROR_CANCELLED when on_step returned
     *         false; an exception thrown by on_step is rethrown as it is.
     */
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

    /**
     * @brief uint8 images (n, H, W, ch) -> float (n, L, C) bit probabilities.
     * @param images n whole images.
     * @return n * L * C probabilities.
     * @throws Error When images does not hold whole images, or the backend fails.
     */
    std::vector<float> encode_probs(const std::vector<uint8_t> &images) {
        const size_t n = count_of(images, image_size(), "images");
        std::vector<float> probs(n * latent_size());
        detail::check(bld_pipeline_encode_probs(handle_.get(), images.data(), n, probs.data()));
        return probs;
    }

    /**
     * @brief Deterministic encoding: bits = p > 0.5.
     * @param images n whole images.
     * @return n * L * C bits, 0 or 1.
     * @throws Error When images does not hold whole images, or the backend fails.
     */
    std::vector<uint8_t> encode(const std::vector<uint8_t> &images) {
        const size_t n = count_of(images, image_size(), "images");
        std::vector<uint8_t> bits(n * latent_size());
        detail::check(bld_pipeline_encode(handle_.get(), images.data(), n, bits.data()));
        return bits;
    }

    /**
     * @brief Seeded encoding: each bit drawn from p (Philox subsequence 0 of its image's seed).
     * @param images n whole images.
     * @param seeds n seeds, one per image.
     * @return n * L * C bits, 0 or 1.
     * @throws Error For another number of seeds, partial images, or the backend's failure.
     */
    std::vector<uint8_t> encode(const std::vector<uint8_t> &images, const std::vector<uint64_t> &seeds) {
        const size_t n = count_of(images, image_size(), "images");
        if (seeds.size() != n)
            throw Error(BLD_ERROR_INVALID_REQUEST, "got " + std::to_string(seeds.size()) + " seeds for " +
                                                       std::to_string(n) + " images");
        std::vector<uint8_t> bits(n * latent_size());
        detail::check(bld_pipeline_encode_seeded(handle_.get(), images.data(), n, seeds.data(), bits.data()));
        return bits;
    }

    /**
     * @brief bits (n, L, C) -> uint8 images (n, H, W, ch).
     * @param bits n whole latents, 0 or 1.
     * @return n * H * W * ch bytes.
     * @throws Error For partial latents, values other than 0 and 1, or the backend's failure.
     */
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
