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

}  // namespace bld::core
