// The parser mirrors bld_runtime/manifest.py's generic `_parse`: for each object, first the
// unknown keys (in the file's order), then the missing keys (in field order), then each field
// (in field order), then the struct's own checks (its __post_init__), whose messages get the
// object's path. Keep the messages in step with Python: tests/test_cpp_runtime.py runs the
// same broken manifests through both runtimes and compares the sentences.
#include "manifest.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <optional>

#include "contract.hpp"
#include "error.hpp"
#include "graph_io.hpp"
#include "pyjson.hpp"

namespace bld::core {
namespace {

using Json = py::Json;

// A field's own check failed; the caller adds the path of the object it belongs to.
struct Invalid {
    std::string message;
};

void require(bool ok, const std::string &message) {
    if (!ok) throw Invalid{message};
}

[[noreturn]] void fail_at(const std::string &path, const std::string &message) {
    manifest_error(std::string(kManifestName) + ": " + (path.empty() ? "" : path + ": ") + message);
}

std::string describe(const Json &v) {
    switch (v.type()) {
        case Json::value_t::object: return "an object";
        case Json::value_t::array: return "an array";
        case Json::value_t::string: return "a string";
        case Json::value_t::boolean: return "a boolean";
        case Json::value_t::number_integer:
        case Json::value_t::number_unsigned: return "an integer";
        case Json::value_t::number_float: return "a number";
        default: return "null";
    }
}

[[noreturn]] void wrong_type(const Json &v, const std::string &path, const std::string &expected) {
    const bool shown = v.is_string() || v.is_number() || v.is_boolean();
    fail_at(path, "expected " + expected + ", got " + describe(v) + (shown ? " " + py::repr(v) : ""));
}

bool is_int(const Json &v) {
    return v.is_number_integer() &&
           !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX));
}

int64_t get_int(const Json &v, const std::string &path) {
    if (v.is_number_unsigned() && !is_int(v))
        fail_at(path, std::to_string(v.get<uint64_t>()) + " is out of range (64-bit integers)");
    if (!is_int(v)) wrong_type(v, path, "an integer");
    return v.get<int64_t>();
}

double get_number(const Json &v, const std::string &path) {
    if (!v.is_number()) wrong_type(v, path, "a number");
    return v.get<double>();
}

std::string get_string(const Json &v, const std::string &path) {
    if (!v.is_string()) wrong_type(v, path, "a string");
    return v.get<std::string>();
}

std::string get_literal(const Json &v, const std::string &path,
                        const std::vector<std::string> &options) {
    if (!v.is_string() ||
        std::find(options.begin(), options.end(), v.get<std::string>()) == options.end()) {
        std::vector<std::string> shown;
        for (const auto &o : options) shown.push_back(py::repr(o));
        wrong_type(v, path, "one of " + py::join(shown, ", "));
    }
    return v.get<std::string>();
}

const Json &get_array(const Json &v, const std::string &path) {
    if (!v.is_array()) wrong_type(v, path, "an array");
    return v;
}

// One JSON object read into a struct: type, unknown keys, missing keys.
class Object {
  public:
    Object(const Json &v, std::string path, std::vector<std::string> fields)
        : v_(v), path_(std::move(path)) {
        if (!v.is_object()) wrong_type(v, path_, "an object");
        for (const auto &item : v.items())
            if (std::find(fields.begin(), fields.end(), item.key()) == fields.end())
                fail_at(path_, "unknown key " + py::repr(item.key()));
        for (const auto &f : fields)
            if (!v.contains(f)) fail_at(path_, "missing key " + py::repr(f));
    }
    const Json &operator[](const std::string &key) const { return v_.at(key); }
    std::string path(const std::string &key) const { return path_.empty() ? key : path_ + "." + key; }
    // The struct's own checks: their message gets this object's path.
    template <class F>
    void check(F checks) const {
        try {
            checks();
        } catch (const Invalid &e) {
            fail_at(path_, e.message);
        } catch (const Failure &e) {  // a ContractError from the schedule math
            fail_at(path_, e.what());
        }
    }

  private:
    const Json &v_;
    std::string path_;
};

constexpr int kMaxDepth = 900;  // Python's json gives up near its recursion limit of 1000

const std::vector<std::string> kDTypes = {"float32", "float16", "int64", "int32", "uint8", "bool"};
const std::vector<std::string> kPrecisions = {"fp32", "fp16", "int8"};
const std::vector<std::string> kRequiredGraphs = {"encoder", "decoder", "step", "step_guided"};  // KINDS
const std::vector<std::string> kOptionalGraphs = {"decoder_fp16", "step_fp16", "step_guided_fp16", "step_int8",
                                                  "step_guided_int8"};

TensorSpec parse_tensor(const Json &v, const std::string &path) {
    Object o(v, path, {"name", "dtype", "shape"});
    TensorSpec t;
    t.name = get_string(o["name"], o.path("name"));
    t.dtype = get_literal(o["dtype"], o.path("dtype"), kDTypes);
    const Json &shape = get_array(o["shape"], o.path("shape"));
    for (size_t i = 0; i < shape.size(); ++i) {
        const Json &d = shape[i];
        const std::string at = o.path("shape") + "[" + std::to_string(i) + "]";
        if (is_int(d)) t.shape.emplace_back(d.get<int64_t>());
        else if (d.is_string()) t.shape.emplace_back(d.get<std::string>());
        else wrong_type(d, at, "an integer or a string");
    }
    o.check([&] {
        require(!t.name.empty(), "name must not be empty");
        for (size_t i = 0; i < t.shape.size(); ++i) {
            const Dim &d = t.shape[i];
            const bool ok = std::holds_alternative<std::string>(d)
                                ? !std::get<std::string>(d).empty()
                                : std::get<int64_t>(d) >= 1;
            const std::string shown = std::holds_alternative<std::string>(d)
                                          ? py::repr(std::get<std::string>(d))
                                          : std::to_string(std::get<int64_t>(d));
            require(ok, "shape[" + std::to_string(i) +
                            "] must be a positive integer or a dynamic axis name, got " + shown);
        }
    });
    return t;
}

std::vector<TensorSpec> parse_tensors(const Json &v, const std::string &path) {
    std::vector<TensorSpec> out;
    const Json &items = get_array(v, path);
    for (size_t i = 0; i < items.size(); ++i)
        out.push_back(parse_tensor(items[i], path + "[" + std::to_string(i) + "]"));
    return out;
}

GraphSpec parse_graph(const Json &v, const std::string &path) {
    Object o(v, path, {"file", "sha256", "precision", "opset", "inputs", "outputs", "flops"});
    GraphSpec g;
    g.file = get_string(o["file"], o.path("file"));
    g.sha256 = get_string(o["sha256"], o.path("sha256"));
    g.precision = get_literal(o["precision"], o.path("precision"), kPrecisions);
    g.opset = get_int(o["opset"], o.path("opset"));
    g.inputs = parse_tensors(o["inputs"], o.path("inputs"));
    g.outputs = parse_tensors(o["outputs"], o.path("outputs"));
    g.flops = get_int(o["flops"], o.path("flops"));
    o.check([&] {
        require(!g.file.empty(), "file must not be empty");
        require(g.flops >= 0, "flops must be >= 0, got " + std::to_string(g.flops));
        const bool hex = std::all_of(g.sha256.begin(), g.sha256.end(),
                                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
        require(g.sha256.size() == 64 && hex,
                "sha256 must be 64 lowercase hexadecimal digits, got " + py::repr(g.sha256));
        require(g.opset >= 1, "opset must be >= 1, got " + std::to_string(g.opset));
        for (const auto *kind : {"inputs", "outputs"}) {
            const auto &specs = std::string(kind) == "inputs" ? g.inputs : g.outputs;
            require(!specs.empty(), std::string(kind) + " must not be empty");
            std::vector<std::string> names, shown;
            for (const auto &s : specs) names.push_back(s.name), shown.push_back(py::repr(s.name));
            std::vector<std::string> unique = names;
            std::sort(unique.begin(), unique.end());
            require(std::unique(unique.begin(), unique.end()) == unique.end(),
                    std::string(kind) + " has duplicate names: [" + py::join(shown, ", ") + "]");
        }
    });
    return g;
}

ScheduleSpec parse_schedule(const Json &v, const std::string &path) {
    Object o(v, path, {"name", "train_steps", "sampling_steps", "timesteps"});
    ScheduleSpec s;
    s.name = get_string(o["name"], o.path("name"));
    s.train_steps = get_int(o["train_steps"], o.path("train_steps"));
    s.sampling_steps = get_int(o["sampling_steps"], o.path("sampling_steps"));
    const Json &ts = get_array(o["timesteps"], o.path("timesteps"));
    for (size_t i = 0; i < ts.size(); ++i)
        s.timesteps.push_back(get_int(ts[i], o.path("timesteps") + "[" + std::to_string(i) + "]"));
    o.check([&] {
        const auto &names = contract::kSchedules;
        require(std::find(names.begin(), names.end(), s.name) != names.end(),
                "unknown schedule " + py::repr(s.name) + "; the contract defines " +
                    py::join(names, ", "));
        const auto &t = s.timesteps;
        const int64_t k = s.sampling_steps;
        require(static_cast<int64_t>(t.size()) == k,
                "timesteps has " + std::to_string(t.size()) + " entries but sampling_steps is " +
                    std::to_string(k));
        for (size_t i = 0; i + 1 < t.size(); ++i)
            require(t[i] > t[i + 1], "timesteps must be strictly decreasing, but " +
                                         std::to_string(t[i]) + " is followed by " +
                                         std::to_string(t[i + 1]));
        require(!t.empty() && t.back() == 1,
                "timesteps must end at 1, got " +
                    py::list(t.empty() ? std::vector<int64_t>{} : std::vector<int64_t>{t.back()}));
        require(t[0] <= s.train_steps, "timesteps must not exceed train_steps (" +
                                           std::to_string(s.train_steps) + "), got " +
                                           std::to_string(t[0]));
        const auto expected = contract::sampling_timesteps(s.train_steps, k);
        require(t == expected, "timesteps " + py::list(t) + " differ from the contract's " +
                                   py::list(expected) + " for train_steps=" +
                                   std::to_string(s.train_steps) +
                                   ", sampling_steps=" + std::to_string(k));
    });
    return s;
}

void check_format(const Json &fmt, const Json &version) {
    require(fmt.is_string() && fmt.get<std::string>() == kFormat,
            "format is " + py::repr(fmt) + ", expected " + py::repr(std::string(kFormat)) +
                ": this is not a bld bundle");
    require(is_int(version) && version.get<int64_t>() == kSchemaVersion,
            "schema_version " + py::repr(version) + " is not supported; this runtime reads " +
                std::to_string(kSchemaVersion));
}

Manifest parse_root(const Json &v) {
    if (v.is_object()) {  // the version first: a newer schema may differ anywhere
        const Json none;
        try {
            check_format(v.contains("format") ? v["format"] : none,
                         v.contains("schema_version") ? v["schema_version"] : none);
        } catch (const Invalid &e) {
            fail_at("", e.message);
        }
    }
    Object o(v, "", {"format", "schema_version", "image", "latent", "classes", "schedule",
                     "defaults", "max_batch", "graphs", "producer"});
    Manifest m;
    m.format = get_string(o["format"], "format");
    m.schema_version = get_int(o["schema_version"], "schema_version");
    {
        Object i(o["image"], "image", {"height", "width", "channels"});
        m.image = {get_int(i["height"], i.path("height")), get_int(i["width"], i.path("width")),
                   get_int(i["channels"], i.path("channels"))};
        i.check([&] {
            const std::pair<const char *, int64_t> fields[] = {
                {"height", m.image.height}, {"width", m.image.width}, {"channels", m.image.channels}};
            for (const auto &[name, value] : fields)
                require(value >= 1, std::string(name) + " must be >= 1, got " + std::to_string(value));
        });
    }
    {
        Object l(o["latent"], "latent", {"height", "width", "bits"});
        m.latent = {get_int(l["height"], l.path("height")), get_int(l["width"], l.path("width")),
                    get_int(l["bits"], l.path("bits"))};
        l.check([&] {
            require(m.latent.height >= 1, "height must be >= 1, got " + std::to_string(m.latent.height));
            require(m.latent.width >= 1, "width must be >= 1, got " + std::to_string(m.latent.width));
            require(m.latent.bits >= 1, "bits must be > 0, got " + std::to_string(m.latent.bits));
        });
    }
    {
        Object c(o["classes"], "classes", {"count", "null_class"});
        m.classes = {get_int(c["count"], c.path("count")), get_int(c["null_class"], c.path("null_class"))};
        c.check([&] {
            require(m.classes.count >= 0, "count must be >= 0, got " + std::to_string(m.classes.count));
            require(m.classes.null_class == m.classes.count,
                    "null_class (" + std::to_string(m.classes.null_class) + ") must equal count (" +
                        std::to_string(m.classes.count) +
                        "): the unconditional class is the index after the last class");
        });
    }
    m.schedule = parse_schedule(o["schedule"], "schedule");
    {
        Object d(o["defaults"], "defaults", {"temperature", "guidance"});
        m.defaults = {get_number(d["temperature"], d.path("temperature")),
                      get_number(d["guidance"], d.path("guidance"))};
        d.check([&] {
            require(m.defaults.temperature > 0,
                    "temperature must be > 0, got " + py::repr(m.defaults.temperature));
            require(m.defaults.guidance >= 0,
                    "guidance must be >= 0, got " + py::repr(m.defaults.guidance));
        });
    }
    m.max_batch = get_int(o["max_batch"], "max_batch");
    const Json &graphs = o["graphs"];
    if (!graphs.is_object()) wrong_type(graphs, "graphs", "an object");
    for (const auto &item : graphs.items())
        m.graphs.emplace_back(item.key(), parse_graph(item.value(), "graphs." + item.key()));
    {
        Object p(o["producer"], "producer", {"bld", "torch", "onnx", "onnxruntime"});
        m.producer = {get_string(p["bld"], p.path("bld")), get_string(p["torch"], p.path("torch")),
                      get_string(p["onnx"], p.path("onnx")),
                      get_string(p["onnxruntime"], p.path("onnxruntime"))};
    }
    o.check([&] {
        require(m.max_batch >= 1, "max_batch must be >= 1, got " + std::to_string(m.max_batch));
        std::vector<std::string> known = kRequiredGraphs;
        known.insert(known.end(), kOptionalGraphs.begin(), kOptionalGraphs.end());
        for (const auto &[name, graph] : m.graphs)
            require(std::find(known.begin(), known.end(), name) != known.end(),
                    "graphs: unknown graph " + py::repr(name) + "; known graphs are " +
                        py::join(known, ", "));
        for (const auto &name : kRequiredGraphs)
            require(m.graph(name) != nullptr, "graphs: missing graph " + py::repr(name));
        for (const auto &[name, graph] : m.graphs) {  // manifest._check_graph_interface
            const auto io = graph_io(graph_kind(name), m);
            const std::pair<const char *, std::pair<const std::vector<TensorSpec> *, const std::vector<TensorSpec> *>>
                sides[] = {{"inputs", {&graph.inputs, &io.inputs}}, {"outputs", {&graph.outputs, &io.outputs}}};
            for (const auto &[field, lists] : sides)
                require(*lists.first == *lists.second,
                        "graphs." + name + "." + field + ": bundle format v1 defines " + show_io(*lists.second) +
                            " for this image and latent, got " + show_io(*lists.first));
            const std::string precision = graph_precision(name);
            require(graph.precision == precision, "graphs." + name + ".precision: must be " +
                                                      py::repr(precision) + ", got " + py::repr(graph.precision));
        }
    });
    return m;
}

// Python's codec refuses overlong forms, surrogates and code points above U+10FFFF too.
bool valid_utf8(const std::string &s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        size_t n;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07;
        else return false;
        for (size_t k = 1; k <= n; ++k) {
            if (i + k >= s.size()) return false;
            const auto t = static_cast<unsigned char>(s[i + k]);
            if ((t & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (t & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += n + 1;
    }
    return true;
}

// Where CPython 3.11's json scanner (Modules/_json.c) first refuses `text` and in which words:
// the message of its JSONDecodeError, or of the hooks bld gives it (NaN, a float beyond double),
// at the same line and column. nullopt if Python would parse it. Run only when nlohmann refuses
// the text, to say why as `bld` does.
class PythonJsonScanner {
  public:
    explicit PythonJsonScanner(std::string text) : s_(std::move(text)) {}

    std::optional<std::string> first_error() {
        try {
            if (s_.rfind("\xef\xbb\xbf", 0) == 0) fail("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
            const size_t end = skip_ws(value(skip_ws(0)));
            if (end != s_.size()) fail("Extra data", end);
        } catch (const Refusal &r) {
            return r.message;
        }
        return std::nullopt;
    }

  private:
    struct Refusal {
        std::string message;
    };
    std::string s_;

    bool at(size_t i, char c) const { return i < s_.size() && s_[i] == c; }
    bool digit(size_t i) const { return i < s_.size() && s_[i] >= '0' && s_[i] <= '9'; }
    size_t skip_ws(size_t i) const {
        while (i < s_.size() && (s_[i] == ' ' || s_[i] == '\t' || s_[i] == '\n' || s_[i] == '\r')) ++i;
        return i;
    }
    // JSONDecodeError's "msg: line L column C", in characters (code points), not bytes.
    [[noreturn]] void fail(const std::string &msg, size_t pos) const {
        size_t line = 1, column = 1;
        for (size_t i = 0; i < pos && i < s_.size(); ++i) {
            if (s_[i] == '\n') ++line, column = 1;
            else if ((static_cast<unsigned char>(s_[i]) & 0xc0) != 0x80) ++column;
        }
        throw Refusal{std::string(kManifestName) + ": not valid JSON (" + msg + " at line " + std::to_string(line) +
                      ", column " + std::to_string(column) + ")"};
    }
    [[noreturn]] void refuse(const std::string &message) const {
        throw Refusal{std::string(kManifestName) + ": " + message};
    }

    size_t value(size_t i) {  // scan_once_unicode: the index after the value at i
        if (i < s_.size()) {
            if (s_[i] == '"') return string(i + 1);
            if (s_[i] == '{') return object(i + 1);
            if (s_[i] == '[') return array(i + 1);
            for (const char *word : {"null", "true", "false"})
                if (s_.compare(i, std::strlen(word), word) == 0) return i + std::strlen(word);
            for (const char *constant : {"NaN", "Infinity", "-Infinity"})
                if (s_.compare(i, std::strlen(constant), constant) == 0)
                    refuse(std::string(constant) + " is not a valid JSON number");
        }
        return number(i);
    }

    size_t number(size_t start) {  // _match_number_unicode
        size_t i = start;
        if (at(i, '-')) ++i;
        if (digit(i) && s_[i] != '0') {
            while (digit(i)) ++i;
        } else if (at(i, '0')) {
            ++i;
        } else {
            fail("Expecting value", start);
        }
        bool is_float = false;
        if (i + 1 < s_.size() && s_[i] == '.' && digit(i + 1)) {
            is_float = true;
            i += 2;
            while (digit(i)) ++i;
        }
        if (i + 1 < s_.size() && (s_[i] == 'e' || s_[i] == 'E')) {
            const size_t e = i++;
            if (i + 1 < s_.size() && (s_[i] == '-' || s_[i] == '+')) ++i;
            while (digit(i)) ++i;
            if (digit(i - 1)) is_float = true;
            else i = e;
        }
        const std::string text = s_.substr(start, i - start);
        if (is_float && !std::isfinite(std::strtod(text.c_str(), nullptr)))
            refuse("the number " + text + " is out of range");
        return i;
    }

    size_t string(size_t i) {  // scanstring_unicode; i is past the opening quote
        const size_t begin = i - 1;
        while (true) {
            while (i < s_.size() && s_[i] != '"' && s_[i] != '\\') {
                if (static_cast<unsigned char>(s_[i]) <= 0x1f) fail("Invalid control character at", i);
                ++i;
            }
            if (i >= s_.size()) fail("Unterminated string starting at", begin);
            if (s_[i] == '"') return i + 1;
            if (++i == s_.size()) fail("Unterminated string starting at", begin);
            if (s_[i] != 'u') {
                if (std::strchr("\"\\/bfnrt", s_[i]) == nullptr || s_[i] == '\0') fail("Invalid \\escape", i - 1);
                ++i;
                continue;
            }
            const size_t u = i;
            if (u + 5 >= s_.size()) fail("Invalid \\uXXXX escape", u);
            unsigned code = 0;
            for (size_t k = u + 1; k <= u + 4; ++k) {
                if (!std::isxdigit(static_cast<unsigned char>(s_[k]))) fail("Invalid \\uXXXX escape", u);
                code = code * 16 + unsigned(std::stoi(std::string(1, s_[k]), nullptr, 16));
            }
            i = u + 5;
            // a high surrogate followed by a \u escape: that one's four digits are read now
            if (code >= 0xd800 && code <= 0xdbff && i + 6 < s_.size() && at(i, '\\') && at(i + 1, 'u')) {
                for (size_t k = i + 2; k < i + 6; ++k)
                    if (!std::isxdigit(static_cast<unsigned char>(s_[k]))) fail("Invalid \\uXXXX escape", i + 1);
                unsigned low = unsigned(std::stoul(s_.substr(i + 2, 4), nullptr, 16));
                if (low >= 0xdc00 && low <= 0xdfff) i += 6;
            }
        }
    }

    size_t object(size_t i) {  // _parse_object_unicode; i is past '{'
        std::vector<std::string> keys;  // raw, as written: enough to tell duplicates in bld.json
        i = skip_ws(i);
        if (at(i, '}')) return i + 1;
        while (true) {
            if (!at(i, '"')) fail("Expecting property name enclosed in double quotes", i);
            const size_t key_end = string(i + 1);
            keys.push_back(s_.substr(i + 1, key_end - i - 2));
            i = skip_ws(key_end);
            if (!at(i, ':')) fail("Expecting ':' delimiter", i);
            i = skip_ws(value(skip_ws(i + 1)));
            if (at(i, '}')) break;
            if (!at(i, ',')) fail("Expecting ',' delimiter", i);
            i = skip_ws(i + 1);
        }
        for (const auto &key : keys)  // object_pairs_hook runs when the object closes
            if (std::count(keys.begin(), keys.end(), key) > 1) refuse("duplicate key " + py::repr(key));
        return i + 1;
    }

    size_t array(size_t i) {  // _parse_array_unicode; i is past '['
        i = skip_ws(i);
        if (at(i, ']')) return i + 1;
        while (true) {
            i = skip_ws(value(i));
            if (at(i, ']')) return i + 1;
            if (!at(i, ',')) fail("Expecting ',' delimiter", i);
            i = skip_ws(i + 1);
        }
    }
};

// Python's json module reports these through parse_constant; nlohmann calls them syntax errors.
std::string constant_at(const std::string &text, size_t pos) {
    if (text.compare(pos, 3, "NaN") == 0) return "NaN";
    if (text.compare(pos, 8, "Infinity") == 0)
        return pos > 0 && text[pos - 1] == '-' ? "-Infinity" : "Infinity";
    return "";
}

}  // namespace

const TensorSpec *GraphSpec::input(const std::string &name) const {
    for (const auto &t : inputs)
        if (t.name == name) return &t;
    return nullptr;
}

const TensorSpec *GraphSpec::output(const std::string &name) const {
    for (const auto &t : outputs)
        if (t.name == name) return &t;
    return nullptr;
}

const GraphSpec *Manifest::graph(const std::string &name) const {
    for (const auto &[n, g] : graphs)
        if (n == name) return &g;
    return nullptr;
}

Manifest parse_manifest(const std::string &text) {
    const std::string source = kManifestName;
    if (!valid_utf8(text)) manifest_error(source + ": not valid UTF-8 text");
    if (text.rfind("\xef\xbb\xbf", 0) == 0)  // nlohmann skips a byte order mark; Python's json refuses it
        manifest_error(*PythonJsonScanner(text).first_error());
    std::vector<std::vector<std::string>> keys;  // the keys of each open object
    auto callback = [&](int depth, Json::parse_event_t event, Json &parsed) {
        if (depth > kMaxDepth) manifest_error(source + ": nested too deeply to be a bundle manifest");
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        else if (event == Json::parse_event_t::key) keys.back().push_back(parsed.get<std::string>());
        else if (event == Json::parse_event_t::object_end) {
            const auto &k = keys.back();
            for (const auto &key : k)
                if (std::count(k.begin(), k.end(), key) > 1)
                    manifest_error(source + ": duplicate key " + py::repr(key));
            keys.pop_back();
        }
        return true;
    };
    Json data;
    try {
        data = Json::parse(text, callback);
    } catch (const Json::parse_error &e) {
        // Say why as Python's json does, where it does; if Python would parse what nlohmann
        // refuses (e.g. a lone surrogate escape), nlohmann's reason at its position.
        if (const auto python = PythonJsonScanner(text).first_error()) manifest_error(*python);
        const size_t pos = e.byte > 0 ? e.byte - 1 : 0;
        const std::string constant = constant_at(text, pos);
        if (!constant.empty()) manifest_error(source + ": " + constant + " is not a valid JSON number");
        size_t line = 1, column = 1;
        for (size_t i = 0; i < pos && i < text.size(); ++i) {
            if (text[i] == '\n') ++line, column = 1;
            else ++column;
        }
        std::string reason = e.what();
        const size_t colon = reason.find(": ", reason.find("column"));
        reason = colon == std::string::npos ? reason : reason.substr(colon + 2);
        manifest_error(source + ": not valid JSON (" + reason + " at line " + std::to_string(line) +
                       ", column " + std::to_string(column) + ")");
    } catch (const Json::out_of_range &e) {  // 406: a number beyond double, e.g. 1e999
        std::string what = e.what();
        const size_t a = what.find('\''), b = what.rfind('\'');
        const std::string number = a != std::string::npos && b > a ? what.substr(a + 1, b - a - 1) : "?";
        manifest_error(source + ": the number " + number + " is out of range");
    } catch (const Json::exception &e) {
        manifest_error(source + ": not a valid bundle manifest (" + e.what() + ")");
    }
    return parse_root(data);
}

}  // namespace bld::core
