// The onnxruntime backends: "cpu" (default), "cuda" and "tensorrt-ep" (ORT's GPU providers).
// Sessions are created at load from the very bytes whose sha256 was checked, one per role, and
// shared by every thread (Session::Run is thread-safe). Each loop owns its arrays and its I/O
// bindings, made once per batch size: a step is fill the step index, run, draw in place.
// With the GPU providers the graphs run on the device and the draw runs here between steps
// (ORT copies the bound host arrays); the native "tensorrt" backend keeps it all on the device.
#include <onnxruntime_cxx_api.h>

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "bld/bld.h"
#include "draw.hpp"
#include "error.hpp"
#include "graph_io.hpp"
#include "pyfmt.hpp"

namespace bld::core {

std::unique_ptr<Backend> create_tensorrt_backend(const Bundle &bundle, const BackendOptions &options);

namespace {

int64_t usable_cores() {  // as the Python runtime's base.usable_cores: the affinity mask
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
    return std::max<int64_t>(1, std::thread::hardware_concurrency());
}

// The process's onnxruntime environment, made by the first pipeline loaded. thread_pool "shared"
// (BackendOptions.thread_pool in Python) needs the environment made with onnxruntime's global
// thread pool: one pool the step graphs and the decoder share, which spins between steps without
// taking the cores from another pool. onnxruntime has one environment per process, so the first
// pipeline decides whether there is such a pool and its size.
// pin_threads: the shared pool's intra-op threads (all but the calling one) each on one of the
// usable CPUs after the first, which is left to the thread that generates (CallerPin). Without
// it, on the 2-core VM of the README, a batch-1 generation of the digits model took 3.8-4.2 ms
// or, when the pool's spinning thread and the caller shared a core, 8.7-9.5 ms (p90 8.8 ms);
// pinned, p90 4.0-4.4 ms. Returns that first CPU.
int pin_shared_pool(Ort::ThreadingOptions &threads, int64_t intra) {
    cpu_set_t set;
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    if (cpus.empty() || static_cast<int64_t>(cpus.size()) < intra)
        invalid_request("pin_threads needs a usable core for each of the " + std::to_string(intra) +
                        " intra-op threads, and this process may use " + std::to_string(cpus.size()));
    std::string affinity;  // onnxruntime's: one entry per pool thread, processors numbered from 1
    for (int64_t k = 1; k < intra; ++k) affinity += (k > 1 ? ";" : "") + std::to_string(cpus[size_t(k)] + 1);
    if (!affinity.empty())
        if (OrtStatus *status = Ort::GetApi().SetGlobalIntraOpThreadAffinity(threads, affinity.c_str())) {
            const std::string why = Ort::GetApi().GetErrorMessage(status);
            Ort::GetApi().ReleaseStatus(status);
            invalid_request("pin_threads: onnxruntime refused the affinity " + py::repr(affinity) + ": " + why);
        }
    return cpus[0];
}

// The CPU left to generating threads by a pinned shared pool, once the environment is made.
std::optional<int> pinned_caller_cpu;

Ort::Env &ort_env(const BackendOptions &o) {
    static std::mutex mutex;
    static std::unique_ptr<Ort::Env> env;
    static std::optional<std::pair<int64_t, int64_t>> shared;  // (intra, inter) of the pool
    const std::lock_guard<std::mutex> lock(mutex);
    const bool want_shared = o.thread_pool == "shared";
    const std::pair<int64_t, int64_t> sizes{o.intra_op_threads ? o.intra_op_threads : usable_cores(),
                                            o.inter_op_threads ? o.inter_op_threads : 1};
    if (!env) {
        // FATAL only, as the Python runtime sets it: an ORT error is reported once, as the one
        // `error:` line of the caller, never also by ORT's own logger on stderr
        if (want_shared) {
            Ort::ThreadingOptions threads;
            threads.SetGlobalIntraOpNumThreads(static_cast<int>(sizes.first));
            threads.SetGlobalInterOpNumThreads(static_cast<int>(sizes.second));
            threads.SetGlobalSpinControl(1);
            const std::optional<int> caller = o.pin_threads ? std::optional<int>(pin_shared_pool(threads, sizes.first))
                                                            : std::nullopt;
            env = std::make_unique<Ort::Env>(threads, ORT_LOGGING_LEVEL_FATAL, "bld");
            shared = sizes;
            pinned_caller_cpu = caller;
        } else {
            env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_FATAL, "bld");
        }
    } else if (want_shared && !shared) {
        invalid_request("this process's onnxruntime environment has no shared thread pool (a pipeline with "
                        "thread_pool 'session' was loaded first), and onnxruntime has one environment per "
                        "process: load the shared pipeline first");
    } else if (want_shared && *shared != sizes) {
        invalid_request("this process's shared onnxruntime thread pool has " + std::to_string(shared->first) +
                        " intra-op and " + std::to_string(shared->second) +
                        " inter-op threads, and onnxruntime has one per process: ask for the same, not " +
                        std::to_string(sizes.first) + " and " + std::to_string(sizes.second));
    } else if (want_shared && o.pin_threads != pinned_caller_cpu.has_value()) {
        invalid_request(std::string("this process's shared onnxruntime thread pool is ") +
                        (pinned_caller_cpu ? "" : "not ") +
                        "pinned, and onnxruntime has one per process: ask for the same pin_threads");
    }
    return *env;
}

const Ort::MemoryInfo &cpu_memory() {
    static const Ort::MemoryInfo info = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    return info;
}

ONNXTensorElementDataType element_type(const std::string &dtype) {
    if (dtype == "float32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (dtype == "float16") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    if (dtype == "int64") return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    if (dtype == "int32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    if (dtype == "uint8") return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
}

std::string available_text() { return py::join(Ort::GetAvailableProviders(), ", "); }

// Providers of each backend, in order of preference, with the hint for an install without them
// (the words of bld_runtime/backends/cuda.py: the default build links the onnxruntime wheel).
struct ProviderPlan {
    std::string provider, hint;
};

ProviderPlan provider_plan(const std::string &backend) {
    if (backend == "cuda")
        return {"CUDAExecutionProvider",
                "pip install 'onnxruntime-gpu>=1.20,<1.27' (CUDA 12) or 'onnxruntime-gpu>=1.27' (CUDA 13) in place of "
                "onnxruntime"};
    if (backend == "tensorrt-ep")
        return {"TensorrtExecutionProvider", "onnxruntime-gpu built with TensorRT, and the TensorRT libraries"};
    return {"CPUExecutionProvider", ""};
}

template <class Options, class Create, class Update, class Release>
void append_provider(Create create, Update update, Release release,
                     const std::map<std::string, std::string> &settings,
                     const std::function<void(const Options &)> &append) {
    const OrtApi &api = Ort::GetApi();
    Options *opts = nullptr;
    Ort::ThrowOnError((api.*create)(&opts));
    std::vector<const char *> keys, values;
    for (const auto &[k, v] : settings) keys.push_back(k.c_str()), values.push_back(v.c_str());
    try {
        Ort::ThrowOnError((api.*update)(opts, keys.data(), values.data(), keys.size()));
        append(*opts);
    } catch (...) {
        (api.*release)(opts);
        throw;
    }
    (api.*release)(opts);
}

// onnxruntime's TensorRT provider keeps its engines and timing cache (its own file names, no
// manifests) in this folder of trt_cache_dir, apart from the engine cache that `bld-export
// engine` and the native backend read (as bld_runtime/backends/cuda.py's ORT_ENGINE_SUBDIR).
constexpr const char *kOrtEngineSubdir = "onnxruntime-trt-ep";

// Session options of one graph: the providers of o.backend, and for tensorrt-ep the graph's
// batch profile.
Ort::SessionOptions session_options(const BackendOptions &o, const GraphSpec &graph, int64_t max_batch) {
    static const std::map<std::string, GraphOptimizationLevel> levels = {
        {"disable", ORT_DISABLE_ALL}, {"basic", ORT_ENABLE_BASIC},
        {"extended", ORT_ENABLE_EXTENDED}, {"all", ORT_ENABLE_ALL}};
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(levels.at(o.graph_optimization));
    so.SetExecutionMode(ORT_SEQUENTIAL);
    so.SetLogSeverityLevel(4);
    if (o.thread_pool == "shared") {  // the environment's pool (ort_env), sized once for the process
        so.DisablePerSessionThreads();
    } else {
        so.SetIntraOpNumThreads(static_cast<int>(o.intra_op_threads));
        so.SetInterOpNumThreads(static_cast<int>(o.inter_op_threads));
        if (o.stop_spinning) so.AddConfigEntry("session.force_spinning_stop", "1");
    }
    const std::string device = std::to_string(o.device_id);
    if (o.backend == "tensorrt-ep") {
        // Batch 1..max_batch tuned for max_batch (what `bld-export engine` builds by default):
        // without a profile the provider builds an engine for each new batch shape it meets.
        std::map<std::string, std::string> trt = {{"trt_profile_min_shapes", profile_shapes(graph, 1)},
                                                  {"trt_profile_opt_shapes", profile_shapes(graph, max_batch)},
                                                  {"trt_profile_max_shapes", profile_shapes(graph, max_batch)}};
        trt["device_id"] = device;
        trt["trt_fp16_enable"] = o.trt_fp16 ? "1" : "0";
        if (!o.trt_cache_dir.empty()) {
            const std::string dir = (std::filesystem::path(o.trt_cache_dir) / kOrtEngineSubdir).string();
            std::error_code ec;
            std::filesystem::create_directories(dir, ec);
            if (ec)  // the reason is ec's (e.g. "Permission denied"), the folder ours
                fail(BLD_ERROR_IO, "could not create onnxruntime's TensorRT cache folder " + dir + ": " + ec.message());
            trt["trt_engine_cache_enable"] = "1";
            trt["trt_engine_cache_path"] = dir;
            trt["trt_timing_cache_enable"] = "1";
            trt["trt_timing_cache_path"] = dir;
        }
        append_provider<OrtTensorRTProviderOptionsV2>(
            &OrtApi::CreateTensorRTProviderOptions, &OrtApi::UpdateTensorRTProviderOptions,
            &OrtApi::ReleaseTensorRTProviderOptions, trt,
            [&](const OrtTensorRTProviderOptionsV2 &p) { so.AppendExecutionProvider_TensorRT_V2(p); });
    }
    if (o.backend == "cuda" || o.backend == "tensorrt-ep")
        append_provider<OrtCUDAProviderOptionsV2>(
            &OrtApi::CreateCUDAProviderOptions, &OrtApi::UpdateCUDAProviderOptions,
            &OrtApi::ReleaseCUDAProviderOptions, {{"device_id", device}},
            [&](const OrtCUDAProviderOptionsV2 &p) { so.AppendExecutionProvider_CUDA_V2(p); });
    return so;
}

// One role's graph: its session, checked against the manifest.
struct Graph {
    std::string name, role;
    const GraphSpec *spec = nullptr;
    std::unique_ptr<Ort::Session> session;
};

std::string ort_type_name(ONNXTensorElementDataType t) {  // as onnxruntime's Python API names it
    switch (t) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "tensor(float)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "tensor(float16)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "tensor(double)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "tensor(int64)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "tensor(int32)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "tensor(uint8)";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "tensor(bool)";
        default: return "tensor(type " + std::to_string(static_cast<int>(t)) + ")";
    }
}

std::string list_of_names(const std::vector<std::string> &names) {
    std::vector<std::string> shown;
    for (const auto &n : names) shown.push_back(py::repr(n));
    return "[" + py::join(shown, ", ") + "]";
}

// backends/base.py's check_session_io: the session's I/O must be the manifest's, in order.
void check_session_io(const Graph &g) {
    const std::string where = "graph " + py::repr(g.name) + " (" + g.spec->file + ")";
    Ort::AllocatorWithDefaultOptions alloc;
    for (const bool inputs : {true, false}) {
        const char *side = inputs ? "input" : "output";
        const auto &specs = inputs ? g.spec->inputs : g.spec->outputs;
        const size_t count = inputs ? g.session->GetInputCount() : g.session->GetOutputCount();
        std::vector<std::string> names, listed;
        for (size_t i = 0; i < count; ++i)
            names.push_back((inputs ? g.session->GetInputNameAllocated(i, alloc)
                                    : g.session->GetOutputNameAllocated(i, alloc)).get());
        for (const auto &t : specs) listed.push_back(t.name);
        if (names != listed)
            manifest_error(where + " has " + side + "s " + list_of_names(names) + ", but the manifest lists " +
                           list_of_names(listed));
        for (size_t i = 0; i < count; ++i) {
            const TensorSpec &spec = specs[i];
            const Ort::TypeInfo type = inputs ? g.session->GetInputTypeInfo(i) : g.session->GetOutputTypeInfo(i);
            const auto info = type.GetTensorTypeAndShapeInfo();
            if (info.GetElementType() != element_type(spec.dtype))
                manifest_error(where + ": " + side + " " + py::repr(spec.name) + " has type " +
                               ort_type_name(info.GetElementType()) + ", but the manifest says " + spec.dtype);
            const std::vector<int64_t> dims = info.GetShape();
            std::vector<const char *> symbols(dims.size(), nullptr);
            info.GetSymbolicDimensions(symbols.data(), symbols.size());
            std::vector<std::string> shown, want;
            bool same = dims.size() == spec.shape.size();
            for (size_t d = 0; d < dims.size(); ++d) {
                const bool symbolic = dims[d] < 0;
                shown.push_back(!symbolic ? std::to_string(dims[d])
                                          : (symbols[d] && *symbols[d] ? py::repr(std::string(symbols[d])) : "None"));
                if (same) {
                    const Dim &w = spec.shape[d];
                    same = symbolic ? std::holds_alternative<std::string>(w) && std::get<std::string>(w) == kBatchAxis
                                    : std::holds_alternative<int64_t>(w) && std::get<int64_t>(w) == dims[d];
                }
            }
            for (const auto &w : spec.shape)
                want.push_back(std::holds_alternative<int64_t>(w) ? std::to_string(std::get<int64_t>(w))
                                                                  : py::repr(std::get<std::string>(w)));
            if (!same)
                manifest_error(where + ": " + side + " " + py::repr(spec.name) + " has shape [" + py::join(shown, ", ") +
                               "], but the manifest says [" + py::join(want, ", ") + "]");
        }
    }
}

// An onnxruntime error's first line as Python shows it (without "[ONNXRuntimeError] : ").
std::string ort_error_line(const Ort::Exception &e) {
    static const char *names[] = {"OK", "FAIL", "INVALID_ARGUMENT", "NO_SUCHFILE", "NO_MODEL", "ENGINE_ERROR",
                                  "RUNTIME_EXCEPTION", "INVALID_PROTOBUF", "MODEL_LOADED", "NOT_IMPLEMENTED",
                                  "INVALID_GRAPH", "EP_FAIL"};
    const int code = static_cast<int>(e.GetOrtErrorCode());
    std::string text = e.what();
    text = text.substr(0, text.find('\n'));
    return std::to_string(code) + " : " + (code >= 0 && code < 12 ? names[code] : "ERROR") + " : " + text;
}

// The graph's `bld.graph` metadata; has is false when it records none.
std::string graph_metadata(const Ort::Session &session, bool &has) {
    Ort::AllocatorWithDefaultOptions alloc;
    auto value = session.GetModelMetadata().LookupCustomMetadataMapAllocated(kGraphMetadataKey, alloc);
    has = value != nullptr;
    return has ? std::string(value.get()) : std::string();
}

std::vector<int64_t> batch_shape(const TensorSpec &spec, size_t batch) {
    std::vector<int64_t> shape;
    for (const auto &d : spec.shape)
        shape.push_back(std::holds_alternative<int64_t>(d) ? std::get<int64_t>(d) : static_cast<int64_t>(batch));
    return shape;
}

Ort::Value host_tensor(const TensorSpec &spec, size_t batch, void *data, size_t bytes) {
    const auto shape = batch_shape(spec, batch);
    return Ort::Value::CreateTensor(cpu_memory(), data, bytes, shape.data(), shape.size(),
                                    element_type(spec.dtype));
}

class OrtBackend;

class OrtLoop final : public Loop {
  public:
    OrtLoop(const OrtBackend &backend, size_t batch);
    void start(const LoopRequest &r) override;
    void run_step(int64_t i) override;
    void advance(int64_t i) override;
    const uint8_t *bits() override;
    void read_probs(float *out) override { std::copy(probs_.begin(), probs_.end(), out); }

  private:
    struct Binding {
        Ort::IoBinding io;
        std::vector<Ort::Value> values;  // the tensors over our arrays, alive as long as io
    };
    Binding &binding(const Graph &g);
    void finish_state();

    const OrtBackend &backend_;
    size_t n_;  // bits per image
    int64_t num_steps_;
    std::vector<float> state_, probs_, half_, known_;
    std::vector<uint8_t> bits_, keep_;
    std::vector<uint64_t> seeds_;
    std::vector<int64_t> step_, classes_;
    std::vector<float> temperature_, guidance_;
    bool masked_ = false;
    bool stale_ = true;  // bits_ lags state_: converted only when someone reads them
    const Graph *graph_ = nullptr;
    std::map<std::string, Binding> bindings_;
};

class OrtBackend final : public Backend {
  public:
    OrtBackend(const Bundle &bundle, const BackendOptions &o) : manifest_(bundle.manifest), pin_(o.pin_threads) {
        const ProviderPlan plan = provider_plan(o.backend);
        const auto available = Ort::GetAvailableProviders();
        if (std::find(available.begin(), available.end(), plan.provider) == available.end())
            fail(BLD_ERROR_BACKEND_UNAVAILABLE,
                 "backend " + py::repr(o.backend) + " needs onnxruntime's " + plan.provider + " (" +
                     plan.hint + "); this onnxruntime " + Ort::GetVersionString() + " has " +
                     available_text());
        // Graphs loaded from bytes must not pull tensors from files: point onnxruntime's
        // external-data folder at an empty one, so such a graph fails to load.
        char empty[] = "/tmp/bld-no-external-data-XXXXXX";
        if (!mkdtemp(empty)) fail(BLD_ERROR_IO, std::string(std::strerror(errno)) + ": /tmp");
        struct Remove {
            const char *dir;
            ~Remove() { rmdir(dir); }
        } remove_empty{empty};
        for (const char *role : {"encoder", "decoder", "step", "step_guided"}) {
            Graph &g = graphs_[role];
            g.role = role;
            g.name = graph_for(bundle, role, o.precision);
            g.spec = manifest_.graph(g.name);
            Ort::SessionOptions so;  // per graph: tensorrt-ep's profile shapes are the graph's
            try {
                so = session_options(o, *g.spec, manifest_.max_batch);
            } catch (const Ort::Exception &e) {
                fail(BLD_ERROR_BACKEND_UNAVAILABLE, "backend " + py::repr(o.backend) +
                                                        ": onnxruntime could not start " + plan.provider +
                                                        ": " + e.what());
            }
            so.AddConfigEntry("session.model_external_initializers_file_folder_path", empty);
            const std::vector<char> bytes = read_graph(bundle, g.name, o.verify_hashes);
            const std::string where = "graph " + py::repr(g.name) + " (" + g.spec->file + ")";
            try {
                g.session = std::make_unique<Ort::Session>(ort_env(o), bytes.data(), bytes.size(), so);
            } catch (const Ort::Exception &e) {
                const std::string line = ort_error_line(e);
                std::string lower = line;
                std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
                if (lower.find("external data") != std::string::npos)
                    manifest_error(where + " keeps tensors in external data files, which bundles do not allow "
                                   "(every graph must be one self-contained .onnx file covered by its sha256)");
                fail(o.backend == "cpu" ? BLD_ERROR_MANIFEST : BLD_ERROR_BACKEND_UNAVAILABLE,
                     "onnxruntime cannot load " + where + ": " + line);
            }
            check_session_io(g);
            bool has = false;
            const std::string metadata = graph_metadata(*g.session, has);
            check_graph_facts(g.name, metadata, has, manifest_);
        }
    }

    std::unique_ptr<Loop> make_loop(size_t batch) override { return std::make_unique<OrtLoop>(*this, batch); }

    void encode(const float *images, size_t n, float *probs) override {
        const auto &m = manifest_;
        run(graphs_.at("encoder"), images, n * size_t(m.image.channels * m.image.height * m.image.width),
            probs, n * size_t(m.latent.tokens() * m.latent.bits), n);
    }

    void decode(const float *bits, size_t n, float *images) override {
        const auto &m = manifest_;
        run(graphs_.at("decoder"), bits, n * size_t(m.latent.tokens() * m.latent.bits), images,
            n * size_t(m.image.channels * m.image.height * m.image.width), n);
    }

    const Graph &graph(const std::string &role) const { return graphs_.at(role); }
    const Manifest &manifest() const { return manifest_; }
    std::optional<int> caller_cpu() const override { return pin_ ? pinned_caller_cpu : std::nullopt; }

  private:
    // Encoder and decoder run once per request, not per step: plain Run over the caller's arrays.
    void run(const Graph &g, const float *in, size_t in_count, float *out, size_t out_count, size_t n) {
        const TensorSpec &is = g.spec->inputs[0], &os = g.spec->outputs[0];
        Ort::Value input = host_tensor(is, n, const_cast<float *>(in), in_count * sizeof(float));
        Ort::Value output = host_tensor(os, n, out, out_count * sizeof(float));
        const char *in_name = is.name.c_str(), *out_name = os.name.c_str();
        try {
            g.session->Run(Ort::RunOptions{nullptr}, &in_name, &input, 1, &out_name, &output, 1);
        } catch (const Ort::Exception &e) {
            fail(BLD_ERROR_INTERNAL, "onnxruntime failed running graph " + py::repr(g.name) + ": " + ort_error_line(e));
        }
    }

    Manifest manifest_;
    std::map<std::string, Graph> graphs_;
    bool pin_;
};

OrtLoop::OrtLoop(const OrtBackend &backend, size_t batch)
    : Loop(batch), backend_(backend),
      n_(size_t(backend.manifest().latent.tokens() * backend.manifest().latent.bits)),
      num_steps_(backend.manifest().schedule.sampling_steps),
      state_(batch * n_), probs_(batch * n_), half_(n_, 0.5f), known_(batch * n_),
      bits_(batch * n_), keep_(batch * n_), seeds_(batch), step_(batch), classes_(batch),
      temperature_(batch), guidance_(batch) {}

OrtLoop::Binding &OrtLoop::binding(const Graph &g) {
    auto found = bindings_.find(g.role);
    if (found != bindings_.end()) return found->second;
    // Inputs by the manifest's names (checked against the format at load); per-image sizes
    // were checked too, so each array below has exactly the bytes the tensor needs.
    const std::map<std::string, std::pair<void *, size_t>> arrays = {
        {"bits", {state_.data(), state_.size() * sizeof(float)}},
        {"step", {step_.data(), step_.size() * sizeof(int64_t)}},
        {"class_label", {classes_.data(), classes_.size() * sizeof(int64_t)}},
        {"temperature", {temperature_.data(), temperature_.size() * sizeof(float)}},
        {"guidance", {guidance_.data(), guidance_.size() * sizeof(float)}},
        {"probs", {probs_.data(), probs_.size() * sizeof(float)}}};
    Binding b{Ort::IoBinding(*g.session), {}};
    for (const auto &spec : g.spec->inputs) {
        const auto &[data, bytes] = arrays.at(spec.name);
        b.values.push_back(host_tensor(spec, batch_, data, bytes));
        b.io.BindInput(spec.name.c_str(), b.values.back());
    }
    const TensorSpec &out = g.spec->outputs[0];
    b.values.push_back(host_tensor(out, batch_, probs_.data(), probs_.size() * sizeof(float)));
    b.io.BindOutput(out.name.c_str(), b.values.back());
    return bindings_.emplace(g.role, std::move(b)).first->second;
}

void OrtLoop::start(const LoopRequest &r) {
    std::copy_n(r.seeds, batch_, seeds_.begin());
    std::copy_n(r.classes, batch_, classes_.begin());
    std::copy_n(r.temperature, batch_, temperature_.begin());
    std::copy_n(r.guidance, batch_, guidance_.begin());
    masked_ = r.keep != nullptr;
    if (masked_) {
        std::copy_n(r.keep, batch_ * n_, keep_.begin());
        std::transform(r.known, r.known + batch_ * n_, known_.begin(), [](uint8_t v) { return float(v); });
    }
    graph_ = &backend_.graph(r.guided ? "step_guided" : "step");
    binding(*graph_);
    for (size_t b = 0; b < batch_; ++b)
        draw_image(half_.data(), seeds_[b], 0, n_, &state_[b * n_], masked_ ? &keep_[b * n_] : nullptr,
                   masked_ ? &known_[b * n_] : nullptr);
    finish_state();
}

void OrtLoop::run_step(int64_t i) {
    std::fill(step_.begin(), step_.end(), i);
    try {
        graph_->session->Run(Ort::RunOptions{nullptr}, binding(*graph_).io);
    } catch (const Ort::Exception &e) {
        fail(BLD_ERROR_INTERNAL, "onnxruntime failed running graph " + py::repr(graph_->name) + ": " + ort_error_line(e));
    }
}

void OrtLoop::advance(int64_t i) {
    for (size_t b = 0; b < batch_; ++b) {
        const uint8_t *keep = masked_ ? &keep_[b * n_] : nullptr;
        const float *known = masked_ ? &known_[b * n_] : nullptr;
        if (i < num_steps_ - 1)
            draw_image(&probs_[b * n_], seeds_[b], static_cast<uint64_t>(i) + 1, n_, &state_[b * n_], keep, known);
        else
            threshold_image(&probs_[b * n_], n_, &state_[b * n_], keep, known);
    }
    finish_state();
}

void OrtLoop::finish_state() { stale_ = true; }

const uint8_t *OrtLoop::bits() {
    if (stale_) std::transform(state_.begin(), state_.end(), bits_.begin(), [](float v) { return uint8_t(v != 0.0f); });
    stale_ = false;
    return bits_.data();
}

}  // namespace

std::string graph_for(const Bundle &bundle, const std::string &role, const std::string &precision) {
    std::string name = role;
    if (precision == "fp16" && role != "encoder") name = role + "_fp16";
    if (precision == "int8" && (role == "step" || role == "step_guided")) name = role + "_int8";
    if (!bundle.manifest.graph(name))
        manifest_error("bundle " + bundle.shown + " has no " + py::repr(name) + " graph, which precision " +
                       py::repr(precision) + " needs (export with --" + precision + ")");
    return name;
}

// Python's backends/int8.py int8_refusal, sentence for sentence: int8 runs natively with VNNI or
// AMX-INT8 (x86-64) or the dot-product instructions (ARM64), and is refused elsewhere.
std::optional<std::string> int8_refusal(const std::string &machine, const std::optional<std::set<std::string>> &flags) {
    std::string arch = machine;
    std::transform(arch.begin(), arch.end(), arch.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    std::vector<std::string> wanted;
    std::string names;
    if (arch == "x86_64" || arch == "amd64" || arch == "i386" || arch == "i686") {
        wanted = {"avx512_vnni", "avx_vnni", "amx_int8"};
        names = "AVX512_VNNI, AVX_VNNI or AMX-INT8";
    } else if (arch == "aarch64" || arch == "arm64") {
        wanted = {"asimddp", "i8mm"};
        names = "the dot-product instructions (asimddp or i8mm)";
    } else {
        return "precision 'int8' runs on x86-64 CPUs with VNNI or AMX-INT8 and ARM64 CPUs with dot-product "
               "instructions; this CPU is " +
               (machine.empty() ? std::string("unknown") : machine) + "; use --precision fp32";
    }
    if (!flags)
        return "precision 'int8' needs a CPU with " + names +
               ", and this system does not say whether it has them (no /proc/cpuinfo); use --precision fp32";
    for (const auto &flag : wanted)
        if (flags->count(flag)) return std::nullopt;
    return "precision 'int8' needs a CPU with " + names +
           ", which this one lacks (without them onnxruntime's int8 kernels may saturate and give other bits); use "
           "--precision fp32";
}

namespace {
// The first CPU's flags from /proc/cpuinfo ("flags" on x86, "Features" on ARM64), as int8.py reads them.
std::optional<std::set<std::string>> cpu_flags() {
    std::ifstream in("/proc/cpuinfo");
    if (!in) return std::nullopt;
    std::string line;
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        key.erase(key.find_last_not_of(" \t") + 1);
        key.erase(0, key.find_first_not_of(" \t"));
        if (key != "flags" && key != "Features") continue;
        std::istringstream words(line.substr(colon + 1));
        std::set<std::string> flags;
        for (std::string w; words >> w;) flags.insert(w);
        return flags;
    }
    return std::nullopt;
}

std::string machine_name() {
    struct utsname u {};
    return uname(&u) == 0 ? std::string(u.machine) : std::string();
}
}  // namespace

// The C++ runtime's backends by name: the names of Python's entry-point group `bld.backends`
// (docs/ARCHITECTURE.md), one row each. A library cannot load plug-ins by name safely, so a
// new backend is a row here, never another branch.
namespace {
using BackendFactory = std::unique_ptr<Backend> (*)(const Bundle &, const BackendOptions &);
std::unique_ptr<Backend> make_ort_backend(const Bundle &bundle, const BackendOptions &options) {
    return std::make_unique<OrtBackend>(bundle, options);
}
// "openvino" runs in the Python runtime only (bld_runtime/backends/openvino.py): named here so
// that both runtimes list the same backends, and refused in one sentence.
std::unique_ptr<Backend> refuse_openvino(const Bundle &, const BackendOptions &) {
    fail(BLD_ERROR_BACKEND_UNAVAILABLE,
         "backend 'openvino' runs in the Python runtime only (bld sample --backend openvino, after "
         "pip install 'bld[openvino]'); the C++ runtime has cpu, cuda, tensorrt-ep and tensorrt");
}
constexpr std::pair<std::string_view, BackendFactory> kBackends[] = {
    {"cpu", make_ort_backend},
    {"cuda", make_ort_backend},
    {"tensorrt-ep", make_ort_backend},
    {"tensorrt", create_tensorrt_backend},
    {"openvino", refuse_openvino},
};
}  // namespace

std::unique_ptr<Backend> create_backend(const Bundle &bundle, const BackendOptions &options) {
    if (options.pin_threads && options.thread_pool != "shared")  // as BackendOptions refuses it
        invalid_request("pin_threads needs thread_pool 'shared': it pins the shared pool's threads");
    std::vector<std::string> names;
    for (const auto &[name, make] : kBackends) {
        if (options.backend != name) continue;
        if (options.precision == "bf16" && name != "openvino")  // as Python's Backend refuses it
            fail(BLD_ERROR_BACKEND_UNAVAILABLE, "precision 'bf16' runs on backend 'openvino' only; backend " +
                                                    py::repr(options.backend) + " runs fp32, fp16" +
                                                    (name == "cpu" || name == "tensorrt" ? ", int8" : ""));
        // base.ONLY_ON; "openvino" runs int8 in Python and is refused below as a whole
        if (options.precision == "int8" && name != "cpu" && name != "openvino" && name != "tensorrt")
            fail(BLD_ERROR_BACKEND_UNAVAILABLE,
                 "precision 'int8' runs on backends 'cpu', 'openvino' and 'tensorrt' only; backend " +
                     py::repr(options.backend) + " runs fp32, fp16");
        if (options.precision == "int8" && name == "cpu")  // CpuBackend._prepare: before any graph is read
            if (const auto why = int8_refusal(machine_name(), cpu_flags())) fail(BLD_ERROR_BACKEND_UNAVAILABLE, *why);
        return make(bundle, options);
    }
    for (const auto &entry : kBackends) names.emplace_back(entry.first);
    fail(BLD_ERROR_BACKEND_UNAVAILABLE,
         "unknown backend " + py::repr(options.backend) + "; choose one of " + py::join(names, ", ") +
             " (onnxruntime here has " + available_text() + ")");
}

namespace {
// Held by the one generation that has the pinned core (Python's _caller_pin_lock): concurrent
// ones run unpinned rather than queue up on one core.
std::atomic<bool> caller_pin_held{false};
}  // namespace

CallerPin::CallerPin(std::optional<int> cpu) {
    if (!cpu || caller_pin_held.exchange(true)) return;
    held_ = true;
    if (sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(*cpu, &one);
    pinned_ = sched_setaffinity(0, sizeof(one), &one) == 0;
}

CallerPin::~CallerPin() {
    if (pinned_) sched_setaffinity(0, sizeof(saved_), &saved_);
    if (held_) caller_pin_held.store(false);
}

}  // namespace bld::core

// The onnxruntime this library runs on (the one it was linked with, as loaded), for bld.h.
extern "C" const char *bld_onnxruntime_version(void) {
    return OrtGetApiBase()->GetVersionString();
}
