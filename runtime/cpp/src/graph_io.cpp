#include "graph_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "bundle.hpp"
#include "error.hpp"
#include "pyfmt.hpp"
#include "pyjson.hpp"

namespace bld::core {

namespace {
// The precisions a graph name's suffix says (manifest.PRECISION_SUFFIXES); no suffix is fp32.
const std::pair<std::string, std::string> kSuffixes[] = {{"fp16", "_fp16"}, {"int8", "_int8"}};

bool ends_with(const std::string &name, const std::string &suffix) {
    return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string graph_kind(const std::string &name) {
    for (const auto &[precision, suffix] : kSuffixes)
        if (ends_with(name, suffix)) return name.substr(0, name.size() - suffix.size());
    return name;
}
std::string graph_precision(const std::string &name) {
    for (const auto &[precision, suffix] : kSuffixes)
        if (ends_with(name, suffix)) return precision;
    return "fp32";
}

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


namespace {
namespace fs = std::filesystem;

// Python's bytes.decode("utf-8"): no overlong forms, no surrogates, nothing beyond U+10FFFF.
bool valid_utf8(const std::string &s) {
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xbf;  // the second byte's range
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) len = 3, lo = c == 0xe0 ? 0xa0 : lo, hi = c == 0xed ? 0x9f : hi;
        else if (c >= 0xf0 && c <= 0xf4) len = 4, lo = c == 0xf0 ? 0x90 : lo, hi = c == 0xf4 ? 0x8f : hi;
        else return false;
        if (s.size() - i < len) return false;
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        if (c1 < lo || c1 > hi) return false;
        for (size_t k = 2; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
        i += len;
    }
    return true;
}

struct TooDeep {};

// JSON nested at most kMaxEngineManifestDepth deep: deeper throws TooDeep before the value is
// built (nlohmann's parser itself does not recurse; what walks a value afterwards does).
nlohmann::json parse_bounded(const std::string &text) {
    return nlohmann::json::parse(text, [](int depth, nlohmann::json::parse_event_t, nlohmann::json &) {
        if (depth > kMaxEngineManifestDepth) throw TooDeep{};
        return true;
    });
}

// files._KINDS: what a path that is not a regular file is
const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    return "not a regular file";
}

[[noreturn]] void unreadable(bld_error_kind kind, const fs::path &path, int err) {
    fail(kind, path.string() + ": cannot be read (" + std::strerror(err) + ")");
}

// A plain name in the manifest's folder: not empty, '.' or '..', no separator, no NUL.
bool plain_name(const std::string &name) {
    return !name.empty() && name != "." && name != ".." && name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}
}  // namespace

InputFile::InputFile(const fs::path &path, const std::string &what, bld_error_kind kind, bool follow_symlink)
    : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | (follow_symlink ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        const int err = errno;
        struct stat st {};
        if (!follow_symlink && err == ELOOP && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
            fail(kind, what + " " + path.string() + " is a symbolic link, not a regular file");
        unreadable(kind, path, err);
    }
    struct stat st {};
    int err = ::fstat(fd, &st) != 0 ? errno : 0;
    if (!err && S_ISREG(st.st_mode)) {  // a regular file: ordinary (blocking) reads from here on
        const int flags = ::fcntl(fd, F_GETFL);
        if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) err = errno;
    }
    if (err || !S_ISREG(st.st_mode)) {
        ::close(fd);
        if (err) unreadable(kind, path, err);
        fail(kind, what + " " + path.string() + " is " + file_kind(st.st_mode) + ", not a regular file");
    }
    fd_ = fd;
    size_ = static_cast<uint64_t>(st.st_size);
}

InputFile::~InputFile() {
    if (fd_ >= 0) ::close(fd_);
}

std::vector<char> InputFile::read(uint64_t count) {
    std::vector<char> data(static_cast<size_t>(count));
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::pread(fd_, data.data() + done, data.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) unreadable(BLD_ERROR_IO, path_, errno);
        if (n == 0) break;  // the file shrank since it was opened
        done += static_cast<size_t>(n);
    }
    data.resize(done);
    return data;
}

nlohmann::json read_engine_manifest(const fs::path &path) {
    const std::string what = "engine manifest";
    InputFile file(path, what, BLD_ERROR_MANIFEST);
    if (file.size() > kMaxEngineManifestBytes)  // files.read_input's words
        manifest_error(what + " " + path.string() + " is " + std::to_string(file.size()) + " bytes, more than any " +
                       what + " (at most " + std::to_string(kMaxEngineManifestBytes) + "); refusing to read it");
    const std::vector<char> raw = file.read(file.size());
    const std::string text(raw.begin(), raw.end());
    if (!valid_utf8(text)) manifest_error(path.string() + ": not valid UTF-8 text");
    try {
        return parse_bounded(text);
    } catch (const TooDeep &) {  // one bad entry is one refused entry, never the cache's failure
        manifest_error(path.string() + ": nested too deeply to be an engine manifest");
    } catch (const nlohmann::json::exception &e) {
        std::string reason = e.what();  // "[json.exception.parse_error.101] parse error at ..."
        const size_t tag = reason.find("] ");
        if (reason.rfind("[json.exception.", 0) == 0 && tag != std::string::npos) reason = reason.substr(tag + 2);
        manifest_error(path.string() + ": not valid JSON (" + reason + ")");
    }
}

std::string engine_plan_file_refusal(const std::string &plan_file, const std::string &key_digest) {
    const std::string expected = key_digest.substr(0, 16) + ".plan";
    if (plan_file == expected && plain_name(plan_file)) return "";
    return "plan_file must be " + expected + ", got " + py::repr(plan_file);
}

std::string engine_graph_facts_refusal(const std::string &graph_facts, const std::string &graph) {
    bool ok = false;
    try {
        const nlohmann::json facts = parse_bounded(graph_facts);
        ok = facts.is_object() && facts.contains("name") && facts["name"].is_string() &&
             facts["name"].get<std::string>() == graph;
    } catch (const TooDeep &) {
    } catch (const nlohmann::json::exception &) {
    }
    return ok ? "" : "graph_facts must be the JSON object graph " + py::repr(graph) + " records";
}

std::vector<char> read_engine_plan(const fs::path &manifest, const std::string &plan_file, uint64_t plan_size,
                                   const std::string &plan_sha256) {
    const bld_error_kind kind = BLD_ERROR_BACKEND_UNAVAILABLE;
    if (!plain_name(plan_file))  // the manifest's rule (engine_plan_file_refusal) already says so
        fail(kind, manifest.string() + ": plan_file " + py::repr(plan_file) +
                       " is not a plain file name in the manifest's folder");
    const fs::path path = manifest.parent_path() / plan_file;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) fail(kind, path.string() + " is missing (its manifest is " + manifest.string() + ")");
        unreadable(kind, path, errno);
    }
    InputFile file(path, "engine plan", kind, /*follow_symlink=*/false);
    if (file.size() != plan_size)  // before reading: a plan may be replaced by gigabytes
        fail(kind, path.string() + " is " + std::to_string(file.size()) + " bytes, its manifest says " +
                       std::to_string(plan_size) + ": the plan was altered or is incomplete");
    std::vector<char> data = file.read(plan_size);
    if (data.size() != plan_size || sha256_hex(data.data(), data.size()) != plan_sha256)
        fail(kind, path.string() + " does not match its manifest (sha256 or size differs): the plan was altered or "
                                   "is incomplete");
    return data;
}

}  // namespace bld::core
