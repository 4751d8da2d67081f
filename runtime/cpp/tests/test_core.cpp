// The core's host-side pieces: Python-style formatting, packed bits and .bldz files, sampling
// timesteps, images. Whole-bundle behaviour (manifests, the loop, errors) is tested against the
// Python runtime in tests/test_cpp_runtime.py.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include "bits.hpp"
#include "contract.hpp"
#include "error.hpp"
#include "graph_io.hpp"
#include "images.hpp"
#include "pyjson.hpp"

using namespace bld::core;

TEST_CASE("repr and format as Python prints them") {
    CHECK(py::repr(1.0) == "1.0");
    CHECK(py::repr(-0.5) == "-0.5");
    CHECK(py::repr(1e-5) == "1e-05");
    CHECK(py::repr(0.0001) == "0.0001");
    CHECK(py::repr(1e16) == "1e+16");
    CHECK(py::repr(123456789012345678.0) == "1.2345678901234568e+17");
    CHECK(py::repr(1e15) == "1000000000000000.0");
    CHECK(py::repr(0.1) == "0.1");
    CHECK(py::repr(std::string("it's")) == "\"it's\"");
    CHECK(py::repr(std::string("a\\b\n")) == "'a\\\\b\\n'");
    CHECK(py::repr(py::Json::parse(R"({"a": [1, null, true, 2.5, "x"]})")) == "{'a': [1, None, True, 2.5, 'x']}");
    CHECK(py::format_g(std::nan("")) == "nan");
    CHECK(py::format_g(-std::numeric_limits<double>::infinity()) == "-inf");
    CHECK(py::format_g(1e-7) == "1e-07");
    CHECK(py::format_g(-1.5) == "-1.5");
    CHECK(py::path("a//b/./c/") == "a/b/c");
    CHECK(py::path("./x") == "x");
    CHECK(py::path("/") == "/");
    CHECK(py::tuple(std::vector<size_t>{5}) == "(5,)");
    CHECK(py::tuple(std::vector<size_t>{1, 64, 7}) == "(1, 64, 7)");
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
