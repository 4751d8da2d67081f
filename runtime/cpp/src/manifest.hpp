// bld.json, bundle format v1: typed structs that mirror the JSON, and a parser as strict as
// bld_runtime/manifest.py. Unknown keys, missing keys and wrong types are refused with the
// path of the value ("bld.json: graphs.step.inputs[0]: unknown key 'foo'"), in the same words
// and the same order of checks as the Python runtime, so both refuse a bundle alike.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace bld::core {

inline constexpr const char *kManifestName = "bld.json";
inline constexpr const char *kFormat = "bld-bundle";
inline constexpr int64_t kSchemaVersion = 1;
inline constexpr const char *kBatchAxis = "batch";  // every graph tensor starts with it
inline constexpr const char *kGraphMetadataKey = "bld.graph";
inline constexpr uint64_t kMaxManifestBytes = 4u << 20;
inline constexpr uint64_t kMaxGraphBytes = uint64_t(2) << 30;  // manifest.MAX_GRAPH_BYTES: protobuf's limit

using Dim = std::variant<int64_t, std::string>;  // fixed size, or a dynamic axis name

struct TensorSpec {
    std::string name;
    std::string dtype;  // float32 | float16 | int64 | int32 | uint8 | bool
    std::vector<Dim> shape;
    bool operator==(const TensorSpec &o) const { return name == o.name && dtype == o.dtype && shape == o.shape; }
};

struct GraphSpec {
    std::string file;  // relative to the bundle directory
    std::string sha256;
    std::string precision;  // fp32 | fp16 | int8
    int64_t opset = 0;
    std::vector<TensorSpec> inputs, outputs;
    int64_t flops = 0;  // per image per call

    const TensorSpec *input(const std::string &name) const;
    const TensorSpec *output(const std::string &name) const;
};

struct ImageSpec {
    int64_t height = 0, width = 0, channels = 0;
};

struct LatentSpec {
    int64_t height = 0, width = 0, bits = 0;
    int64_t tokens() const { return height * width; }
};

struct ClassesSpec {
    int64_t count = 0, null_class = 0;
};

struct ScheduleSpec {
    std::string name;
    int64_t train_steps = 0, sampling_steps = 0;
    std::vector<int64_t> timesteps;
};

struct Defaults {
    double temperature = 1.0, guidance = 0.0;
};

struct Producer {
    std::string bld, torch, onnx, onnxruntime;
};

struct Manifest {
    std::string format;
    int64_t schema_version = 0;
    ImageSpec image;
    LatentSpec latent;
    ClassesSpec classes;
    ScheduleSpec schedule;
    Defaults defaults;
    int64_t max_batch = 0;
    std::vector<std::pair<std::string, GraphSpec>> graphs;  // in the file's order
    Producer producer;

    const GraphSpec *graph(const std::string &name) const;
};

// Parse the text of a bld.json (strict JSON: no NaN/Infinity, no duplicate keys, UTF-8).
// Throws Failure(BLD_ERROR_MANIFEST) with the Python runtime's message.
Manifest parse_manifest(const std::string &text);

}  // namespace bld::core
