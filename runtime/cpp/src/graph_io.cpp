#include "graph_io.hpp"

#include <algorithm>

#include "error.hpp"
#include "pyfmt.hpp"
#include "pyjson.hpp"

namespace bld::core {

namespace {
const std::string kFp16Suffix = "_fp16";

bool fp16(const std::string &name) {
    return name.size() > kFp16Suffix.size() && name.compare(name.size() - kFp16Suffix.size(), kFp16Suffix.size(), kFp16Suffix) == 0;
}
}  // namespace

std::string graph_kind(const std::string &name) { return fp16(name) ? name.substr(0, name.size() - kFp16Suffix.size()) : name; }
std::string graph_precision(const std::string &name) { return fp16(name) ? "fp16" : "fp32"; }

GraphIo graph_io(const std::string &kind, const Manifest &m) {
    const Dim batch = std::string(kBatchAxis);
    const TensorSpec pixels{"image", "float32", {batch, m.image.channels, m.image.height, m.image.width}};
    const TensorSpec bits{"bits", "float32", {batch, m.latent.tokens(), m.latent.bits}};
    const TensorSpec probs{"probs", "float32", {batch, m.latent.tokens(), m.latent.bits}};
    const std::vector<TensorSpec> conditions = {
        {"step", "int64", {batch}}, {"class_label", "int64", {batch}}, {"temperature", "float32", {batch}}};
    if (kind == "encoder") return {{pixels}, {probs}};
    if (kind == "decoder") return {{bits}, {pixels}};
    GraphIo io{{bits}, {probs}};
    io.inputs.insert(io.inputs.end(), conditions.begin(), conditions.end());
    if (kind == "step_guided") io.inputs.push_back({"guidance", "float32", {batch}});
    return io;
}

std::string show_io(const std::vector<TensorSpec> &specs) {
    std::vector<std::string> items;
    for (const auto &s : specs) {
        std::vector<std::string> dims;
        for (const auto &d : s.shape)
            dims.push_back(std::holds_alternative<int64_t>(d) ? std::to_string(std::get<int64_t>(d)) : std::get<std::string>(d));
        items.push_back(s.name + " " + s.dtype + " [" + py::join(dims, ", ") + "]");
    }
    return py::join(items, ", ");
}

std::string profile_shapes(const GraphSpec &graph, int64_t batch) {
    std::vector<std::string> parts;
    for (const auto &t : graph.inputs) {
        std::vector<std::string> dims;
        for (const auto &d : t.shape)  // the batch axis is the only named one
            dims.push_back(std::to_string(std::holds_alternative<int64_t>(d) ? std::get<int64_t>(d) : batch));
        parts.push_back(t.name + ":" + py::join(dims, "x"));
    }
    return py::join(parts, ",");
}

int64_t per_image(const TensorSpec &spec) {
    int64_t count = 1;
    for (size_t i = 1; i < spec.shape.size(); ++i)
        if (std::holds_alternative<int64_t>(spec.shape[i])) count *= std::get<int64_t>(spec.shape[i]);
    return count;
}

void check_graph_facts(const std::string &name, const std::string &metadata, bool has_metadata, const Manifest &m) {
    const std::string key = kGraphMetadataKey;
    const std::string where = "graph " + py::repr(name) + " (" + m.graph(name)->file + ")";
    if (!has_metadata)
        manifest_error(where + " records no " + py::repr(key) + " metadata, so the manifest cannot be checked "
                       "against it; re-export the bundle with this version of bld-export");
    py::Json recorded;
    try {
        recorded = py::Json::parse(metadata);
    } catch (const py::Json::exception &) {
        manifest_error(where + ": its " + py::repr(key) + " metadata is not valid JSON");
    }
    if (!recorded.is_object()) manifest_error(where + ": its " + py::repr(key) + " metadata is not an object");
    const auto &s = m.schedule;
    // manifest.graph_facts, in its key order
    const py::Json expected = {
        {"name", name},
        {"kind", graph_kind(name)},
        {"precision", graph_precision(name)},
        {"opset", m.graph(name)->opset},
        {"image", {{"height", m.image.height}, {"width", m.image.width}, {"channels", m.image.channels}}},
        {"latent", {{"height", m.latent.height}, {"width", m.latent.width}, {"bits", m.latent.bits}}},
        {"classes", {{"count", m.classes.count}, {"null_class", m.classes.null_class}}},
        {"schedule", {{"name", s.name}, {"train_steps", s.train_steps}, {"sampling_steps", s.sampling_steps},
                      {"timesteps", s.timesteps}}},
    };
    for (const auto &[fact, want] : expected.items()) {
        const py::Json got = recorded.contains(fact) ? recorded[fact] : py::Json();
        if (!py::same(got, want))
            manifest_error(where + " was built for " + fact + " " + py::dumps(got) + ", but " + kManifestName +
                           " says " + py::dumps(want));
    }
}

namespace {
std::vector<std::string> dot_split(const std::string &v) {
    std::vector<std::string> out;
    size_t start = 0;
    while (true) {
        const size_t dot = v.find('.', start);
        out.push_back(v.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) return out;
        start = dot + 1;
    }
}

// The parts as numbers, or empty when one is not a plain decimal number.
std::vector<long> numeric_parts(const std::string &v) {
    std::vector<long> out;
    for (const std::string &p : dot_split(v)) {
        if (p.empty() || p.size() > 9 || p.find_first_not_of("0123456789") != std::string::npos) return {};
        out.push_back(std::stol(p));
    }
    return out;
}

std::string quoted_sorted(std::vector<std::string> names) {  // Python's sorted(names)
    std::sort(names.begin(), names.end());
    for (auto &n : names) n = py::repr(n);
    return "[" + py::join(names, ", ") + "]";
}

std::vector<std::string> names_of(const std::vector<TensorSpec> &specs) {
    std::vector<std::string> out;
    for (const auto &t : specs) out.push_back(t.name);
    return out;
}
}  // namespace

bool trt_versions_match(const std::string &a, const std::string &b) {
    const auto pa = dot_split(a), pb = dot_split(b);
    const size_t n = std::min(pa.size(), pb.size());
    return std::equal(pa.begin(), pa.begin() + long(n), pb.begin());
}

std::string trt_version_refusal(const std::string &built, bool version_compatible, const std::string &runtime) {
    if (trt_versions_match(built, runtime)) return "";
    const auto b = numeric_parts(built), r = numeric_parts(runtime);
    if (version_compatible && !b.empty() && !r.empty() && r >= b && r[0] == b[0]) return "";
    return "it was built by tensorrt " + built + ", this runtime is " + runtime +
           (version_compatible ? "" : " (not built version-compatible)");
}

bool engine_candidate_before(const EngineCandidate &a, const EngineCandidate &b, const std::string &runtime_version,
                             bool any_batch) {
    const bool ea = trt_versions_match(a.version, runtime_version), eb = trt_versions_match(b.version, runtime_version);
    if (ea != eb) return ea;
    if (any_batch && a.max_batch != b.max_batch) return a.max_batch > b.max_batch;
    if (a.mtime != b.mtime) return a.mtime > b.mtime;
    return a.manifest < b.manifest;
}

std::string engine_io_mismatch(std::vector<std::string> inputs, std::vector<std::string> outputs,
                               const GraphSpec &graph, const std::string &name) {
    std::vector<std::string> want_in = names_of(graph.inputs), want_out = names_of(graph.outputs);
    std::sort(inputs.begin(), inputs.end());
    std::sort(outputs.begin(), outputs.end());
    std::sort(want_in.begin(), want_in.end());
    std::sort(want_out.begin(), want_out.end());
    if (inputs == want_in && outputs == want_out) return "";
    return "it has inputs " + quoted_sorted(inputs) + " and outputs " + quoted_sorted(outputs) + "; the bundle's " +
           name + " has " + quoted_sorted(want_in) + " and " + quoted_sorted(want_out);
}

}  // namespace bld::core
