#include "pipeline.hpp"

#include <cfloat>
#include <chrono>
#include <cmath>

#include "draw.hpp"
#include "error.hpp"
#include "pyfmt.hpp"

namespace bld::core {

#ifndef BLD_WITH_TENSORRT
std::unique_ptr<Backend> create_tensorrt_backend(const Bundle &, const BackendOptions &) {
    fail(BLD_ERROR_BACKEND_UNAVAILABLE,
         "backend 'tensorrt' is not part of this build of the bld runtime; configure it with "
         "-DBLD_WITH_TENSORRT=ON where the TensorRT headers are (or use backend tensorrt-ep)");
}
#endif

namespace {

constexpr size_t kMaxIdleLoops = 8;

// Stage timing for profiled requests; a no-op otherwise.
class Stopwatch {
  public:
    explicit Stopwatch(bool on) : on_(on) { lap(); }
    double lap() {  // seconds since the last lap
        if (!on_) return 0;
        const auto now = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(now - last_).count();
        last_ = now;
        return s;
    }

  private:
    bool on_;
    std::chrono::steady_clock::time_point last_;
};

// Python's Pipeline._per_image: a default, one value for all or one per image; finite and ok.
std::vector<float> per_image(const char *name, const std::vector<double> &values, double fallback,
                             size_t count, bool positive) {
    std::vector<double> v = values.empty() ? std::vector<double>{fallback} : values;
    if (v.size() != 1 && v.size() != count)
        invalid_request(std::string(name) + " must be one number or one per image (" +
                        std::to_string(count) + "), got shape " + py::tuple(std::vector<size_t>{v.size()}));
    for (double x : v)
        if (!(std::isfinite(x) && (positive ? x > 0 : x >= 0)))
            invalid_request(std::string(name) + " must be finite and " + (positive ? "> 0" : ">= 0") +
                            ", got " + py::format_g(x));
        else if (std::fabs(x) > FLT_MAX)  // the graphs take float32
            invalid_request(std::string(name) + " must be at most 3.403e+38 (float32), got " + py::format_g(x));
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) out[i] = static_cast<float>(v.size() == 1 ? v[0] : v[i]);
    return out;
}

// Python's Pipeline._check_bits for a (rows, tokens, bits) uint8 array.
void check_bits(const char *name, const std::vector<uint8_t> &data, size_t rows, size_t tokens,
                size_t bits, size_t L, size_t C, size_t count) {
    if (tokens != L || bits != C)
        invalid_request(std::string(name) + " must be 0/1 integers shaped (N, " + std::to_string(L) + ", " +
                        std::to_string(C) + "), got uint8 " + py::tuple(std::vector<size_t>{rows, tokens, bits}));
    for (uint8_t v : data)
        if (v > 1) invalid_request(std::string(name) + " must hold only 0 and 1");
    if (count && rows != 1 && rows != count)
        invalid_request(std::string(name) + " has " + std::to_string(rows) + " rows for " +
                        std::to_string(count) + " images");
}

// Rows of a (1 or count, n) array for images lo..hi, broadcast.
std::vector<uint8_t> rows_for(const std::vector<uint8_t> &a, size_t rows, size_t n, size_t lo, size_t hi) {
    std::vector<uint8_t> out((hi - lo) * n);
    for (size_t i = lo; i < hi; ++i)
        std::copy_n(a.begin() + static_cast<std::ptrdiff_t>((rows == 1 ? 0 : i) * n), n,
                    out.begin() + static_cast<std::ptrdiff_t>((i - lo) * n));
    return out;
}

}  // namespace

Pipeline::Pipeline(Bundle bundle, std::unique_ptr<Backend> backend)
    : bundle_(std::move(bundle)), backend_(std::move(backend)) {}

std::unique_ptr<Pipeline> Pipeline::load(const std::string &dir, const BackendOptions &options) {
    if (options.precision != "fp32" && options.precision != "fp16" && options.precision != "int8" &&
        options.precision != "bf16")
        invalid_request("precision must be one of fp32, fp16, int8, bf16, got " + py::repr(options.precision));
    Bundle bundle = load_bundle(dir);
    auto backend = create_backend(bundle, options);
    return std::unique_ptr<Pipeline>(new Pipeline(std::move(bundle), std::move(backend)));
}

ImageShape Pipeline::image_shape() const {
    const auto &i = manifest().image;
    return {size_t(i.height), size_t(i.width), size_t(i.channels)};
}

size_t Pipeline::latent_size() const { return size_t(manifest().latent.tokens() * manifest().latent.bits); }

void Pipeline::check_batch(size_t count, bool chunk) const {
    if (count < 1) invalid_request("batch size must be at least 1, got " + std::to_string(count));
    const auto max = size_t(manifest().max_batch);
    if (count > max && !chunk)
        invalid_request("batch size " + std::to_string(count) + " is above this bundle's max_batch of " +
                        std::to_string(max) + " (allow chunking or send fewer images)");
}

std::unique_ptr<Loop> Pipeline::acquire(size_t batch) {
    {
        std::lock_guard<std::mutex> lock(pool_mutex_);
        auto found = pool_.find(batch);
        if (found != pool_.end()) {
            auto loop = std::move(found->second);
            pool_.erase(found);
            return loop;
        }
    }
    return backend_->make_loop(batch);  // outside the lock: it allocates and binds
}

void Pipeline::release(std::unique_ptr<Loop> loop) {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (pool_.size() < kMaxIdleLoops) pool_.emplace(loop->batch(), std::move(loop));
}

Generation Pipeline::generate(const Request &r) {
    Stopwatch total(r.profile);  // pinning this thread and giving its CPUs back are part of the call
    Generation out;
    {
        const CallerPin pin(backend_->caller_cpu());  // option pin_threads: this thread, for the call
        out = generate_pinned(r);
    }
    out.total_s = total.lap();
    return out;
}

Generation Pipeline::generate_pinned(const Request &r) {
    Stopwatch clock(r.profile);
    const Manifest &m = manifest();
    const size_t count = r.seeds.size(), n = latent_size(), max = size_t(m.max_batch);
    const auto K = static_cast<size_t>(num_steps());
    if (count == 0) invalid_request("batch size must be at least 1, got 0 seeds");  // philox.request_seeds
    check_batch(count, r.chunk);

    Generation out;
    out.count = count;
    out.seeds = r.seeds;
    const auto null_class = m.classes.null_class;
    if (r.classes.empty()) {
        out.classes.assign(count, null_class);
    } else {
        if (r.classes.size() != 1 && r.classes.size() != count)
            invalid_request("got " + std::to_string(r.classes.size()) + " classes for " +
                            std::to_string(count) + " images");
        for (int64_t c : r.classes)
            if (c < 0 || c > null_class)
                invalid_request(m.classes.count
                                    ? "class " + std::to_string(c) + " is out of range: this bundle has classes 0.." +
                                          std::to_string(m.classes.count - 1) + " (" +
                                          std::to_string(null_class) + " = unconditional)"
                                    : "class " + std::to_string(c) +
                                          " is out of range: this bundle is unconditional (class 0)");
        for (size_t i = 0; i < count; ++i) out.classes.push_back(r.classes[r.classes.size() == 1 ? 0 : i]);
    }
    const auto guidance = per_image("guidance", r.guidance, m.defaults.guidance, count, false);
    const auto temperature = per_image("temperature", r.temperature, m.defaults.temperature, count, true);
    const bool masked = r.mask_given || r.known_given;
    if (masked) {
        if (!r.mask_given || !r.known_given) invalid_request("inpainting needs both mask and known_bits");
        const size_t L = size_t(m.latent.tokens()), C = size_t(m.latent.bits);
        check_bits("mask", r.mask, r.mask_rows, r.mask_tokens, r.mask_bits, L, C, count);
        check_bits("known_bits", r.known, r.mask_rows, r.mask_tokens, r.mask_bits, L, C, count);
    }
    bool guided = false;
    for (float g : guidance) guided = guided || g > 0.0f;

    out.bits.resize(count * n);
    if (r.profile) {
        const size_t calls = K * ((count + max - 1) / max);
        out.step_model_s.reserve(calls);
        out.step_sampling_s.reserve(calls);
    }
    if (r.trace) {
        out.trace_states.resize(K * count * n);
        out.trace_probs.resize(K * count * n);
    }
    for (size_t lo = 0; lo < count; lo += max) {
        const size_t hi = std::min(lo + max, count), b = hi - lo;
        std::vector<uint8_t> keep, known;
        if (masked) {
            keep = rows_for(r.mask, r.mask_rows, n, lo, hi);
            known = rows_for(r.known, r.mask_rows, n, lo, hi);
        }
        std::unique_ptr<Loop> loop = acquire(b);
        struct Lease {  // the loop goes back to the pool however this chunk ends
            Pipeline *p;
            std::unique_ptr<Loop> &loop;
            ~Lease() { p->release(std::move(loop)); }
        } lease{this, loop};
        clock.lap();
        loop->start({&out.seeds[lo], &out.classes[lo], &temperature[lo], &guidance[lo], guided,
                     masked ? keep.data() : nullptr, masked ? known.data() : nullptr});
        out.initial_s += clock.lap();
        for (size_t i = 0; i < K; ++i) {
            if (r.trace) std::copy_n(loop->bits(), b * n, &out.trace_states[(i * count + lo) * n]);
            clock.lap();
            loop->run_step(static_cast<int64_t>(i));
            if (r.profile) out.step_model_s.push_back(clock.lap());
            if (r.trace) loop->read_probs(&out.trace_probs[(i * count + lo) * n]);
            clock.lap();
            loop->advance(static_cast<int64_t>(i));
            if (r.profile) out.step_sampling_s.push_back(clock.lap());
            if (r.on_step && !r.on_step(int64_t(i + 1), int64_t(K), loop->bits(), b))
                fail(BLD_ERROR_CANCELLED, "generation cancelled by the callback after step " +
                                              std::to_string(i + 1) + " of " + std::to_string(K));
        }
        std::copy_n(loop->bits(), b * n, &out.bits[lo * n]);
        clock.lap();
    }
    out.images.resize(count * image_shape().pixels());
    decode_bits(out.bits.data(), count, out.images.data(), r.profile ? &out.decode_s : nullptr);
    out.profiled = r.profile;
    return out;
}

void Pipeline::encode_probs(const uint8_t *images, size_t count, float *probs) {
    check_batch(count, true);
    const ImageShape s = image_shape();
    const size_t n = latent_size(), max = size_t(manifest().max_batch);
    std::vector<float> x(std::min(count, max) * s.pixels());
    for (size_t lo = 0; lo < count; lo += max) {
        const size_t b = std::min(max, count - lo);
        to_float_nchw(images + lo * s.pixels(), b, s, x.data());
        backend_->encode(x.data(), b, probs + lo * n);
    }
}

void Pipeline::encode(const uint8_t *images, size_t count, uint8_t *bits) {
    std::vector<float> probs(count * latent_size());
    encode_probs(images, count, probs.data());
    for (size_t e = 0; e < probs.size(); ++e) bits[e] = probs[e] > 0.5f;
}

void Pipeline::encode_seeded(const uint8_t *images, size_t count, const uint64_t *seeds, uint8_t *bits) {
    const size_t n = latent_size();
    std::vector<float> probs(count * n), drawn(n);
    encode_probs(images, count, probs.data());
    for (size_t i = 0; i < count; ++i) {
        draw_image(&probs[i * n], seeds[i], 0, n, drawn.data(), nullptr, nullptr);
        for (size_t e = 0; e < n; ++e) bits[i * n + e] = drawn[e] != 0.0f;
    }
}

void Pipeline::decode(const uint8_t *bits, size_t count, uint8_t *images, double *graph_seconds) {
    for (size_t e = 0; e < count * latent_size(); ++e)
        if (bits[e] > 1) invalid_request("bits must hold only 0 and 1");
    check_batch(count, true);
    decode_bits(bits, count, images, graph_seconds);
}

void Pipeline::decode_bits(const uint8_t *bits, size_t count, uint8_t *images, double *graph_seconds) {
    const size_t n = latent_size(), max = size_t(manifest().max_batch);
    const ImageShape s = image_shape();
    std::vector<float> x(std::min(count, max) * n), y(std::min(count, max) * s.pixels());
    for (size_t lo = 0; lo < count; lo += max) {
        const size_t b = std::min(max, count - lo);
        std::transform(bits + lo * n, bits + (lo + b) * n, x.begin(), [](uint8_t v) { return float(v); });
        Stopwatch graph(graph_seconds != nullptr);
        backend_->decode(x.data(), b, y.data());
        if (graph_seconds) *graph_seconds += graph.lap();
        from_float_nchw(y.data(), b, s, images + lo * s.pixels());
    }
}

}  // namespace bld::core
