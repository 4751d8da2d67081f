// The graph interface of bundle format v1 (bld_runtime/manifest.py's graph_io, graph_facts):
// what each graph kind takes and returns, which the manifest must list exactly, and the facts
// each graph file records in its `bld.graph` metadata, which must agree with the manifest.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "bld/bld.h"
#include "manifest.hpp"

namespace bld::core {

struct GraphIo {
    std::vector<TensorSpec> inputs, outputs;
};

std::string graph_kind(const std::string &name);       // "step" for "step_fp16" and "step_int8"
std::string graph_precision(const std::string &name);  // "fp16" for "*_fp16", "int8" for "*_int8"

//   encoder      image float32 [batch, ch, H, W] in [-1, 1]   -> probs float32 [batch, L, C]
//   decoder      bits float32 [batch, L, C] (0/1)             -> image float32 [batch, ch, H, W]
//   step         bits, step, class_label, temperature         -> probs float32 [batch, L, C]
//   step_guided  the same plus guidance                       -> probs float32 [batch, L, C]
GraphIo graph_io(const std::string &kind, const Manifest &manifest);

// "bits float32 [batch, 64, 8], step int64 [batch]", as manifest._show_io prints them
std::string show_io(const std::vector<TensorSpec> &specs);

// A graph's inputs at `batch` as TensorRT profile shapes are written (onnxruntime's
// trt_profile_*_shapes, trtexec's --minShapes): "bits:8x64x8,step:8,class_label:8,temperature:8"
std::string profile_shapes(const GraphSpec &graph, int64_t batch);

// Elements per image of a tensor: the product of the dimensions after the batch axis.
int64_t per_image(const TensorSpec &spec);

// manifest.check_graph_facts: refuse a graph whose recorded facts (`bld.graph` metadata, JSON;
// `has_metadata` false when the graph has none) differ from the manifest's.
void check_graph_facts(const std::string &graph, const std::string &metadata, bool has_metadata,
                       const Manifest &manifest);

// --- The engine cache's rules (bld_runtime/engine_cache.py), kept here to be unit-tested -----

// Whether two TensorRT versions name the same release: the shorter, split at dots, is a prefix
// of the longer. "10.3.0" (tensorrt.__version__, what `bld-export engine` writes on the JetPack
// 6 wheel) matches "10.3.0.26" (getInferLibVersion plus the build number, a plan's header). The
// Python runtime applies the same rule (bld_runtime/engine_cache.py, versions_match).
bool trt_versions_match(const std::string &a, const std::string &b);

// Why a plan built by TensorRT `built` cannot run on TensorRT `runtime`, or "" when it can: the
// versions match, or the plan is version-compatible and the runtime is newer, of the same major.
std::string trt_version_refusal(const std::string &built, bool version_compatible, const std::string &runtime);

// What orders the engines that qualify for one graph kind (engine_cache.find's candidates).
struct EngineCandidate {
    std::string version;    // the key's TensorRT version
    int64_t max_batch = 0;  // the largest batch its profiles cover
    int64_t mtime = 0;      // its manifest's modification time (any unit that grows)
    std::string manifest;   // its manifest's path: the last tie-break, never the directory's order
};

// Whether `a` is preferred to `b`, as engine_cache.find sorts: the runtime's own version (by
// trt_versions_match) before a version-compatible plan of an older one; then, when the engine
// serves any batch (loaded once for the bundle's batches), the widest batch range; then the
// newest manifest; then the manifest's path.
bool engine_candidate_before(const EngineCandidate &a, const EngineCandidate &b, const std::string &runtime_version,
                             bool any_batch);

// Why an engine whose I/O tensors are `inputs` and `outputs` (names, in any order) cannot stand
// for `graph`, named `name`, of the bundle, or "" when the names are the graph's.
std::string engine_io_mismatch(std::vector<std::string> inputs, std::vector<std::string> outputs,
                               const GraphSpec &graph, const std::string &name);

// --- Reading the engine cache's files (files.open_input, engine_cache.read_manifest, load_plan) --

inline constexpr uint64_t kMaxEngineManifestBytes = uint64_t(1) << 20;  // engine_cache.MAX_MANIFEST_BYTES
// Python's json gives up near its recursion limit of 1000 (RecursionError); so does this reader,
// in one refusal of the manifest, never a crash or a stack overflow in what handles the value.
inline constexpr int kMaxEngineManifestDepth = 900;

// A file the cache hands us, opened as files.open_input opens it: without blocking (a FIFO with
// no writer would hang open() forever) and refused unless fstat on that very descriptor says a
// regular file: "engine manifest P is a FIFO (named pipe), not a regular file". With
// follow_symlink false a symlink is refused too ("... is a symbolic link, not a regular file").
// Other failures: "P: cannot be read (<strerror>)". Every refusal is a Failure of `kind`.
class InputFile {
  public:
    InputFile(const std::filesystem::path &path, const std::string &what, bld_error_kind kind,
              bool follow_symlink = true);
    ~InputFile();
    InputFile(const InputFile &) = delete;
    InputFile &operator=(const InputFile &) = delete;
    uint64_t size() const { return size_; }  // fstat's, when opened
    // Up to `count` bytes from the start (fewer only when the file shrank since it was opened).
    std::vector<char> read(uint64_t count);

  private:
    int fd_ = -1;
    uint64_t size_ = 0;
    std::filesystem::path path_;
};

// engine_cache.read_manifest and the JSON step of EngineManifest.from_json: a regular file of at
// most kMaxEngineManifestBytes (sized before it is read), UTF-8, JSON nested at most
// kMaxEngineManifestDepth deep ("P: nested too deeply to be an engine manifest"). Each refusal
// is one sentence naming the manifest: one refused candidate, never the cache's failure.
nlohmann::json read_engine_manifest(const std::filesystem::path &path);

// EngineManifest's rule for plan_file, in its words: exactly "<key_digest[:16]>.plan", a plain
// name in the manifest's own folder (so never a path with '/', '..' or a root). "" when it is.
std::string engine_plan_file_refusal(const std::string &plan_file, const std::string &key_digest);

// EngineManifest's rule for graph_facts: JSON (nested no deeper than a manifest may be) of an
// object whose "name" is the key's graph. "" when it is.
std::string engine_graph_facts_refusal(const std::string &graph_facts, const std::string &graph);

// engine_cache.load_plan's reading: the plan `plan_file` next to `manifest`, refused unless a
// regular file (a symlink is refused, not followed: the cache's writer never makes one), its
// size compared with the manifest's before a byte is read, then its sha256. The header is the
// caller's to check.
std::vector<char> read_engine_plan(const std::filesystem::path &manifest, const std::string &plan_file,
                                   uint64_t plan_size, const std::string &plan_sha256);

}  // namespace bld::core
