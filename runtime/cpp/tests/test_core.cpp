// The core's host-side pieces: Python-style formatting, packed bits and .bldz files, sampling
// timesteps, images. Whole-bundle behaviour (manifests, the loop, errors) is held to the
// conformance cases both runtimes share (tests/conformance/) and compared with the Python runtime
// in tests/test_cpp_runtime.py.
#include <catch2/catch.hpp>
#include <algorithm>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backend.hpp"
#include "bits.hpp"
#include "bld/bld.h"
#include "contract.hpp"
#include "error.hpp"
#include "graph_io.hpp"
#include "images.hpp"
#include "pyjson.hpp"

using namespace bld::core;

// repr() of floats and strings, format(x, "g") and tuples reach the messages, and the conformance
// cases hold them there (tests/conformance/: "guidance -1e16 (repr: scientific)", "a string with
// control characters", "tiny negative temperature", "mask shape", ...). What no message shows
// yet is checked here.
TEST_CASE("repr and paths as Python prints them, beyond the conformance cases") {
    CHECK(py::repr(1.0) == "1.0");
    CHECK(py::repr(py::Json::parse(R"({"a": [1, null, true, 2.5, "x"]})")) == "{'a': [1, None, True, 2.5, 'x']}");
    CHECK(py::path("a//b/./c/") == "a/b/c");
    CHECK(py::path("./x") == "x");
    CHECK(py::path("/") == "/");
    CHECK(py::path("//x/../y") == "//x/../y");
}

TEST_CASE("sampling timesteps (SAMPLING_CONTRACT.md, section 3)") {
    CHECK(contract::sampling_timesteps(32, 16) ==
          std::vector<int64_t>{32, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1});
    CHECK(contract::sampling_timesteps(4, 4) == std::vector<int64_t>{4, 3, 2, 1});
    CHECK_THROWS_WITH(contract::sampling_timesteps(1, 1), "the number of training steps T must be at least 2, got 1");
    CHECK_THROWS_WITH(contract::sampling_timesteps(8, 9), "sampling steps must be between 2 and T=8, got 9");
}

TEST_CASE("packbits with little bit order, padding and .bldz files") {
    const std::vector<uint8_t> bits = {1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0,   // image 0: 11 bits
                                       0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1};  // image 1
    std::vector<uint8_t> packed(4);
    pack_bits(bits.data(), 2, 11, packed.data());
    CHECK(packed == std::vector<uint8_t>{0x81, 0x03, 0x02, 0x04});  // numpy.packbits(..., "little")
    std::vector<uint8_t> back(22);
    unpack_bits(packed.data(), 2, 11, back.data());
    CHECK(back == bits);
    packed[1] |= 0x80;  // a padding bit
    CHECK_THROWS_WITH(unpack_bits(packed.data(), 2, 11, back.data()),
                      "packed bits are corrupt: the padding bits of the last byte are not zero");
    const std::vector<uint8_t> two = {2};
    CHECK_THROWS_WITH(pack_bits(two.data(), 1, 1, packed.data()), "bits must be 0 or 1, found the value 2");

    const std::string path = (std::filesystem::temp_directory_path() / "bld_test_core.bldz").string();
    std::vector<uint8_t> latent(3 * 2 * 2 * 3);
    for (size_t i = 0; i < latent.size(); ++i) latent[i] = (i * 7 % 5) & 1;
    save_bits(path, latent.data(), 3, 2, 2, 3);
    size_t batch = 0;
    CHECK(load_bits(path, 2, 2, 3, batch) == latent);
    CHECK(batch == 3);
    CHECK_THROWS_WITH(load_bits(path, 2, 2, 4, batch), path + " holds 2x2x3 latents but the bundle expects 2x2x4");
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(25);
        f.put(static_cast<char>(0x55));
    }
    CHECK_THROWS_WITH(load_bits(path, 2, 2, 3, batch), Catch::Contains("is corrupt: the payload's crc32 is"));
    std::filesystem::resize_file(path, 10);
    CHECK_THROWS_WITH(load_bits(path, 2, 2, 3, batch), path + " is truncated: its header has 10 of 25 bytes");
    std::filesystem::remove(path);
}

TEST_CASE("image conversion is nearbyint's at every tie, NaN and infinity, into NHWC") {
    std::vector<float> x;
    for (int k = -2; k < 258; ++k) {  // where round-half-even decides, and a float either side
        const auto tie = static_cast<float>((k + 0.5) / 127.5 - 1.0);
        x.insert(x.end(), {tie, std::nextafter(tie, 2.0f), std::nextafter(tie, -2.0f)});
    }
    x.insert(x.end(), {NAN, INFINITY, -INFINITY, -0.0f, 3e38f, -3e38f});
    const size_t hw = x.size() / 3;  // three planes
    std::vector<uint8_t> out(3 * hw);
    from_float_nchw(x.data(), 1, {1, hw, 3}, out.data());
    size_t wrong = 0;
    for (size_t c = 0; c < 3; ++c)
        for (size_t p = 0; p < hw; ++p) {
            const float r = std::nearbyint((x[c * hw + p] + 1.0f) * 127.5f);
            const auto want = std::isnan(r) ? uint8_t{0} : static_cast<uint8_t>(std::clamp(r, 0.0f, 255.0f));
            wrong += out[p * 3 + c] != want;
        }
    CHECK(wrong == 0);
}

TEST_CASE("image conversion rounds half to even and clips; grids pad with black") {
    const float x[] = {-1.0f, 1.0f, -2.0f, 3.0f, 0.0f, 0.5f};  // 0.0 -> 127.5, a tie
    uint8_t out[6];
    from_float_nchw(x, 1, {1, 6, 1}, out);
    CHECK(std::vector<uint8_t>(out, out + 6) == std::vector<uint8_t>{0, 255, 0, 255, 128, 191});
    const uint8_t img[2 * 2 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};  // two 2x2 gray images
    ImageShape g{};
    const auto grid = make_grid(img, 2, {2, 2, 1}, 0, g);
    CHECK((g.height == 6 && g.width == 10));
    CHECK(grid[2 * 10 + 2] == 1);
    CHECK(grid[3 * 10 + 7] == 8);
    CHECK(grid[0] == 0);
}

TEST_CASE("TensorRT profile shapes of a graph's inputs (tensorrt-ep's trt_profile_*_shapes)") {
    GraphSpec g;
    g.inputs = {{"bits", "float32", {std::string("batch"), int64_t(64), int64_t(8)}},
                {"step", "int64", {std::string("batch")}}};
    CHECK(profile_shapes(g, 1) == "bits:1x64x8,step:1");
    CHECK(profile_shapes(g, 16) == "bits:16x64x8,step:16");
}

TEST_CASE("TensorRT versions match when the shorter is a prefix of the longer (engine_cache.versions_match)") {
    CHECK(trt_versions_match("10.3.0", "10.3.0.26"));  // tensorrt.__version__ vs getInferLibVersion + build
    CHECK(trt_versions_match("10.3.0.26", "10.3.0"));
    CHECK(trt_versions_match("10.3.0.26", "10.3.0.26"));
    CHECK_FALSE(trt_versions_match("10.3.0.26", "10.3.0.30"));
    CHECK_FALSE(trt_versions_match("10.3.0", "10.30.0"));  // parts, not characters
    CHECK_FALSE(trt_versions_match("10.16.0", "10.1.6"));
    CHECK(trt_version_refusal("10.3.0", false, "10.3.0.26").empty());
    CHECK(trt_version_refusal("10.3.0", false, "10.7.0.23") ==
          "it was built by tensorrt 10.3.0, this runtime is 10.7.0.23 (not built version-compatible)");
    // Version-compatible plans: a newer runtime of the same major.
    CHECK(trt_version_refusal("10.3.0", true, "10.7.0.23").empty());
    CHECK(trt_version_refusal("10.3.0.26", true, "10.3.0").empty());
    CHECK_FALSE(trt_version_refusal("10.3.0", true, "10.2.0.1").empty());
    CHECK_FALSE(trt_version_refusal("10.3.0", true, "11.0.0.1").empty());
    CHECK_FALSE(trt_version_refusal("10.x", true, "10.7.0").empty());
}

TEST_CASE("TensorRT engine candidates: exact version first, then the widest batch range, then the newest") {
    const std::string runtime = "10.3.0.26";
    std::vector<EngineCandidate> c = {{"10.2.0", 64, 9, "a.json"},   // version-compatible, widest, newest
                                      {"10.3.0", 8, 1, "b.json"},    // exact (3 parts), narrow, old
                                      {"10.3.0.26", 16, 2, "c.json"},  // exact, wider
                                      {"10.3.0.26", 16, 3, "d.json"}};  // the same, newer
    auto sorted = [&](bool any_batch) {
        auto v = c;
        std::sort(v.begin(), v.end(), [&](const EngineCandidate &a, const EngineCandidate &b) {
            return engine_candidate_before(a, b, runtime, any_batch);
        });
        std::string order;
        for (const auto &e : v) order += e.manifest.substr(0, 1);
        return order;
    };
    CHECK(sorted(true) == "dcba");   // any batch: widest range among the exact versions
    CHECK(sorted(false) == "dcba");  // one batch: the newest exact version
    c[1].mtime = 5;
    CHECK(sorted(true) == "dcba");
    CHECK(sorted(false) == "bdca");
}

TEST_CASE("an engine's I/O names are checked against the bundle's graph") {
    GraphSpec g;
    g.inputs = {{"bits", "float32", {}}, {"step", "int64", {}}};
    g.outputs = {{"probs", "float32", {}}};
    CHECK(engine_io_mismatch({"step", "bits"}, {"probs"}, g, "step").empty());
    CHECK(engine_io_mismatch({"bits", "t"}, {"probs"}, g, "step") ==
          "it has inputs ['bits', 't'] and outputs ['probs']; the bundle's step has ['bits', 'step'] and ['probs']");
}

TEST_CASE("running out of memory is said in the Python runtime's words (errors.describe)") {
    // a grid of 2^62 pixels: no address space holds it, whatever the overcommit policy
    const uint8_t image[1] = {0};
    bld_buffer *grid = nullptr;
    size_t height = 0, width = 0;
    bld_status *status = bld_make_grid(image, 1, size_t(1) << 31, size_t(1) << 31, 1, 0, &grid, &height, &width);
    REQUIRE(status != nullptr);
    CHECK(bld_status_kind(status) == BLD_ERROR_INTERNAL);
    CHECK(std::string(bld_status_message(status)) == "out of memory; ask for fewer images or a smaller batch");
    bld_status_free(status);
}

// --- The engine cache's files (graph_io.hpp), read as bld_runtime/engine_cache.py reads them ---

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <future>

#include "bundle.hpp"

namespace {
namespace fs = std::filesystem;

struct TempDir {  // a fresh folder, removed with its owner
    fs::path dir;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "bld-engine-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

void write_text(const fs::path &path, const std::string &text) {
    std::ofstream(path, std::ios::binary) << text;
}

// What `f` was refused with ("" when it was not), run with a deadline: a reader that blocks on a
// FIFO is unblocked by opening its other end, and the case fails instead of hanging.
std::string refusal(const std::function<void()> &f, const fs::path &fifo = {}) {
    auto run = std::async(std::launch::async, [&]() -> std::string {
        try {
            f();
        } catch (const std::exception &e) {
            return e.what();
        }
        return "";
    });
    if (!fifo.empty() && run.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
        const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (fd >= 0) ::close(fd);
        run.wait();
        FAIL("blocked on the FIFO " << fifo);
    }
    return run.get();
}

const std::string kDigest = "0123456789abcdef" + std::string(48, '0');
}  // namespace

TEST_CASE("an engine manifest is read only if it is a regular file of a manifest's size") {
    TempDir t;
    const fs::path good = t.dir / "good.json";
    write_text(good, R"({"format": "bld-engine", "graph_facts": "{\"name\": \"step\"}"})");
    CHECK(read_engine_manifest(good).at("format") == "bld-engine");

    const fs::path fifo = t.dir / "fifo.json";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(refusal([&] { read_engine_manifest(fifo); }, fifo) ==
          "engine manifest " + fifo.string() + " is a FIFO (named pipe), not a regular file");
    CHECK(refusal([&] { read_engine_manifest(t.dir); }) ==
          "engine manifest " + t.dir.string() + " is a folder, not a regular file");
    CHECK(refusal([&] { read_engine_manifest(t.dir / "none.json"); }) ==
          (t.dir / "none.json").string() + ": cannot be read (No such file or directory)");

    const fs::path big = t.dir / "big.json";
    write_text(big, std::string(kMaxEngineManifestBytes + 1, ' '));
    CHECK(refusal([&] { read_engine_manifest(big); }) ==
          "engine manifest " + big.string() +
              " is 1048577 bytes, more than any engine manifest (at most 1048576); refusing to read it");
    fs::resize_file(big, uint64_t(4) << 30);  // 4 GiB of holes: refused by its size, never read
    CHECK(refusal([&] { read_engine_manifest(big); }) ==
          "engine manifest " + big.string() +
              " is 4294967296 bytes, more than any engine manifest (at most 1048576); refusing to read it");

    const fs::path latin1 = t.dir / "latin1.json";
    write_text(latin1, "{\"a\": \"\xe9\"}");
    CHECK(refusal([&] { read_engine_manifest(latin1); }) == latin1.string() + ": not valid UTF-8 text");
    const fs::path broken = t.dir / "broken.json";
    write_text(broken, "{\"a\": ");
    CHECK(refusal([&] { read_engine_manifest(broken); }).rfind(broken.string() + ": not valid JSON (", 0) == 0);
}

TEST_CASE("an engine manifest nested absurdly deep is one refusal, never a crash") {
    TempDir t;
    const fs::path deep = t.dir / "deep.json";
    write_text(deep, std::string(100000, '[') + std::string(100000, ']'));
    CHECK(refusal([&] { read_engine_manifest(deep); }) == deep.string() + ": nested too deeply to be an engine manifest");
    write_text(deep, "{\"key\": " + std::string(100000, '['));  // deep and unfinished: the depth is met first
    CHECK(refusal([&] { read_engine_manifest(deep); }) == deep.string() + ": nested too deeply to be an engine manifest");
    const fs::path fine = t.dir / "fine.json";  // as deep as Python's json parses is read
    write_text(fine, std::string(kMaxEngineManifestDepth, '[') + std::string(kMaxEngineManifestDepth, ']'));
    CHECK(refusal([&] { read_engine_manifest(fine); }).empty());

    // graph_facts is JSON in a string: deep there is one refusal too (EngineManifest's words)
    const std::string facts_refused = "graph_facts must be the JSON object graph 'step' records";
    CHECK(engine_graph_facts_refusal(R"({"name": "step", "opset": 17})", "step").empty());
    CHECK(engine_graph_facts_refusal(std::string(100000, '[') + std::string(100000, ']'), "step") == facts_refused);
    CHECK(engine_graph_facts_refusal(R"({"name": "decoder"})", "step") == facts_refused);
    CHECK(engine_graph_facts_refusal(R"(["step"])", "step") == facts_refused);
    CHECK(engine_graph_facts_refusal("not json", "step") == facts_refused);
}

TEST_CASE("an engine manifest's plan_file is <digest16>.plan beside it, a regular file, not a symlink") {
    CHECK(engine_plan_file_refusal("0123456789abcdef.plan", kDigest).empty());
    CHECK(engine_plan_file_refusal("../x", kDigest) == "plan_file must be 0123456789abcdef.plan, got '../x'");
    CHECK(engine_plan_file_refusal("/etc/passwd", kDigest) ==
          "plan_file must be 0123456789abcdef.plan, got '/etc/passwd'");
    CHECK(engine_plan_file_refusal("../step/0123456789abcdef.plan", kDigest) ==
          "plan_file must be 0123456789abcdef.plan, got '../step/0123456789abcdef.plan'");
    CHECK(engine_plan_file_refusal("fedcba9876543210.plan", kDigest) ==
          "plan_file must be 0123456789abcdef.plan, got 'fedcba9876543210.plan'");

    TempDir t;
    const fs::path manifest = t.dir / "0123456789abcdef.json";
    const std::string bytes = "ftrt" + std::string(20, '\0') + std::string("\x0a\x03\x00\x1a", 4) + "plan";
    const std::string sha = sha256_hex(bytes.data(), bytes.size());
    const fs::path plan = t.dir / "0123456789abcdef.plan";
    write_text(plan, bytes);
    CHECK(read_engine_plan(manifest, plan.filename().string(), bytes.size(), sha) ==
          std::vector<char>(bytes.begin(), bytes.end()));
    // read_engine_plan holds to a plain name by itself too, whatever the caller checked
    for (const std::string name : {"../x", "/etc/passwd", "..", "", "sub/0123456789abcdef.plan"})
        CHECK(refusal([&] { read_engine_plan(manifest, name, 4, sha); }) ==
              manifest.string() + ": plan_file " + py::repr(name) + " is not a plain file name in the manifest's folder");

    const fs::path elsewhere = t.dir / "elsewhere.plan", link = t.dir / "linked.plan";
    write_text(elsewhere, bytes);
    fs::create_symlink(elsewhere, link);
    CHECK(refusal([&] { read_engine_plan(manifest, "linked.plan", bytes.size(), sha); }) ==
          "engine plan " + link.string() + " is a symbolic link, not a regular file");
    fs::create_symlink(t.dir / "gone.plan", t.dir / "dangling.plan");
    CHECK(refusal([&] { read_engine_plan(manifest, "dangling.plan", bytes.size(), sha); }) ==
          "engine plan " + (t.dir / "dangling.plan").string() + " is a symbolic link, not a regular file");
    CHECK(refusal([&] { read_engine_plan(manifest, "gone.plan", bytes.size(), sha); }) ==
          (t.dir / "gone.plan").string() + " is missing (its manifest is " + manifest.string() + ")");
    const fs::path fifo = t.dir / "fifo.plan";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(refusal([&] { read_engine_plan(manifest, "fifo.plan", bytes.size(), sha); }, fifo) ==
          "engine plan " + fifo.string() + " is a FIFO (named pipe), not a regular file");
}

TEST_CASE("an engine plan is sized against its manifest before it is read, then hashed") {
    TempDir t;
    const fs::path manifest = t.dir / "0123456789abcdef.json", plan = t.dir / "0123456789abcdef.plan";
    const std::string bytes(300, 'p');
    const std::string sha = sha256_hex(bytes.data(), bytes.size());
    write_text(plan, bytes);
    CHECK(refusal([&] { read_engine_plan(manifest, plan.filename().string(), 299, sha); }) ==
          plan.string() + " is 300 bytes, its manifest says 299: the plan was altered or is incomplete");
    fs::resize_file(plan, uint64_t(6) << 30);  // 6 GiB of holes in place of the plan: never read
    CHECK(refusal([&] { read_engine_plan(manifest, plan.filename().string(), 300, sha); }) ==
          plan.string() + " is 6442450944 bytes, its manifest says 300: the plan was altered or is incomplete");
    std::string altered = bytes;
    altered[7] = 'q';
    write_text(plan, altered);
    CHECK(refusal([&] { read_engine_plan(manifest, plan.filename().string(), 300, sha); }) ==
          plan.string() + " does not match its manifest (sha256 or size differs): the plan was altered or is incomplete");
}

// The int8 refusal's sentences are the Python runtime's (backends/int8.py), as tests/test_int8.py
// holds them there; this CPU's own answer reaches the conformance of `--precision int8` through
// tests/test_cpp_runtime.py.
TEST_CASE("int8 is refused on CPUs without int8 dot-product instructions, in Python's words") {
    using Flags = std::optional<std::set<std::string>>;
    CHECK_FALSE(int8_refusal("x86_64", Flags{{"avx2", "avx512f", "avx512_vnni"}}));
    CHECK_FALSE(int8_refusal("x86_64", Flags{{"avx2", "avx_vnni"}}));
    CHECK_FALSE(int8_refusal("x86_64", Flags{{"avx512f", "amx_int8"}}));
    CHECK_FALSE(int8_refusal("aarch64", Flags{{"fp", "asimd", "asimddp"}}));
    CHECK(int8_refusal("x86_64", Flags{{"sse4_2", "avx2", "avx512f", "avx512_bf16"}}).value() ==
          "precision 'int8' needs a CPU with AVX512_VNNI, AVX_VNNI or AMX-INT8, which this one lacks (without them "
          "onnxruntime's int8 kernels may saturate and give other bits); use --precision fp32");
    CHECK(int8_refusal("aarch64", Flags{{"fp", "asimd"}}).value() ==
          "precision 'int8' needs a CPU with the dot-product instructions (asimddp or i8mm), which this one lacks "
          "(without them onnxruntime's int8 kernels may saturate and give other bits); use --precision fp32");
    CHECK(int8_refusal("x86_64", std::nullopt).value() ==
          "precision 'int8' needs a CPU with AVX512_VNNI, AVX_VNNI or AMX-INT8, and this system does not say "
          "whether it has them (no /proc/cpuinfo); use --precision fp32");
    CHECK(int8_refusal("riscv64", Flags{std::set<std::string>{}}).value() ==
          "precision 'int8' runs on x86-64 CPUs with VNNI or AMX-INT8 and ARM64 CPUs with dot-product "
          "instructions; this CPU is riscv64; use --precision fp32");
}
