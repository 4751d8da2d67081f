// The graph interface of bundle format v1 (bld_runtime/manifest.py's graph_io, graph_facts):
// what each graph kind takes and returns, which the manifest must list exactly, and the facts
// each graph file records in its `bld.graph` metadata, which must agree with the manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace bld::core {

struct GraphIo {
    std::vector<TensorSpec> inputs, outputs;
};

std::string graph_kind(const std::string &name);       // "step" for "step_fp16"
std::string graph_precision(const std::string &name);  // "fp16" for "*_fp16"

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

}  // namespace bld::core
