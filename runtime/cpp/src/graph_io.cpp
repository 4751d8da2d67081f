#include "graph_io.hpp"

#include <algorithm>

#include "error.hpp"
#include "pyjson.hpp"

namespace bld::core {

RoleIo role_io(const std::string &role, const Manifest &m) {
    const int64_t bits = m.latent.tokens() * m.latent.bits;
    const int64_t pixels = m.image.channels * m.image.height * m.image.width;
    if (role == "encoder") return {{{"image", "float32", pixels}}, {{"probs", "float32", bits}}};
    if (role == "decoder") return {{{"bits", "float32", bits}}, {{"image", "float32", pixels}}};
    RoleIo io{{{"bits", "float32", bits},
               {"step", "int64", 1},
               {"class_label", "int64", 1},
               {"temperature", "float32", 1}},
              {{"probs", "float32", bits}}};
    if (role == "step_guided") io.inputs.push_back({"guidance", "float32", 1});
    return io;
}

int64_t per_image(const TensorSpec &spec) {
    if (spec.shape.empty() || !std::holds_alternative<std::string>(spec.shape[0])) return -1;
    int64_t count = 1;
    for (size_t i = 1; i < spec.shape.size(); ++i) {
        if (!std::holds_alternative<int64_t>(spec.shape[i])) return -1;
        count *= std::get<int64_t>(spec.shape[i]);
    }
    return count;
}

namespace {

std::string shape_text(const TensorSpec &t) {
    std::vector<std::string> dims;
    for (const auto &d : t.shape)
        dims.push_back(std::holds_alternative<int64_t>(d) ? std::to_string(std::get<int64_t>(d))
                                                          : py::repr(std::get<std::string>(d)));
    return "[" + py::join(dims, ", ") + "]";
}

void check_side(const std::string &where, const char *side, const std::vector<TensorSpec> &have,
                const std::vector<IoSlot> &want) {
    for (const auto &t : have)
        if (std::none_of(want.begin(), want.end(), [&](const IoSlot &s) { return s.name == t.name; }))
            manifest_error(where + " lists " + side + " " + py::repr(t.name) +
                           ", which bundle format v1 does not define for this graph");
    for (const auto &s : want) {
        auto t = std::find_if(have.begin(), have.end(), [&](const TensorSpec &x) { return x.name == s.name; });
        if (t == have.end())
            manifest_error(where + " lacks the " + side + " " + py::repr(s.name));
        if (t->dtype != s.dtype)
            manifest_error(where + " declares " + side + " " + py::repr(s.name) + " as " + t->dtype +
                           "; bundle format v1 needs " + s.dtype);
        if (per_image(*t) != s.per_image)
            manifest_error(where + " declares " + side + " " + py::repr(s.name) + " with shape " +
                           shape_text(*t) + "; bundle format v1 needs a dynamic batch axis and " +
                           std::to_string(s.per_image) + " elements per image");
    }
}

}  // namespace

void check_manifest_io(const std::string &graph, const std::string &role, const Manifest &m) {
    const GraphSpec *g = m.graph(graph);
    const RoleIo io = role_io(role, m);
    const std::string where = std::string(kManifestName) + ": graphs." + graph;
    check_side(where, "input", g->inputs, io.inputs);
    check_side(where, "output", g->outputs, io.outputs);
}

void check_graph_metadata(const std::string &graph, const std::string &role,
                          const std::string &metadata, const Manifest &m) {
    if (metadata.empty()) return;  // graphs exported before bld.graph existed
    const std::string where = "graph " + py::repr(graph) + " (" + m.graph(graph)->file + ")";
    py::Json meta;
    try {
        meta = py::Json::parse(metadata);
    } catch (const py::Json::parse_error &) {
        manifest_error(where + ": its bld.graph metadata is not valid JSON");
    }
    const GraphSpec *g = m.graph(graph);
    const py::Json expected = {
        {"name", graph},
        {"kind", role},
        {"precision", g->precision},
        {"image", {{"height", m.image.height}, {"width", m.image.width}, {"channels", m.image.channels}}},
        {"latent", {{"height", m.latent.height}, {"width", m.latent.width}, {"bits", m.latent.bits}}},
        {"classes", {{"count", m.classes.count}, {"null_class", m.classes.null_class}}},
        {"schedule", {{"name", m.schedule.name}, {"train_steps", m.schedule.train_steps},
                      {"sampling_steps", m.schedule.sampling_steps}, {"timesteps", m.schedule.timesteps}}},
    };
    if (!meta.is_object()) manifest_error(where + ": its bld.graph metadata is not a JSON object");
    for (const auto &[key, want] : expected.items()) {
        if (!meta.contains(key)) manifest_error(where + ": its bld.graph metadata lacks " + py::repr(key));
        const py::Json &have = meta[key];
        if (want.is_object()) {
            for (const auto &[sub, value] : want.items())
                if (!have.is_object() || !have.contains(sub) || have[sub] != value)
                    manifest_error(where + ": bld.graph says " + key + "." + sub + " is " +
                                   (have.is_object() && have.contains(sub) ? py::repr(have[sub]) : "missing") +
                                   ", bld.json says " + py::repr(value));
        } else if (have != want) {
            manifest_error(where + ": bld.graph says " + key + " is " + py::repr(have) +
                           ", bld.json says " + py::repr(want));
        }
    }
}

}  // namespace bld::core
