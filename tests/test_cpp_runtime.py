"""The C++ runtime (runtime/cpp) against the Python runtime, on the tiny bundle.

The same requests go through both: every step's input bits and probabilities (trace), the final
bits, the packed bits file and the PNG pixels must be identical. Bad input is the conformance
cases' (tests/conformance/, which tests/test_conformance.py holds the Python runtime to): each
bad manifest, request and command line must be refused with the case's kind and sentence, by the
release build and by the AddressSanitizer + UndefinedBehaviorSanitizer build, without a crash,
and each generation must give the case's bits. The `cpp_build` fixture builds both (`make
cpp`); conftest.py runs these tests after all the others.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import conformance
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bld_runtime.cli import cli
from bld_runtime.errors import BldError
from bld_runtime.pipeline import Pipeline

pytestmark = pytest.mark.cpp

REPO = Path(__file__).resolve().parents[1]
CPP = REPO / "runtime" / "cpp"
U64_MAX = 2**64 - 1
SEEDS = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 1000, 2**31, 2**32, 2**63, U64_MAX - 1, U64_MAX]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def run(exe: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    return subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        **kwargs,
    )


def probe(build: Path, bundle: Path, spec: dict, out: Path) -> Path:
    """Run requests through the C++ API (tests/probe.cpp); its outputs are in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    done = run(build / "tests" / "bld-probe", bundle, out / "spec.json", out)
    assert done.returncode == 0, done.stderr
    assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
    return out


def requests_grid(pipe) -> list[dict]:
    """16 seeds (0 and 2^64-1 among them) over 4 classes, guidance {0, 1.5} x temperature
    {1, 0.8}, plus inpainting (one mask for all, one per image) and mixed per-image guidance."""
    classes = [i % 4 for i in range(len(SEEDS))]
    grid = [
        {
            "name": f"g{g}_t{t}",
            "seeds": SEEDS,
            "classes": classes,
            "guidance": [g],
            "temperature": [t],
            "trace": True,
        }
        for g in (0.0, 1.5)
        for t in (1.0, 0.8)
    ]
    L, C = pipe.latent_shape
    rng = np.random.default_rng(0)
    known = rng.integers(0, 2, (len(SEEDS), L, C), dtype=np.uint8)
    one_mask = np.zeros((1, L, C), np.uint8)
    one_mask[:, : L // 2] = 1
    per_image = rng.integers(0, 2, (len(SEEDS), L, C), dtype=np.uint8)
    grid += [
        {
            "name": "mask_one",
            "seeds": SEEDS,
            "classes": classes,
            "guidance": [1.5],
            "temperature": [0.8],
            "trace": True,
            "mask": one_mask.ravel().tolist(),
            "known_bits": known[:1].ravel().tolist(),
            "mask_shape": [1, L, C],
        },
        {
            "name": "mask_each",
            "seeds": SEEDS,
            "classes": classes,
            "guidance": [0.0],
            "trace": True,
            "mask": per_image.ravel().tolist(),
            "known_bits": known.ravel().tolist(),
            "mask_shape": [len(SEEDS), L, C],
        },
        {
            "name": "mixed",
            "seeds": SEEDS,
            "classes": [pipe.null_class] + classes[1:],
            "guidance": [0.0, 1.5] * 8,
            "temperature": [1.0, 0.8] * 8,
            "trace": True,
        },
    ]
    return grid


def python_generate(pipe, request: dict):
    """The request through the Python runtime, read as the C++ API reads it (one value in a
    list is for all images; numbers may be given as strings, for NaN)."""
    shape = request.get("mask_shape")
    mask = np.array(request["mask"], np.uint8).reshape(shape) if "mask" in request else None
    known = (
        np.array(request["known_bits"], np.uint8).reshape(shape)
        if "known_bits" in request
        else None
    )

    def values(key):
        v = [float(x) for x in request.get(key, [])]
        return None if not v else v[0] if len(v) == 1 else v

    classes = request.get("classes") or None
    return pipe.generate(
        seeds=np.array(request["seeds"], np.uint64),
        classes=classes[0] if classes and len(classes) == 1 else classes,
        guidance=values("guidance"),
        temperature=values("temperature"),
        mask=mask,
        known_bits=known,
        trace=request.get("trace", False),
        chunk=request.get("chunk", True),
    )


# --- parity ---------------------------------------------------------------------------------


def test_every_step_bits_and_pixels_equal_python(cpp_build, tiny_bundle, pipe, tmp_path):
    grid = requests_grid(pipe)
    out = probe(cpp_build["release"], tiny_bundle, {"requests": grid}, tmp_path)
    for request in grid:
        name = request["name"]
        assert not (out / f"{name}.error").exists(), (out / f"{name}.error").read_text()
        py = python_generate(pipe, request)
        states = np.load(out / f"{name}.states.npy")
        np.testing.assert_array_equal(states, py.trace.states, err_msg=f"{name}: step inputs")
        np.testing.assert_array_equal(
            np.load(out / f"{name}.probs.npy"),
            py.trace.probs,
            err_msg=f"{name}: step probabilities",
        )
        np.testing.assert_array_equal(
            np.load(out / f"{name}.bits.npy"), py.bits, err_msg=f"{name}: final bits"
        )
        np.testing.assert_array_equal(
            np.load(out / f"{name}.images.npy"), py.images, err_msg=f"{name}: pixels"
        )
        if "mask" in request:  # the known bits stay from the initial state on
            keep = np.broadcast_to(
                np.array(request["mask"]).reshape(request["mask_shape"]), py.bits.shape
            ).astype(bool)
            known = np.broadcast_to(
                np.array(request["known_bits"]).reshape(request["mask_shape"]), py.bits.shape
            )
            assert (states[:, keep] == known[keep]).all()


def test_fp16_graphs_and_chunks_equal_python(cpp_build, tiny_bundle, pipe, tmp_path):
    seeds = list(range(70))  # max_batch is 64: two chunks
    request = {
        "name": "chunked",
        "seeds": seeds,
        "classes": [i % 10 for i in seeds],
        "guidance": [1.5],
    }
    out = probe(cpp_build["release"], tiny_bundle, {"requests": [request]}, tmp_path / "fp32")
    np.testing.assert_array_equal(
        np.load(out / "chunked.bits.npy"), python_generate(pipe, request).bits
    )
    half = Pipeline.load(tiny_bundle, precision="fp16")
    out = probe(
        cpp_build["release"],
        tiny_bundle,
        {"options": {"precision": "fp16"}, "requests": [request]},
        tmp_path / "fp16",
    )
    np.testing.assert_array_equal(
        np.load(out / "chunked.bits.npy"), python_generate(half, request).bits
    )


def test_int8_graphs_equal_python(cpp_build, tiny_int8_bundle, tmp_path):
    """--precision int8: the same onnxruntime runs the same QDQ graphs, so every step's
    probabilities, the bits and the pixels are the Python runtime's int8 ones, exactly; the
    other backends refuse int8 in Python's sentence."""
    from bld_runtime.errors import BackendUnavailableError

    int8 = Pipeline.load(tiny_int8_bundle, precision="int8")
    grid = [r for r in requests_grid(int8) if r["name"] in ("g1.5_t0.8", "mask_one", "mixed")]
    spec = {"options": {"precision": "int8"}, "requests": grid}
    out = probe(cpp_build["release"], tiny_int8_bundle, spec, tmp_path / "cpu")
    for request in grid:
        name = request["name"]
        assert not (out / f"{name}.error").exists(), (out / f"{name}.error").read_text()
        py = python_generate(int8, request)
        np.testing.assert_array_equal(np.load(out / f"{name}.probs.npy"), py.trace.probs)
        np.testing.assert_array_equal(np.load(out / f"{name}.bits.npy"), py.bits)
        np.testing.assert_array_equal(np.load(out / f"{name}.images.npy"), py.images)
    options = {"backend": "cuda", "precision": "int8"}
    out = probe(cpp_build["release"], tiny_int8_bundle, {"options": options}, tmp_path / "cuda")
    with pytest.raises(BackendUnavailableError) as python:
        Pipeline.load(tiny_int8_bundle, backend="cuda", precision="int8")
    kind, message = (out / "load.error").read_text().split(" ", 1)
    assert int(kind) == conformance.KINDS["BackendUnavailableError"]
    assert message == str(python.value)


def test_encode_and_decode_equal_python(cpp_build, tiny_bundle, pipe, tmp_path):
    from bld_runtime import philox

    images = pipe.generate(seeds=[7, 8, 9], classes=[1, 2, 3]).images
    bits = np.random.default_rng(1).integers(0, 2, (3,) + pipe.latent_shape, dtype=np.uint8)
    seeds = [0, 5, U64_MAX]
    flat = images.ravel().tolist()
    spec = {
        "requests": [
            {"name": "enc", "op": "encode", "images": flat, "count": 3},
            {"name": "seeded", "op": "encode_seeded", "images": flat, "count": 3, "seeds": seeds},
            {"name": "dec", "op": "decode", "bits": bits.ravel().tolist(), "count": 3},
        ]
    }
    out = probe(cpp_build["release"], tiny_bundle, spec, tmp_path)
    probs = pipe.encode_probs(images)
    np.testing.assert_array_equal(np.load(out / "enc.probs.npy"), probs)
    np.testing.assert_array_equal(np.load(out / "enc.bits.npy"), (probs > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(
        np.load(out / "seeded.bits.npy"), philox.bernoulli(probs, np.array(seeds, np.uint64), 0)
    )
    np.testing.assert_array_equal(np.load(out / "dec.images.npy"), pipe.decode(bits))


def test_sample_command_writes_the_same_files_as_bld_sample(cpp_build, tiny_bundle, tmp_path):
    # base seed 2^64 - 8: the 16 seeds wrap from 2^64 - 1 to 0
    args = [
        "--seed",
        str(2**64 - 8),
        "-n",
        "16",
        "--class",
        "all",
        "--guidance",
        "1.5",
        "--temperature",
        "0.8",
    ]
    py_out, cpp_out = tmp_path / "py", tmp_path / "cpp"
    result = CliRunner().invoke(cli, ["sample", str(tiny_bundle), *args, "-o", str(py_out)])
    assert result.exit_code == 0, result.output
    done = run(cpp_build["release"] / "bld-cpp", "sample", tiny_bundle, *args, "-o", cpp_out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote 16 images, bits.bldz and grid.png to {cpp_out}\n"
    assert sorted(p.name for p in cpp_out.iterdir()) == sorted(p.name for p in py_out.iterdir())
    record = json.loads((cpp_out / "samples.json").read_text())
    assert record == json.loads((py_out / "samples.json").read_text())
    assert record["status"] == "complete" and record["written"] == 16
    assert (cpp_out / "bits.bldz").read_bytes() == (py_out / "bits.bldz").read_bytes()
    for png in py_out.glob("*.png"):
        with Image.open(png) as a, Image.open(cpp_out / png.name) as b:
            assert (a.mode, a.size) == (b.mode, b.size)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=png.name)


def test_two_threads_on_one_pipeline_give_the_sequential_bits(
    cpp_build, tiny_bundle, pipe, tmp_path
):
    grid = [dict(r, trace=False) for r in requests_grid(pipe)]
    out = probe(cpp_build["release"], tiny_bundle, {"threads": 2, "requests": grid}, tmp_path)
    for request in grid:
        name = request["name"]
        sequential = np.load(out / f"{name}.bits.npy")
        for t in range(2):
            np.testing.assert_array_equal(
                np.load(out / f"{name}.thread{t}.bits.npy"),
                sequential,
                err_msg=f"{name}, thread {t}",
            )


def test_cancel_from_the_step_callback(cpp_build, tiny_bundle, pipe, tmp_path):
    out = probe(
        cpp_build["release"],
        tiny_bundle,
        {"requests": [{"name": "stop", "seeds": [1, 2], "cancel_after": 3}]},
        tmp_path,
    )
    with pytest.raises(BldError) as caught:
        pipe.generate(seeds=[1, 2], callback=lambda step, k, bits: step < 3)
    kind = conformance.KINDS["CancelledError"]
    assert (out / "stop.error").read_text() == f"{kind} {caught.value}"


# --- the conformance cases (tests/conformance/): what tests/test_conformance.py holds Python to -


def cpp_error(exe: Path, bundle, args, tmp_path) -> str:
    out = tmp_path / "cpp"
    done = run(exe, "sample", bundle, *args, "-o", out)
    assert done.returncode == 1, (done.stdout, done.stderr)  # an error, not a crash
    assert not out.exists()
    return done.stderr


MANIFEST_CASES = conformance.cases("manifests")


@pytest.mark.parametrize("build", ["release", "asan"])
@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c["name"] for c in MANIFEST_CASES])
def test_conformance_bad_manifests(cpp_build, tiny_bundle, tmp_path, build, case):
    """The library refuses each bad manifest with the case's kind and sentence (bld-probe, the
    release build) and bld-cpp prints it as `bld` does (both builds), without a crash."""
    bundle = conformance.broken_bundle(tiny_bundle, tmp_path, case)
    expected = conformance.expected_message(case, bundle)
    if build == "release":
        out = probe(cpp_build[build], bundle, {"requests": []}, tmp_path / "probe")
        kind = conformance.KINDS[case["error"]["kind"]]
        assert (out / "load.error").read_text() == f"{kind} {expected}"
    assert cpp_error(cpp_build[build] / "bld-cpp", bundle, [], tmp_path) == conformance.one_line(
        expected
    )


COMMAND_CASES = conformance.cases("commands")


@pytest.mark.parametrize("build", ["release", "asan"])
@pytest.mark.parametrize("case", COMMAND_CASES, ids=[c["name"] for c in COMMAND_CASES])
def test_conformance_bad_command_lines(cpp_build, tiny_bundle, tmp_path, build, case):
    exe = cpp_build[build] / "bld-cpp"
    assert cpp_error(exe, tiny_bundle, case["args"], tmp_path) == case["error"] + "\n"


@pytest.mark.parametrize("build", ["release", "asan"])
def test_conformance_requests_and_generations(cpp_build, tiny_bundle, pipe, tmp_path, build):
    """Every bad request refused with the case's kind and sentence, every generation with the
    case's bits and pixels, in one bld-probe run. Where the tiny bundle's graphs are not those
    the hashes were made on (another CPU's training floats), each generation is held to the
    Python runtime's bits and pixels of the same request instead."""
    refusals, generations = conformance.cases("requests"), conformance.cases("generations")
    named = {f"case{i}": case for i, case in enumerate(refusals + generations)}
    spec = {"requests": [conformance.probe_request(n, c["request"]) for n, c in named.items()]}
    out = probe(cpp_build[build], tiny_bundle, spec, tmp_path)
    same_graphs = conformance.fingerprint(tiny_bundle) == conformance.generations_bundle()
    for name, case in named.items():
        error = out / f"{name}.error"
        if "error" in case:
            kind = conformance.KINDS[case["error"]["kind"]]
            assert error.read_text() == f"{kind} {case['error']['message']}", case["name"]
            continue
        assert not error.exists(), (case["name"], error.read_text())
        if same_graphs:
            expected_bits, expected_images = case["bits_sha256"], case["images_sha256"]
        else:
            python = pipe.generate(**conformance.python_arguments(case["request"]))
            expected_bits = conformance.sha256(python.bits)
            expected_images = conformance.sha256(python.images)
        bits, images = np.load(out / f"{name}.bits.npy"), np.load(out / f"{name}.images.npy")
        assert conformance.sha256(bits) == expected_bits, case["name"]
        assert conformance.sha256(images) == expected_images, case["name"]


@pytest.mark.parametrize("backend", ["cuda", "tensorrt-ep", "tensorrt"])
def test_unavailable_backends_are_refused_never_run_on_the_cpu(
    cpp_build, tiny_bundle, tmp_path, backend
):
    import onnxruntime as ort

    provider = {"cuda": "CUDAExecutionProvider", "tensorrt-ep": "TensorrtExecutionProvider"}
    if provider.get(backend) in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {provider[backend]}: a GPU machine checks it")
    message = cpp_error(
        cpp_build["release"] / "bld-cpp", tiny_bundle, ["--backend", backend], tmp_path
    )
    if backend == "tensorrt":
        assert "backend 'tensorrt' is not part of this build" in message
    else:
        assert f"backend '{backend}' needs onnxruntime's {provider[backend]}" in message


def test_unknown_backend_through_the_library_is_python_s_sentence(cpp_build, tiny_bundle, tmp_path):
    """The library's backend table (ort_backend.cpp) refuses a name it lacks as
    backends.create does: the same kind and sentence, its choices listed in the same order."""
    from bld_runtime.errors import BackendUnavailableError

    out = probe(cpp_build["release"], tiny_bundle, {"options": {"backend": "metal"}}, tmp_path)
    with pytest.raises(BackendUnavailableError) as python:
        Pipeline.load(tiny_bundle, backend="metal")
    kind, message = (out / "load.error").read_text().split(" ", 1)
    assert int(kind) == conformance.KINDS["BackendUnavailableError"]
    assert message == str(python.value)


@pytest.mark.parametrize("backend", ["cpu", "openvino"])
def test_bf16_and_openvino_through_the_library(cpp_build, tiny_bundle, tmp_path, backend):
    """bf16 on an onnxruntime backend is refused in the Python runtime's kind and sentence;
    "openvino" (the Python runtime's only) is refused in one line of its own."""
    from bld_runtime.errors import BackendUnavailableError

    options = {"backend": backend, "precision": "bf16"}
    out = probe(cpp_build["release"], tiny_bundle, {"options": options}, tmp_path)
    kind, message = (out / "load.error").read_text().split(" ", 1)
    assert int(kind) == conformance.KINDS["BackendUnavailableError"]
    if backend == "cpu":
        with pytest.raises(BackendUnavailableError) as python:
            Pipeline.load(tiny_bundle, backend="cpu", precision="bf16")
        assert message == str(python.value)
    else:
        assert message.startswith("backend 'openvino' runs in the Python runtime only")


@pytest.mark.parametrize("build", ["release", "asan"])
def test_version_is_laid_out_as_bld_s(cpp_build, build):
    """`bld-cpp --version`: the package, the bundle format and the onnxruntime it runs on, in
    `bld --version`'s layout (bld_runtime/version.py); only onnxruntime's version may differ."""
    from bld_runtime.version import version_line

    done = run(cpp_build[build] / "bld-cpp", "--version")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    linked = re.fullmatch(r".*; onnxruntime (\d+\.\d+\.\d+)\)\n", done.stdout)
    assert linked, done.stdout
    python_line = re.sub(r"onnxruntime [^)]*", f"onnxruntime {linked[1]}", version_line("bld-cpp"))
    assert done.stdout == python_line + "\n"


@pytest.mark.parametrize("command", [[], ["sample"], ["bench"]])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_command(cpp_build, command, flag):
    done = run(cpp_build["release"] / "bld-cpp", *command, flag)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"Usage: bld-cpp {' '.join(command)}".rstrip() + " [OPTIONS] ")
    assert "  -h, --help  " in done.stdout


def test_unit_tests_pass(cpp_build):
    """Philox known answers, cuRAND mapping, uniforms, packed bits, formatting (Catch2)."""
    done = run(cpp_build["release"] / "tests" / "bld_unit_tests")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_an_app_builds_against_the_installed_package(cpp_build, tiny_bundle, pipe, tmp_path):
    """cmake --install, then the README's embedding example: find_package(bld), bld::bld."""
    prefix, build, out = tmp_path / "prefix", tmp_path / "embed", tmp_path / "out"
    out.mkdir()
    steps = [
        ["cmake", "--install", cpp_build["release"], "--prefix", prefix],
        ["cmake", "-S", CPP / "examples" / "embed", "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}"],
        ["cmake", "--build", build],
    ]
    for step in steps:
        done = subprocess.run([str(a) for a in step], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (prefix / "lib" / "libbld.a").exists()
    assert (prefix / "include" / "bld" / "bld.h").exists()
    done = run(build / "embed", tiny_bundle, out)
    assert done.returncode == 0, done.stderr
    expected = pipe.generate(seeds=np.arange(42, 50, dtype=np.uint64), classes=3, guidance=1.0)
    from bld_runtime.bits import load_bits

    np.testing.assert_array_equal(load_bits(out / "bits.bldz"), expected.bits)


def test_tensorrt_backend_without_tensorrt_fails_to_configure_clearly(cpp_build, tmp_path):
    """-DBLD_WITH_TENSORRT=ON where no TensorRT SDK is installed: a clear CMake error."""
    if any(
        Path(d, "NvInfer.h").exists()
        for d in ("/usr/include", "/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu")
    ):
        pytest.skip("TensorRT is installed here: the GPU machines build this backend")
    done = subprocess.run(
        [
            "cmake",
            "-S",
            str(CPP),
            "-B",
            str(tmp_path / "trt"),
            f"-DONNXRUNTIME_ROOT={CPP / '.deps' / 'onnxruntime'}",
            "-DBLD_WITH_TENSORRT=ON",
            "-DBLD_BUILD_TESTS=OFF",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "BLD_WITH_TENSORRT=ON needs the TensorRT headers and library" in done.stderr
