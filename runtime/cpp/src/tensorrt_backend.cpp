// The native TensorRT backend ("tensorrt"), built only with -DBLD_WITH_TENSORRT=ON.
//
// Engines come from the engine cache that `bld-export engine` fills (BUNDLE/engines, or
// trt_cache_dir), read by the cache's rules (bld_runtime/engine_cache.py): CACHE/<graph>/
// <digest16>.json next to <digest16>.plan; the manifest's key must name this graph and its
// sha256 (for fp16, also the fp32 graph's FP16-flag engines), the precision, a profile that
// covers the batch, this TensorRT version (trt_versions_match: "10.3.0" matches "10.3.0.26"; or
// a newer one of the same major for version-compatible plans) and this GPU. Manifests and plans
// are opened without blocking and refused unless regular files (a FIFO never hangs), a manifest
// is at most 1 MiB and nested no deeper than Python's json parses, its plan_file is exactly
// <digest16>.plan beside it (not a symlink), and the plan's size is compared with the manifest's
// before it is read (graph_io.hpp: read_engine_manifest, read_engine_plan); its sha256 and header
// (magic "ftrt", version in bytes 24..27) are checked before TensorRT sees a byte. Each refusal
// is one refused candidate, never the cache's failure. Of the engines that qualify,
// engine_cache.find's order picks one; each role's engine is loaded when the backend is made, so
// a missing or stale engine is refused then.
// Each plan is deserialised once, whatever the batch; its execution contexts share one block
// of scratch memory sized once (user-managed), so a graph costs its weights plus one scratch
// block, not one per context: what an 8 or 16 GB Jetson Orin can afford.
// The loop lives on the device: bits, probabilities and the request's arrays are device
// buffers made once per batch size, the step runs with enqueueV3 on the loop's stream, and the
// draw is a kernel compiled with NVRTC for this GPU's sm from bld_philox.h. The host sees bits
// only when asked. Every CUDA call first binds the backend's device: loops run on any thread.
#include <NvInfer.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <nvrtc.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "backend.hpp"
#include "error.hpp"
#include "graph_io.hpp"
#include "nvrtc_draw.hpp"
#include "philox_source.hpp"  // generated at build time from bld_runtime/csrc/bld_philox.h
#include "pyfmt.hpp"

namespace fs = std::filesystem;

namespace bld::core {
namespace {

constexpr unsigned kThreads = 256;
const char *const kRoles[] = {"encoder", "decoder", "step", "step_guided"};

[[noreturn]] void unavailable(const std::string &message) { fail(BLD_ERROR_BACKEND_UNAVAILABLE, message); }

void cuda_check(cudaError_t status, const char *what) {
    if (status != cudaSuccess)
        fail(BLD_ERROR_INTERNAL, std::string("CUDA: ") + what + ": " + cudaGetErrorString(status));
}

void driver_check(CUresult status, const char *what) {
    if (status != CUDA_SUCCESS) {
        const char *text = nullptr;
        cuGetErrorString(status, &text);
        fail(BLD_ERROR_INTERNAL, std::string("CUDA driver: ") + what + ": " + (text ? text : "error"));
    }
}

// TensorRT logs from any thread (NvInferRuntimeBase.h: the logger must be thread safe), so the
// last error is guarded and read as a copy. A caller clears it before the call it explains, so a
// message never quotes an older call's error.
class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char *message) noexcept override {
        if (severity > Severity::kERROR || !message) return;
        try {
            std::lock_guard<std::mutex> lock(mutex_);
            last_error_ = message;
        } catch (...) {  // noexcept: a failed copy loses the text, never the process
        }
    }

  public:
    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        last_error_.clear();
    }
    // ": <TensorRT's error>" to end a message with, or "" when TensorRT said nothing.
    std::string said() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return last_error_.empty() ? std::string() : ": " + last_error_;
    }

  private:
    mutable std::mutex mutex_;
    std::string last_error_;
};

struct DeviceBuffer {  // cudaMalloc'd memory, freed with its owner
    void *ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) : DeviceBuffer(bytes, std::string()) {}
    // `refusal`: the sentence an allocation failure raises, with CUDA's reason in parentheses.
    DeviceBuffer(size_t bytes, const std::string &refusal) {
        const cudaError_t status = cudaMalloc(&ptr, bytes ? bytes : 1);
        if (status == cudaSuccess) return;
        ptr = nullptr;
        cudaGetLastError();  // an allocation failure is not sticky: it must not fail the next call
        if (refusal.empty()) cuda_check(status, "cudaMalloc");
        fail(BLD_ERROR_INTERNAL, refusal + " (" + cudaGetErrorString(status) + ")");
    }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;
};

struct Stream {  // a non-blocking stream, destroyed with its owner (also when a constructor throws)
    cudaStream_t stream = nullptr;
    Stream() { cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() {
        if (stream) cudaStreamDestroy(stream);
    }
    operator cudaStream_t() const { return stream; }
    Stream(const Stream &) = delete;
    Stream &operator=(const Stream &) = delete;
};

// Declared after a scratch lock: whatever was queued on the stream has finished before the lock
// is released, on every way out (an exception included); the result is not checked here.
struct SyncOnExit {
    cudaStream_t stream;
    ~SyncOnExit() { cudaStreamSynchronize(stream); }
};

struct Module {  // the draw kernels' module, unloaded with its owner
    CUmodule module = nullptr;
    ~Module() {
        if (module) cuModuleUnload(module);
    }
};

std::string version_string() {
    const int32_t v = getInferLibVersion();  // major * 10000 + minor * 100 + patch (TRT >= 10)
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) +
           "." + std::to_string(NV_TENSORRT_BUILD);
}

std::vector<int> version_parts(const std::string &v) {
    std::vector<int> out;
    size_t start = 0;
    while (start < v.size()) {
        size_t dot = v.find('.', start);
        if (dot == std::string::npos) dot = v.size();
        out.push_back(std::stoi(v.substr(start, dot - start)));
        start = dot + 1;
    }
    return out;
}

std::string mib(int64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", double(bytes) / (1024.0 * 1024.0));
    return text;
}

const char *dtype_name(nvinfer1::DataType t) {
    switch (t) {
        case nvinfer1::DataType::kFLOAT: return "float32";
        case nvinfer1::DataType::kHALF: return "float16";
        case nvinfer1::DataType::kINT64: return "int64";
        case nvinfer1::DataType::kINT32: return "int32";
        case nvinfer1::DataType::kUINT8: return "uint8";
        case nvinfer1::DataType::kBOOL: return "bool";
        default: return "another type";
    }
}

struct Target {
    std::string version, compute_capability;  // version: 4 parts, "10.3.0.26"
    bool integrated = false;                   // a Jetson: the GPU shares the SoC's memory
};

bool version_compatible(const nlohmann::json &key) {
    const auto flags = key.at("flags").get<std::vector<std::string>>();
    return std::find(flags.begin(), flags.end(), "VERSION_COMPATIBLE") != flags.end();
}

// Why an engine key cannot run here, or "" when it can (engine_cache.incompatibility); the
// version rule is trt_version_refusal (graph_io.hpp), the Python runtime's too.
std::string incompatibility(const nlohmann::json &key, const Target &t) {
    if (key.at("flavour") != "tensorrt") return "it was built by " + key.at("flavour").get<std::string>();
    const std::string built = key.at("version");
    const std::string why = trt_version_refusal(built, version_compatible(key), t.version);
    if (!why.empty()) return why;
    const auto ccs = key.at("compute_capabilities").get<std::vector<std::string>>();
    const std::string hw = key.at("hardware_compat");
    if (hw != "none" && t.integrated)  // TensorRT offers hardware compatibility on discrete GPUs only
        return "it was built hardware-compatible (" + hw + "), which TensorRT does not support on Jetson; "
               "build it on the device without --hardware-compat";
    if (hw == "ampere+") {
        if (version_parts(t.compute_capability) < std::vector<int>{8, 0})
            return "it was built hardware-compatible for Ampere and later, this GPU is " + t.compute_capability;
    } else if (!ccs.empty() && std::find(ccs.begin(), ccs.end(), t.compute_capability) == ccs.end()) {
        return "it was built for other GPUs, this one is compute capability " + t.compute_capability;
    }
    if (!key.at("dla_core").is_null()) return "it runs on a DLA core";
    return "";
}

struct Plan {
    std::vector<char> bytes;
    std::string path, digest;
    std::string graph;                // the graph it was built from (key.graph)
    bool version_compatible = false;  // the key's flags: TensorRT must be allowed its host code
};

// What one graph kind may load (TensorRTBackend._candidates): its graph's engines and, for fp16,
// the FP16-flag engines of the fp32 graph too (`bld-export engine --fp16-flag`, the TensorRT 10
// route of docs/jetson.md), which are filed under the fp32 graph with its sha256 and precision fp16.
struct PlanQuery {
    std::vector<std::pair<std::string, std::string>> graphs;  // graph name, its sha256
    std::string precision;                                     // the key's: its graph's precision
    std::optional<size_t> batch;                               // none: any, the widest range preferred
};

// The plan for `q`, checked by the cache's rules before deserialisation: every manifest that
// qualifies is a candidate, taken in engine_cache.find's order (engine_candidate_before).
Plan find_plan(const fs::path &cache, const PlanQuery &q, const Target &target, const std::string &rebuild) {
    struct Found {
        EngineCandidate order;
        fs::path manifest;
        std::string plan_file;
        uint64_t plan_size = 0;
        std::string plan_sha256, digest, graph, version;
        bool vc = false;
    };
    std::vector<std::string> reasons, names;
    std::vector<Found> found;
    for (const auto &[name, sha256] : q.graphs) {
        names.push_back(name);
        const fs::path dir = cache / name;
        std::vector<fs::path> manifests;
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
            if (it->path().extension() == ".json") manifests.push_back(it->path());
        std::sort(manifests.begin(), manifests.end());
        for (const fs::path &path : manifests) {
            try {
                // A regular file of at most 1 MiB, opened without blocking, nested no deeper
                // than Python's json parses (read_engine_manifest): else one refused candidate.
                const nlohmann::json m = read_engine_manifest(path);
                if (m.at("format") != "bld-engine" || m.at("schema_version") != 1)
                    throw std::runtime_error("not a bld-engine manifest of schema 1");
                const auto &key = m.at("key");
                // key_digest is the sha256 of the key's canonical JSON (sorted keys, compact, ASCII)
                const std::string canonical = nlohmann::json(key).dump(-1, ' ', true);
                if (m.at("key_digest") != sha256_hex(canonical.data(), canonical.size()))
                    throw std::runtime_error("key_digest does not match the key (the manifest was edited)");
                // EngineManifest's rules: the plan is <digest16>.plan beside the manifest, and
                // graph_facts is the JSON object the graph records
                const std::string bad_plan_file = engine_plan_file_refusal(m.at("plan_file").get<std::string>(),
                                                                           m.at("key_digest").get<std::string>());
                if (!bad_plan_file.empty()) throw std::runtime_error(bad_plan_file);
                const std::string bad_facts = engine_graph_facts_refusal(m.at("graph_facts").get<std::string>(),
                                                                         key.at("graph").get<std::string>());
                if (!bad_facts.empty()) throw std::runtime_error(bad_facts);
                bool covers = false;
                int64_t max_batch = 0;
                for (const auto &p : key.at("profiles")) {
                    const auto lo = p.at("min").get<int64_t>(), hi = p.at("max").get<int64_t>();
                    covers = covers || (q.batch && lo <= int64_t(*q.batch) && int64_t(*q.batch) <= hi);
                    max_batch = std::max(max_batch, hi);
                }
                std::string why;
                if (key.at("graph") != name)
                    why = "it is filed under " + name + " but built from " + key.at("graph").get<std::string>();
                else if (key.at("graph_sha256") != sha256)
                    why = "it was built from another version of the graph (sha256 differs)";
                else if (key.at("precision") != q.precision)
                    why = "it is " + key.at("precision").get<std::string>() + ", the request is " + q.precision;
                else if (q.batch && !covers)
                    why = "its profiles do not cover batch " + std::to_string(*q.batch);
                else
                    why = incompatibility(key, target);
                if (!why.empty()) {
                    reasons.push_back(name + "/" + path.filename().string() + ": " + why);
                    continue;
                }
                Found f;
                const auto mtime = fs::last_write_time(path, ec);
                const int64_t age = ec ? 0 : int64_t(mtime.time_since_epoch().count());
                f.order = {key.at("version").get<std::string>(), max_batch, age, path.string()};
                f.manifest = path;
                f.plan_file = m.at("plan_file").get<std::string>();
                f.plan_size = m.at("plan_size").get<uint64_t>();
                f.plan_sha256 = m.at("plan_sha256").get<std::string>();
                f.digest = m.at("key_digest").get<std::string>();
                f.graph = name;
                f.version = key.at("version").get<std::string>();
                f.vc = version_compatible(key);
                found.push_back(std::move(f));
            } catch (const std::exception &e) {  // JSON errors, missing keys, checks above
                reasons.push_back(name + "/" + path.filename().string() + ": refused (" + e.what() + ")");
            }
        }
    }
    std::sort(found.begin(), found.end(), [&](const Found &a, const Found &b) {
        return engine_candidate_before(a.order, b.order, target.version, !q.batch);
    });
    for (const Found &f : found) {
        try {
            // A regular file beside its manifest (never a symlink), its size compared with the
            // manifest's before it is read (a plan may have been replaced by gigabytes), then its sha256.
            std::vector<char> plan = read_engine_plan(f.manifest, f.plan_file, f.plan_size, f.plan_sha256);
            const std::string shown = (f.manifest.parent_path() / f.plan_file).string();
            const auto parts = version_parts(f.version);
            if (plan.size() < 28 || std::string(plan.data(), 4) != "ftrt")
                throw std::runtime_error(shown + " is not a TensorRT plan");
            for (size_t i = 0; i < 4 && i < parts.size(); ++i)
                if (static_cast<unsigned char>(plan[24 + i]) != parts[i])
                    throw std::runtime_error(shown + ": the plan's header names another version");
            return {std::move(plan), shown, f.digest, f.graph, f.vc};
        } catch (const std::exception &e) {
            reasons.push_back(f.graph + "/" + f.manifest.filename().string() + ": refused (" + e.what() + ")");
        }
    }
    std::vector<std::string> shown;
    for (const auto &n : names) shown.push_back(py::repr(n));
    const size_t more = reasons.size() > 3 ? reasons.size() - 3 : 0;
    if (more) reasons.resize(3);
    unavailable("no usable " + q.precision + " TensorRT engine for graph " + py::join(shown, " or ") + " in " +
                cache.string() + " (" + (reasons.empty() ? "the cache has no engine for it" : py::join(reasons, "; ")) +
                (more ? "; and " + std::to_string(more) + " more" : "") + "); build one with: " + rebuild);
}

class TrtBackend;

// One deserialised plan: the engine, the batch range of each profile, and the scratch memory
// every execution context of it shares. A context made with kUSER_MANAGED holds no scratch of
// its own, so the block is sized once (the largest profile) and `run` lets one enqueue at a
// time use it, from enqueueV3 until its stream is synchronised.
struct TrtEngine {
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::string path, digest, rebuild;
    std::vector<std::pair<int64_t, int64_t>> batch_ranges;
    std::unique_ptr<DeviceBuffer> scratch;
    int64_t scratch_bytes = 0;
    std::mutex run;

    bool covers(size_t batch) const {
        for (const auto &[lo, hi] : batch_ranges)
            if (lo <= int64_t(batch) && int64_t(batch) <= hi) return true;
        return false;
    }
    int32_t profile_for(size_t batch) const {
        std::vector<std::string> ranges;
        for (size_t p = 0; p < batch_ranges.size(); ++p) {
            if (batch_ranges[p].first <= int64_t(batch) && int64_t(batch) <= batch_ranges[p].second)
                return static_cast<int32_t>(p);
            ranges.push_back("(" + std::to_string(batch_ranges[p].first) + ", " +
                             std::to_string(batch_ranges[p].second) + ")");
        }
        unavailable(path + " has no profile for batch " + std::to_string(batch) + " (its batch ranges are [" +
                    py::join(ranges, ", ") + "]); rebuild with: " + rebuild);
    }

    // A context for `batch` on `stream`, with the profile that covers it, the shared scratch
    // block and every input's shape set; the caller holds `run` (a profile switch may copy on
    // the stream) and binds the tensors' addresses.
    std::unique_ptr<nvinfer1::IExecutionContext> context(const GraphSpec &g, size_t batch, cudaStream_t stream,
                                                         Logger &logger) {
        const int32_t profile = profile_for(batch);
        logger.clear();
        std::unique_ptr<nvinfer1::IExecutionContext> ctx(
            engine->createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy::kUSER_MANAGED));
        if (!ctx) unavailable("TensorRT could not create an execution context for " + path + logger.said());
        ctx->setDeviceMemoryV2(scratch->ptr, scratch_bytes);
        logger.clear();
        if (!ctx->setOptimizationProfileAsync(profile, stream))
            fail(BLD_ERROR_INTERNAL,
                 "TensorRT refused profile " + std::to_string(profile) + " of " + path + logger.said());
        set_shapes(*ctx, g, batch);
        return ctx;
    }

    void set_shapes(nvinfer1::IExecutionContext &ctx, const GraphSpec &g, size_t batch) const {
        for (const auto &t : g.inputs) {
            nvinfer1::Dims dims{};
            dims.nbDims = static_cast<int32_t>(t.shape.size());
            for (int32_t d = 0; d < dims.nbDims; ++d)
                dims.d[d] = d == 0 ? static_cast<int64_t>(batch) : std::get<int64_t>(t.shape[size_t(d)]);
            if (!ctx.setInputShape(t.name.c_str(), dims))
                fail(BLD_ERROR_INTERNAL, "TensorRT refused the shape of " + t.name + " (batch " +
                                             std::to_string(batch) + ") for " + path);
        }
    }
};

// The encoder or decoder of one backend: one context, one stream and staging buffers for the
// bundle's max batch, made at the first call and reused; `mutex` serialises the calls. The
// context is declared last: it goes before the stream it may have used.
struct OnceRunner {
    std::mutex mutex;
    Stream stream;
    std::unique_ptr<DeviceBuffer> in, out;
    TrtEngine *engine = nullptr;  // with ctx and profile: set only once the context is ready
    int32_t profile = -1;
    std::unique_ptr<nvinfer1::IExecutionContext> ctx;
};

class TrtLoop final : public Loop {
  public:
    TrtLoop(TrtBackend &backend, size_t batch);
    ~TrtLoop() override;
    void start(const LoopRequest &r) override;
    void run_step(int64_t i) override;
    void advance(int64_t i) override;
    const uint8_t *bits() override;
    void read_probs(float *out) override;

  private:
    void launch_draw(const void *p, uint64_t subsequence);
    struct Step {
        TrtEngine *engine = nullptr;
        std::unique_ptr<nvinfer1::IExecutionContext> ctx;
    };
    Step &context(const std::string &role);

    // Binds the device before any member below allocates (members are made in this order).
    struct OnDevice {
        explicit OnDevice(int device) { cuda_check(cudaSetDevice(device), "cudaSetDevice"); }
    };

    TrtBackend &backend_;
    OnDevice on_device_;
    size_t n_;
    int64_t num_steps_;
    Stream stream_;
    DeviceBuffer state_, probs_, half_, keep_, known_, seeds_, step_, classes_, temperature_, guidance_;
    std::vector<float> host_f32_;
    std::vector<uint8_t> host_bits_;
    std::vector<int64_t> host_step_;
    int masked_ = 0;
    std::string role_ = "step";
    std::map<std::string, Step> contexts_;  // step and step_guided, made at first use, only once bound
};

class TrtBackend final : public Backend {
  public:
    TrtBackend(const Bundle &bundle, const BackendOptions &o)
        : manifest_(bundle.manifest), options_(o), bundle_shown_(bundle.shown) {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess || devices <= o.device_id)
            unavailable("backend 'tensorrt' needs a CUDA device " + std::to_string(o.device_id) + "; this machine has " +
                        std::to_string(devices));
        use_device();
        cuda_check(cudaFree(nullptr), "creating the device's context");  // for the driver API too
        cudaDeviceProp prop{};
        cuda_check(cudaGetDeviceProperties(&prop, device()), "cudaGetDeviceProperties");
        target_ = {version_string(), std::to_string(prop.major) + "." + std::to_string(prop.minor),
                   prop.integrated != 0};
        cache_ = o.trt_cache_dir.empty() ? bundle.dir / "engines" : fs::path(o.trt_cache_dir);
        logger_.clear();
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) unavailable("TensorRT could not create a runtime" + logger_.said());
        for (const char *role : kRoles) {
            names_[role] = graph_for(bundle, role, o.precision);
            read_graph(bundle, names_[role], o.verify_hashes);  // the bundle's hashes still hold
        }
        compile_kernels(prop.major, prop.minor);
        // Each role's engine now (the widest batch range), as the Python runtime's Pipeline.load:
        // a missing or stale engine is refused at load, not at the first request.
        for (const char *role : kRoles) engine(role, std::nullopt);
    }

    ~TrtBackend() override {
        cudaSetDevice(device());  // unchecked: a destructor must not throw; the memory is freed there
        once_.clear();
        engines_.clear();
    }

    std::unique_ptr<Loop> make_loop(size_t batch) override { return std::make_unique<TrtLoop>(*this, batch); }

    void encode(const float *images, size_t n, float *probs) override { run_once("encoder", images, n, probs); }
    void decode(const float *bits, size_t n, float *images) override { run_once("decoder", bits, n, images); }

    // The engine of `role` whose profiles cover `batch` (none: the one loaded first, chosen for
    // the widest range). A plan is deserialised once: an engine already loaded for the role
    // serves every batch its profiles cover.
    TrtEngine &engine(const std::string &role, std::optional<size_t> batch) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto &loaded = engines_[role];
        for (const auto &e : loaded)
            if (!batch || e->covers(*batch)) return *e;
        Plan plan = find_plan(cache_, query(role, batch), target_, rebuild_hint());
        for (const auto &e : loaded)  // the same plan again (its profiles then say which batch fails)
            if (e->digest == plan.digest) return *e;
        loaded.push_back(load(plan, role, batch));
        return *loaded.back();
    }

    int device() const { return static_cast<int>(options_.device_id); }
    void use_device() const { cuda_check(cudaSetDevice(device()), "cudaSetDevice"); }
    Logger &logger() { return logger_; }
    const Manifest &manifest() const { return manifest_; }
    const GraphSpec &graph(const std::string &role) const { return *manifest_.graph(names_.at(role)); }
    CUfunction kernel(const char *name) const { return std::string(name) == "bld_draw" ? draw_ : threshold_; }

  private:
    std::string rebuild_hint() const {
        return "bld-export engine " + bundle_shown_ + " -o " + cache_.string() + " --precision " + options_.precision +
               " --flavour tensorrt";
    }

    // The graphs whose engines serve `role` (TensorRTBackend._candidates): the role's graph and,
    // for fp16, the fp32 graph's FP16-flag engines. Engines are keyed with their graph's
    // precision (bld_engines' graph_names): the encoder is fp32, and so is the decoder with int8.
    PlanQuery query(const std::string &role, std::optional<size_t> batch) const {
        const std::string &name = names_.at(role);
        PlanQuery q{{{name, manifest_.graph(name)->sha256}}, manifest_.graph(name)->precision, batch};
        if (name != role && options_.precision == "fp16" && manifest_.graph(role))
            q.graphs.emplace_back(role, manifest_.graph(role)->sha256);
        return q;
    }

    // Deserialise `plan` and check it against the bundle's graph: I/O names and types, batch.
    std::unique_ptr<TrtEngine> load(const Plan &plan, const std::string &role, std::optional<size_t> batch) {
        use_device();
        const std::string hint = rebuild_hint();
        // A version-compatible plan carries the lean runtime it was built with, which TensorRT
        // runs only when allowed to (trtexec's --useRuntime=full does the same).
        runtime_->setEngineHostCodeAllowed(plan.version_compatible);
        auto e = std::make_unique<TrtEngine>();
        e->path = plan.path;
        e->digest = plan.digest;
        e->rebuild = hint;
        logger_.clear();
        e->engine.reset(runtime_->deserializeCudaEngine(plan.bytes.data(), plan.bytes.size()));
        if (!e->engine)
            unavailable("TensorRT " + target_.version + " could not load the engine " + plan.path + logger_.said() +
                        "; rebuild it with: " + hint);
        const GraphSpec &g = *manifest_.graph(plan.graph);  // the role's, or the fp32 graph of an FP16-flag plan
        std::vector<std::string> inputs, outputs;
        for (int32_t i = 0; i < e->engine->getNbIOTensors(); ++i) {
            const char *name = e->engine->getIOTensorName(i);
            (e->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).push_back(name);
        }
        std::string why = engine_io_mismatch(inputs, outputs, g, plan.graph);
        for (const auto *specs : {&g.inputs, &g.outputs})
            for (const auto &t : *specs) {
                if (!why.empty()) break;  // the names differ: their types say nothing more
                const std::string dtype = dtype_name(e->engine->getTensorDataType(t.name.c_str()));
                if (dtype != t.dtype) why = "its tensor " + t.name + " is " + dtype + ", the bundle's is " + t.dtype;
            }
        if (!why.empty())
            unavailable("the TensorRT engine " + plan.path + " does not fit the bundle's " + role + " graph: " + why +
                        "; rebuild it with: " + hint);
        for (int32_t p = 0; p < e->engine->getNbOptimizationProfiles(); ++p) {
            const char *first = g.inputs[0].name.c_str();
            e->batch_ranges.emplace_back(
                e->engine->getProfileShape(first, p, nvinfer1::OptProfileSelector::kMIN).d[0],
                e->engine->getProfileShape(first, p, nvinfer1::OptProfileSelector::kMAX).d[0]);
        }
        if (batch && !e->covers(*batch)) (void)e->profile_for(*batch);  // the key said so; refused with its ranges
        e->scratch_bytes = e->engine->getDeviceMemorySizeV2();  // the largest profile's need
        e->scratch = std::make_unique<DeviceBuffer>(
            size_t(e->scratch_bytes), "the TensorRT engine " + plan.path + " needs " + mib(e->scratch_bytes) +
                                          " MiB of scratch memory, which CUDA device " + std::to_string(device()) +
                                          " could not allocate");
        return e;
    }

    void compile_kernels(int major, int minor) {
        const DrawBinary binary = compile_draw(draw_source(kPhiloxSource, kKernels), major, minor);
        if (!binary.target.note.empty()) std::fprintf(stderr, "bld: %s\n", binary.target.note.c_str());
        driver_check(cuInit(0), "cuInit");
        driver_check(cuModuleLoadData(&module_.module, binary.image.data()), "cuModuleLoadData");
        driver_check(cuModuleGetFunction(&draw_, module_.module, "bld_draw"), "bld_draw");
        driver_check(cuModuleGetFunction(&threshold_, module_.module, "bld_threshold"), "bld_threshold");
    }

    // Encoder/decoder: once per request, through the role's one context and staging buffers.
    // The runner's engine, context and profile change only once the new ones are ready.
    void run_once(const std::string &role, const float *in, size_t n, float *out) {
        use_device();  // any thread
        const GraphSpec &g = graph(role);
        const size_t in_bytes = n * size_t(per_image(g.inputs[0])) * sizeof(float);
        const size_t out_bytes = n * size_t(per_image(g.outputs[0])) * sizeof(float);
        if (n > size_t(manifest_.max_batch))  // the pipeline sends chunks of max_batch at most
            fail(BLD_ERROR_INTERNAL, role + " called with " + std::to_string(n) + " images, more than max_batch");
        OnceRunner &r = once(role);
        std::lock_guard<std::mutex> lock(r.mutex);
        TrtEngine &e = engine(role, n);
        const int32_t profile = e.profile_for(n);
        std::lock_guard<std::mutex> scratch(e.run);  // until the stream is synchronised
        SyncOnExit sync{r.stream};                   // runs before the scratch lock is released
        if (r.engine != &e) {  // first call, or a batch only another plan covers
            std::unique_ptr<nvinfer1::IExecutionContext> ctx = e.context(g, n, r.stream, logger_);
            logger_.clear();
            if (!ctx->setTensorAddress(g.inputs[0].name.c_str(), r.in->ptr) ||
                !ctx->setTensorAddress(g.outputs[0].name.c_str(), r.out->ptr))
                fail(BLD_ERROR_INTERNAL, "TensorRT refused the bindings of " + g.file + logger_.said());
            r.ctx = std::move(ctx);
            r.engine = &e;
            r.profile = profile;
        } else if (profile != r.profile) {
            logger_.clear();
            if (!r.ctx->setOptimizationProfileAsync(profile, r.stream)) {
                const std::string said = logger_.said();
                cudaStreamSynchronize(r.stream);
                r.engine = nullptr;  // the context is made anew at the next call
                r.ctx.reset();
                fail(BLD_ERROR_INTERNAL, "TensorRT refused profile " + std::to_string(profile) + " of " + e.path + said);
            }
            r.profile = profile;
        }
        e.set_shapes(*r.ctx, g, n);
        cuda_check(cudaMemcpyAsync(r.in->ptr, in, in_bytes, cudaMemcpyHostToDevice, r.stream), "upload");
        logger_.clear();
        if (!r.ctx->enqueueV3(r.stream)) fail(BLD_ERROR_INTERNAL, "TensorRT could not run " + g.file + logger_.said());
        cuda_check(cudaMemcpyAsync(out, r.out->ptr, out_bytes, cudaMemcpyDeviceToHost, r.stream), "download");
        cuda_check(cudaStreamSynchronize(r.stream), "cudaStreamSynchronize");
    }

    OnceRunner &once(const std::string &role) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto &slot = once_[role];
        if (!slot) {
            const GraphSpec &g = graph(role);
            const size_t max = size_t(manifest_.max_batch);
            auto r = std::make_unique<OnceRunner>();
            r->in = std::make_unique<DeviceBuffer>(max * size_t(per_image(g.inputs[0])) * sizeof(float));
            r->out = std::make_unique<DeviceBuffer>(max * size_t(per_image(g.outputs[0])) * sizeof(float));
            slot = std::move(r);
        }
        return *slot;
    }

    Manifest manifest_;
    BackendOptions options_;
    std::string bundle_shown_;
    Target target_;
    fs::path cache_;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::map<std::string, std::string> names_;
    std::mutex mutex_;
    std::map<std::string, std::vector<std::unique_ptr<TrtEngine>>> engines_;  // by role
    std::map<std::string, std::unique_ptr<OnceRunner>> once_;                 // encoder, decoder
    Module module_;
    CUfunction draw_ = nullptr, threshold_ = nullptr;
};

TrtLoop::TrtLoop(TrtBackend &backend, size_t batch)
    : Loop(batch), backend_(backend), on_device_(backend.device()),
      n_(size_t(backend.manifest().latent.tokens() * backend.manifest().latent.bits)),
      num_steps_(backend.manifest().schedule.sampling_steps), state_(batch * n_ * 4), probs_(batch * n_ * 4),
      half_(batch * n_ * 4), keep_(batch * n_), known_(batch * n_ * 4), seeds_(batch * 8), step_(batch * 8),
      classes_(batch * 8), temperature_(batch * 4), guidance_(batch * 4), host_f32_(batch * n_),
      host_bits_(batch * n_), host_step_(batch) {
    const std::vector<float> half(batch * n_, 0.5f);  // p of the initial state, every image
    cuda_check(cudaMemcpy(half_.ptr, half.data(), half.size() * 4, cudaMemcpyHostToDevice), "upload");
}

TrtLoop::~TrtLoop() {
    cudaSetDevice(backend_.device());  // the buffers are freed on the device they live on
    contexts_.clear();                 // before the stream (a member) is destroyed
}

TrtLoop::Step &TrtLoop::context(const std::string &role) {
    const auto made = contexts_.find(role);
    if (made != contexts_.end()) return made->second;
    const GraphSpec &g = backend_.graph(role);
    Step s;
    s.engine = &backend_.engine(role, batch_);
    {
        std::lock_guard<std::mutex> scratch(s.engine->run);
        SyncOnExit sync{stream_};
        s.ctx = s.engine->context(g, batch_, stream_, backend_.logger());
        cuda_check(cudaStreamSynchronize(stream_), "setOptimizationProfileAsync");
    }
    const std::map<std::string, void *> buffers = {{"bits", state_.ptr},         {"step", step_.ptr},
                                                   {"class_label", classes_.ptr}, {"temperature", temperature_.ptr},
                                                   {"guidance", guidance_.ptr},   {"probs", probs_.ptr}};
    std::vector<std::pair<std::string, void *>> bindings;
    for (const auto *specs : {&g.inputs, &g.outputs}) {
        for (const auto &t : *specs) {
            const auto b = buffers.find(t.name);
            if (b == buffers.end())
                fail(BLD_ERROR_INTERNAL, "graph " + g.file + " has a tensor " + py::repr(t.name) +
                                             " that the TensorRT loop has no buffer for");
            bindings.emplace_back(t.name, b->second);
        }
    }
    backend_.logger().clear();
    for (const auto &[name, ptr] : bindings)
        if (!s.ctx->setTensorAddress(name.c_str(), ptr))
            fail(BLD_ERROR_INTERNAL, "TensorRT refused the binding of " + name + " in " + g.file +
                                         backend_.logger().said());
    return contexts_.emplace(role, std::move(s)).first->second;  // kept only once bound
}

void TrtLoop::launch_draw(const void *p, uint64_t subsequence) {
    long long n = static_cast<long long>(n_), blocks = (n + 3) / 4;
    int batch = static_cast<int>(batch_);
    unsigned long long sub = subsequence;
    void *args[] = {const_cast<void **>(&p), &seeds_.ptr, &sub, &n, &blocks, &batch, &state_.ptr, &keep_.ptr,
                    &known_.ptr, &masked_};
    const unsigned grid = static_cast<unsigned>((static_cast<long long>(batch_) * blocks + kThreads - 1) / kThreads);
    driver_check(cuLaunchKernel(backend_.kernel("bld_draw"), grid, 1, 1, kThreads, 1, 1, 0, stream_, args, nullptr),
                 "bld_draw");
}

void TrtLoop::start(const LoopRequest &r) {
    backend_.use_device();  // a loop may run on any thread
    auto up = [&](void *dst, const void *src, size_t bytes) {
        cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
    };
    up(seeds_.ptr, r.seeds, batch_ * 8);
    up(classes_.ptr, r.classes, batch_ * 8);
    up(temperature_.ptr, r.temperature, batch_ * 4);
    up(guidance_.ptr, r.guidance, batch_ * 4);
    masked_ = r.keep != nullptr;
    if (masked_) {
        std::transform(r.known, r.known + batch_ * n_, host_f32_.begin(), [](uint8_t v) { return float(v); });
        up(keep_.ptr, r.keep, batch_ * n_);
        up(known_.ptr, host_f32_.data(), batch_ * n_ * 4);
        cuda_check(cudaStreamSynchronize(stream_), "upload");  // host_f32_ is reused below
    }
    role_ = r.guided ? "step_guided" : "step";
    context(role_);
    launch_draw(half_.ptr, 0);
}

void TrtLoop::run_step(int64_t i) {
    backend_.use_device();
    Step &s = context(role_);
    std::fill(host_step_.begin(), host_step_.end(), i);
    cuda_check(cudaMemcpyAsync(step_.ptr, host_step_.data(), batch_ * 8, cudaMemcpyHostToDevice, stream_), "upload");
    std::lock_guard<std::mutex> scratch(s.engine->run);  // until the step has run: the scratch is shared
    SyncOnExit sync{stream_};
    backend_.logger().clear();
    if (!s.ctx->enqueueV3(stream_))
        fail(BLD_ERROR_INTERNAL, "TensorRT could not run the step graph" + backend_.logger().said());
    cuda_check(cudaStreamSynchronize(stream_), "step");  // host_step_ is rewritten next step
}

void TrtLoop::advance(int64_t i) {
    backend_.use_device();
    if (i < num_steps_ - 1) {
        launch_draw(probs_.ptr, static_cast<uint64_t>(i) + 1);
        return;
    }
    long long total = static_cast<long long>(batch_ * n_);
    void *args[] = {&probs_.ptr, &total, &state_.ptr, &keep_.ptr, &known_.ptr, &masked_};
    const unsigned grid = static_cast<unsigned>((total + kThreads - 1) / kThreads);
    driver_check(cuLaunchKernel(backend_.kernel("bld_threshold"), grid, 1, 1, kThreads, 1, 1, 0, stream_, args, nullptr),
                 "bld_threshold");
}

const uint8_t *TrtLoop::bits() {
    backend_.use_device();
    cuda_check(cudaMemcpyAsync(host_f32_.data(), state_.ptr, batch_ * n_ * 4, cudaMemcpyDeviceToHost, stream_),
               "download");
    cuda_check(cudaStreamSynchronize(stream_), "download");
    std::transform(host_f32_.begin(), host_f32_.end(), host_bits_.begin(), [](float v) { return uint8_t(v != 0.0f); });
    return host_bits_.data();
}

void TrtLoop::read_probs(float *out) {
    backend_.use_device();
    cuda_check(cudaMemcpyAsync(out, probs_.ptr, batch_ * n_ * 4, cudaMemcpyDeviceToHost, stream_), "download");
    cuda_check(cudaStreamSynchronize(stream_), "download");
}

}  // namespace

std::unique_ptr<Backend> create_tensorrt_backend(const Bundle &bundle, const BackendOptions &options) {
    return std::make_unique<TrtBackend>(bundle, options);
}

}  // namespace bld::core
