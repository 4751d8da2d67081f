#include "graph_io.hpp"

#include "error.hpp"
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

}  // namespace bld::core
