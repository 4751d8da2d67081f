// The C ABI (bld.h) over the core. Every entry point catches everything: a core Failure keeps
// its kind and sentence, a std::bad_alloc and anything else become BLD_ERROR_INTERNAL.
#include "bld/bld.h"

#include <cstring>
#include <new>

#include "bits.hpp"
#include "error.hpp"
#include "images.hpp"
#include "manifest.hpp"
#include "pipeline.hpp"
#include "pyfmt.hpp"

#ifndef BLD_VERSION
#define BLD_VERSION "0.0.0"
#endif

using namespace bld::core;

struct bld_status {
    bld_error_kind kind;
    std::string message;
};
struct bld_options {
    BackendOptions values;
};
struct bld_pipeline {
    std::unique_ptr<Pipeline> core;
};
struct bld_request {
    Request core;
};
struct bld_generation {
    Generation core;
};
struct bld_buffer {
    std::vector<uint8_t> data;
};

namespace {

// What the Python runtime says when memory runs out (errors.describe).
constexpr const char *kOutOfMemory = "out of memory; ask for fewer images or a smaller batch";

// Returned when even the status cannot be allocated; bld_status_free leaves it alone.
bld_status out_of_memory{BLD_ERROR_INTERNAL, kOutOfMemory};

bld_status *status(bld_error_kind kind, const std::string &message) {
    try {
        return new bld_status{kind, message};
    } catch (...) {
        return &out_of_memory;
    }
}

template <class F>
bld_status *guard(F body) {
    try {
        body();
        return nullptr;
    } catch (const Failure &e) {
        return status(e.kind(), e.what());
    } catch (const std::bad_alloc &) {
        return status(BLD_ERROR_INTERNAL, kOutOfMemory);
    } catch (const std::filesystem::filesystem_error &e) {
        return status(BLD_ERROR_IO, e.code().message() + ": " + e.path1().string());
    } catch (const std::exception &e) {
        return status(BLD_ERROR_INTERNAL, e.what());
    } catch (...) {
        return status(BLD_ERROR_INTERNAL, "unknown error");
    }
}

void require_arg(bool ok, const char *what) {
    if (!ok) invalid_request(std::string(what) + " must not be NULL");
}

int64_t option_int(const std::string &key, const std::string &value) {
    size_t used = 0;
    long long v = -1;
    try {
        v = std::stoll(value, &used);
    } catch (...) {
        used = 0;
    }
    if (used != value.size() || v < 0)
        invalid_request(key + " must be an integer >= 0, got " + py::repr(value));
    return v;
}

bool option_bool(const std::string &key, const std::string &value) {
    if (value == "true" || value == "1") return true;
    if (value == "false" || value == "0") return false;
    invalid_request(key + " must be True or False, got " + py::repr(value));
}

void set_option(BackendOptions &o, const std::string &key, const std::string &value) {
    if (key == "backend") o.backend = value;
    else if (key == "precision") o.precision = value;
    else if (key == "intra_op_threads") o.intra_op_threads = option_int(key, value);
    else if (key == "inter_op_threads") o.inter_op_threads = option_int(key, value);
    else if (key == "device_id") o.device_id = option_int(key, value);
    else if (key == "graph_optimization") {
        if (value != "disable" && value != "basic" && value != "extended" && value != "all")
            invalid_request("graph_optimization must be one of disable, basic, extended, all, got " +
                            py::repr(value));
        o.graph_optimization = value;
    } else if (key == "trt_cache_dir") o.trt_cache_dir = value;
    else if (key == "trt_fp16") o.trt_fp16 = option_bool(key, value);
    else if (key == "stop_spinning") o.stop_spinning = option_bool(key, value);
    else if (key == "thread_pool") {
        if (value != "session" && value != "shared")
            invalid_request("thread_pool must be one of shared, session, got " + py::repr(value));
        o.thread_pool = value;
    }
    else if (key == "pin_threads") o.pin_threads = option_bool(key, value);
    else if (key == "verify_hashes") o.verify_hashes = option_bool(key, value);
    else invalid_request("unknown option " + py::repr(key));
}

const uint8_t *bytes(const std::vector<uint8_t> &v, size_t *size) {
    if (size) *size = v.size();
    return v.empty() ? nullptr : v.data();
}

}  // namespace

extern "C" {

int bld_abi_version(void) { return BLD_ABI_VERSION; }
const char *bld_version(void) { return BLD_VERSION; }
// "bld-bundle v1", as `bld --version` names the format it reads.
const char *bld_bundle_format(void) {
    static const std::string format = std::string(kFormat) + " v" + std::to_string(kSchemaVersion);
    return format.c_str();
}

bld_error_kind bld_status_kind(const bld_status *s) { return s ? s->kind : BLD_ERROR_INTERNAL; }
const char *bld_status_message(const bld_status *s) { return s ? s->message.c_str() : ""; }
void bld_status_free(bld_status *s) {
    if (s != &out_of_memory) delete s;
}

bld_status *bld_options_create(bld_options **out) {
    return guard([&] {
        require_arg(out, "out");
        *out = new bld_options{};
    });
}

bld_status *bld_options_set(bld_options *o, const char *key, const char *value) {
    return guard([&] {
        require_arg(o && key && value, "options, key and value");
        set_option(o->values, key, value);
    });
}

void bld_options_free(bld_options *o) { delete o; }

bld_status *bld_pipeline_load(const char *bundle, const bld_options *options, bld_pipeline **out) {
    return guard([&] {
        require_arg(bundle && out, "bundle and out");
        auto p = Pipeline::load(bundle, options ? options->values : BackendOptions{});
        *out = new bld_pipeline{std::move(p)};
    });
}

void bld_pipeline_free(bld_pipeline *p) { delete p; }

void bld_pipeline_get_info(const bld_pipeline *p, bld_pipeline_info *out) {
    if (!p || !out) return;
    const Manifest &m = p->core->manifest();
    *out = {m.image.height, m.image.width, m.image.channels, m.latent.height, m.latent.width,
            m.latent.bits, m.classes.count, m.schedule.sampling_steps, m.max_batch,
            m.defaults.guidance, m.defaults.temperature};
}

bld_status *bld_request_create(bld_request **out) {
    return guard([&] {
        require_arg(out, "out");
        *out = new bld_request{};
    });
}

void bld_request_free(bld_request *r) { delete r; }

bld_status *bld_request_set_seed_range(bld_request *r, uint64_t base, size_t n) {
    return guard([&] {
        require_arg(r, "request");
        r->core.seeds.resize(n);
        for (size_t i = 0; i < n; ++i) r->core.seeds[i] = base + i;  // wraps mod 2^64
    });
}

bld_status *bld_request_set_seeds(bld_request *r, const uint64_t *seeds, size_t n) {
    return guard([&] {
        require_arg(r && (seeds || n == 0), "request and seeds");
        r->core.seeds.assign(seeds, seeds + n);
    });
}

bld_status *bld_request_set_classes(bld_request *r, const int64_t *classes, size_t count) {
    return guard([&] {
        require_arg(r && (classes || count == 0), "request and classes");
        r->core.classes.assign(classes, classes + count);
    });
}

bld_status *bld_request_set_guidance(bld_request *r, const double *v, size_t count) {
    return guard([&] {
        require_arg(r && (v || count == 0), "request and guidance");
        r->core.guidance.assign(v, v + count);
    });
}

bld_status *bld_request_set_temperature(bld_request *r, const double *v, size_t count) {
    return guard([&] {
        require_arg(r && (v || count == 0), "request and temperature");
        r->core.temperature.assign(v, v + count);
    });
}

bld_status *bld_request_set_mask(bld_request *r, const uint8_t *mask, const uint8_t *known,
                                 size_t rows, size_t tokens, size_t bits) {
    return guard([&] {
        require_arg(r, "request");
        const size_t size = rows * tokens * bits;
        Request &q = r->core;
        q.mask_given = mask != nullptr;
        q.known_given = known != nullptr;
        q.mask = mask ? std::vector<uint8_t>(mask, mask + size) : std::vector<uint8_t>{};
        q.known = known ? std::vector<uint8_t>(known, known + size) : std::vector<uint8_t>{};
        q.mask_rows = rows, q.mask_tokens = tokens, q.mask_bits = bits;
    });
}

bld_status *bld_request_set_chunk(bld_request *r, int chunk) {
    return guard([&] {
        require_arg(r, "request");
        r->core.chunk = chunk != 0;
    });
}

bld_status *bld_request_set_trace(bld_request *r, int trace) {
    return guard([&] {
        require_arg(r, "request");
        r->core.trace = trace != 0;
    });
}

bld_status *bld_request_set_callback(bld_request *r, bld_step_callback callback, void *user) {
    return guard([&] {
        require_arg(r, "request");
        if (!callback) {
            r->core.on_step = nullptr;
            return;
        }
        r->core.on_step = [callback, user](int64_t step, int64_t steps, const uint8_t *bits, size_t batch) {
            return callback(user, step, steps, bits, batch) != 0;
        };
    });
}

bld_status *bld_request_set_profile(bld_request *r, int profile) {
    return guard([&] {
        require_arg(r, "request");
        r->core.profile = profile != 0;
    });
}

bld_status *bld_pipeline_generate(bld_pipeline *p, const bld_request *r, bld_generation **out) {
    return guard([&] {
        require_arg(p && r && out, "pipeline, request and out");
        *out = new bld_generation{p->core->generate(r->core)};
    });
}

void bld_generation_free(bld_generation *g) { delete g; }
size_t bld_generation_count(const bld_generation *g) { return g ? g->core.count : 0; }
const uint8_t *bld_generation_images(const bld_generation *g, size_t *size) { return bytes(g->core.images, size); }
const uint8_t *bld_generation_bits(const bld_generation *g, size_t *size) { return bytes(g->core.bits, size); }
const uint64_t *bld_generation_seeds(const bld_generation *g) { return g->core.seeds.data(); }
const int64_t *bld_generation_classes(const bld_generation *g) { return g->core.classes.data(); }
const uint8_t *bld_generation_trace_states(const bld_generation *g, size_t *size) {
    return bytes(g->core.trace_states, size);
}
const float *bld_generation_trace_probs(const bld_generation *g, size_t *size) {
    if (size) *size = g->core.trace_probs.size();
    return g->core.trace_probs.empty() ? nullptr : g->core.trace_probs.data();
}

int bld_generation_get_profile(const bld_generation *g, bld_profile *out) {
    if (!g || !out || !g->core.profiled) return 0;
    const Generation &c = g->core;
    *out = {c.total_s, c.initial_s, c.decode_s, c.step_model_s.size(), c.step_model_s.data(),
            c.step_sampling_s.data()};
    return 1;
}

bld_status *bld_pipeline_encode_probs(bld_pipeline *p, const uint8_t *images, size_t n, float *out) {
    return guard([&] {
        require_arg(p && (images || n == 0) && out, "pipeline, images and probs_out");
        p->core->encode_probs(images, n, out);
    });
}

bld_status *bld_pipeline_encode(bld_pipeline *p, const uint8_t *images, size_t n, uint8_t *out) {
    return guard([&] {
        require_arg(p && (images || n == 0) && out, "pipeline, images and bits_out");
        p->core->encode(images, n, out);
    });
}

bld_status *bld_pipeline_encode_seeded(bld_pipeline *p, const uint8_t *images, size_t n,
                                       const uint64_t *seeds, uint8_t *out) {
    return guard([&] {
        require_arg(p && (images || n == 0) && seeds && out, "pipeline, images, seeds and bits_out");
        p->core->encode_seeded(images, n, seeds, out);
    });
}

bld_status *bld_pipeline_decode(bld_pipeline *p, const uint8_t *bits, size_t n, uint8_t *out) {
    return guard([&] {
        require_arg(p && (bits || n == 0) && out, "pipeline, bits and images_out");
        p->core->decode(bits, n, out);
    });
}

size_t bld_packed_bytes(size_t tokens, size_t bits) { return packed_bytes(tokens, bits); }

bld_status *bld_pack_bits(const uint8_t *bits, size_t batch, size_t tokens, size_t channels, uint8_t *out) {
    return guard([&] {
        require_arg(bits && out, "bits and packed_out");
        pack_bits(bits, batch, tokens * channels, out);
    });
}

bld_status *bld_unpack_bits(const uint8_t *packed, size_t batch, size_t tokens, size_t channels, uint8_t *out) {
    return guard([&] {
        require_arg(packed && out, "packed and bits_out");
        unpack_bits(packed, batch, tokens * channels, out);
    });
}

bld_status *bld_save_bits(const char *path, const uint8_t *bits, size_t batch, size_t h, size_t w, size_t c) {
    return guard([&] {
        require_arg(path && bits, "path and bits");
        if (h < 1 || w < 1 || c < 1 || h > UINT32_MAX || w > UINT32_MAX || c > UINT32_MAX || batch > UINT32_MAX)
            fail(BLD_ERROR_PACKED_BITS, "a .bldz file holds 1..2^32-1 tokens of 1..2^32-1 bits per latent");
        save_bits(path, bits, batch, uint32_t(h), uint32_t(w), uint32_t(c));
    });
}

bld_status *bld_load_bits(const char *path, size_t h, size_t w, size_t c, bld_buffer **out, size_t *batch) {
    return guard([&] {
        require_arg(path && out && batch, "path, bits_out and batch_out");
        size_t count = 0;
        auto data = load_bits(path, uint32_t(h), uint32_t(w), uint32_t(c), count);
        *out = new bld_buffer{std::move(data)};
        *batch = count;
    });
}

bld_status *bld_save_png(const char *path, const uint8_t *image, size_t h, size_t w, size_t c) {
    return guard([&] {
        require_arg(path && image, "path and image");
        save_png(path, image, {h, w, c});
    });
}

bld_status *bld_load_png(const char *path, size_t h, size_t w, size_t c, uint8_t *out) {
    return guard([&] {
        require_arg(path && out, "path and image_out");
        const auto pixels = load_png(path, {h, w, c});
        std::copy(pixels.begin(), pixels.end(), out);
    });
}

bld_status *bld_make_grid(const uint8_t *images, size_t n, size_t h, size_t w, size_t c, size_t cols,
                          bld_buffer **out, size_t *grid_h, size_t *grid_w) {
    return guard([&] {
        require_arg(images && out && grid_h && grid_w, "images, grid_out, grid_height and grid_width");
        ImageShape shape{};
        auto grid = make_grid(images, n, {h, w, c}, cols, shape);
        *out = new bld_buffer{std::move(grid)};
        *grid_h = shape.height, *grid_w = shape.width;
    });
}

const uint8_t *bld_buffer_data(const bld_buffer *b, size_t *size) { return bytes(b->data, size); }
void bld_buffer_free(bld_buffer *b) { delete b; }

}  // extern "C"
