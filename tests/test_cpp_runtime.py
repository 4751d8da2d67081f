"""The C++ runtime (runtime/cpp) against the Python runtime, on the tiny bundle.

The same requests go through both: every step's input bits and probabilities (trace), the final
bits, the packed bits file and the PNG pixels must be identical; bad input must be refused by
both with the same sentence, by the release build and by the AddressSanitizer +
UndefinedBehaviorSanitizer build, without a crash. The `cpp_build` fixture builds both
(`make cpp`); conftest.py runs these tests after all the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
# bld.h's bld_error_kind, by the Python error class each one mirrors
KINDS = {
    "ContractError": 1,
    "ManifestError": 2,
    "BundleIntegrityError": 3,
    "InvalidRequestError": 4,
    "BackendUnavailableError": 5,
    "PackedBitsError": 6,
    "CancelledError": 7,
}


@pytest.fixture(scope="session")
def cpp_build() -> dict[str, Path]:
    """Build the C++ runtime, release and sanitizer builds (`make cpp`); their folders."""
    done = subprocess.run(
        ["make", "--no-print-directory", "cpp", f"PY={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail(f"make cpp failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"release": CPP / "build", "asan": CPP / "build-asan"}


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
    assert (out / "stop.error").read_text() == f"{KINDS['CancelledError']} {caught.value}"


# --- bad input: the same sentence from both runtimes, no crash under the sanitizers ---------


def broken_bundle(tiny_bundle: Path, where: Path, change) -> Path:
    bundle = where / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    change(bundle)
    return bundle


def edit_manifest(edit):
    def change(bundle: Path):
        path = bundle / "bld.json"
        if isinstance(edit, str):
            path.write_text(edit)
            return
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data, indent=2))

    return change


def set_key(*path_and_value):
    *path, value = path_and_value

    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def tamper(name):
    def change(bundle: Path):
        data = bytearray((bundle / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bundle / name).write_bytes(bytes(data))

    return change


def escape_by_symlink(bundle: Path):
    outside = bundle.parent / "outside"
    outside.mkdir()
    shutil.move(bundle / "decoder.onnx", outside / "decoder.onnx")
    (bundle / "decoder.onnx").symlink_to(outside / "decoder.onnx")


TIMESTEPS = [32, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1]
BAD_BUNDLES = {
    "tampered graph": tamper("step.onnx"),
    "missing file": lambda b: (b / "decoder.onnx").unlink(),
    "no manifest": lambda b: (b / "bld.json").unlink(),
    "unknown key": edit_manifest(lambda d: d["graphs"]["step"]["inputs"][0].update(foo=1)),
    "unknown top-level key": edit_manifest(set_key("extra", {"a": [1, None, True]})),
    "missing key": edit_manifest(lambda d: d["image"].pop("width")),
    "path escaping": edit_manifest(set_key("graphs", "decoder", "file", "../decoder.onnx")),
    "absolute path": edit_manifest(set_key("graphs", "decoder", "file", "/etc/passwd")),
    "windows drive": edit_manifest(set_key("graphs", "step", "file", "C:step.onnx")),
    "symlink escaping": escape_by_symlink,
    "wrong type": edit_manifest(set_key("max_batch", "64")),
    "float for int": edit_manifest(set_key("latent", "bits", 8.0)),
    "bool for int": edit_manifest(set_key("schedule", "train_steps", True)),
    "bad literal": edit_manifest(set_key("graphs", "step", "precision", "fp64")),
    "bad dim": edit_manifest(set_key("graphs", "step", "inputs", 0, "shape", [1.5, 64])),
    "bad sha": edit_manifest(set_key("graphs", "step", "sha256", "ABC")),
    "bad format": edit_manifest(set_key("format", "other")),
    "new schema": edit_manifest(set_key("schema_version", 2)),
    "unknown graph": edit_manifest(lambda d: d["graphs"].update(foo=d["graphs"]["step"])),
    "missing graph": edit_manifest(lambda d: d["graphs"].pop("step_guided")),
    "timesteps": edit_manifest(set_key("schedule", "timesteps", TIMESTEPS[:-1] + [2])),
    "timesteps order": edit_manifest(set_key("schedule", "timesteps", [29, 32] + TIMESTEPS[2:])),
    "sampling steps": edit_manifest(set_key("schedule", "sampling_steps", 40)),
    "contract": edit_manifest(
        set_key(
            "schedule", {"name": "linear", "train_steps": 1, "sampling_steps": 1, "timesteps": [1]}
        )
    ),
    "schedule name": edit_manifest(set_key("schedule", "name", "quadratic")),
    "null class": edit_manifest(set_key("classes", "null_class", 3)),
    "temperature": edit_manifest(set_key("defaults", "temperature", -0.5)),
    "guidance": edit_manifest(set_key("defaults", "guidance", -1e-7)),
    "duplicate names": edit_manifest(
        lambda d: d["graphs"]["step"]["inputs"].append(d["graphs"]["step"]["inputs"][0])
    ),
    "not an object": edit_manifest("[1, 2]"),
    "duplicate key": edit_manifest('{"format": "bld-bundle", "format": "x"}'),
    "NaN": edit_manifest('{"format": "bld-bundle", "schema_version": NaN}'),
    "-Infinity": edit_manifest('{"format": "bld-bundle", "schema_version": -Infinity}'),
    "number too large": lambda b: (b / "bld.json").write_text(
        (b / "bld.json").read_text().replace('"temperature": 1.0', '"temperature": 1e999')
    ),
    "integer too large": edit_manifest(set_key("max_batch", 2**64 - 1)),
    "too deep": edit_manifest("[" * 2000 + "]" * 2000),
    "huge manifest": lambda b: (b / "bld.json").write_text(
        (b / "bld.json").read_text() + " " * (4 << 20)
    ),
    "NUL in a path": edit_manifest(set_key("graphs", "step", "file", "step\u0000.onnx")),
    "graph interface": edit_manifest(
        set_key("graphs", "step", "inputs", 0, "shape", ["batch", 64, 7])
    ),
    "graph precision": edit_manifest(set_key("graphs", "step", "precision", "fp16")),
    "graph facts": lambda b: rewrite_graph(b, "step", lambda facts: facts["latent"].update(bits=9)),
    "no graph facts": lambda b: rewrite_graph(b, "decoder", None),
}


def rewrite_graph(bundle: Path, name: str, edit_facts):
    """Change what graph `name` records in its bld.graph metadata (None: drop it), and update
    its sha256 in bld.json, so that only the facts disagree."""
    import hashlib

    import onnx

    path = bundle / f"{name}.onnx"
    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key == "bld.graph"]
    if edit_facts is None:
        model.metadata_props.remove(props[0])
    else:
        facts = json.loads(props[0].value)
        edit_facts(facts)
        props[0].value = json.dumps(facts)
    onnx.save(model, str(path))
    data = json.loads((bundle / "bld.json").read_text())
    data["graphs"][name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / "bld.json").write_text(json.dumps(data, indent=2))


BAD_ARGS = {
    "seed too large": ["--seed", str(2**64)],
    "negative seed": ["--seed", "-1"],
    "seed not a number": ["--seed", "1e3"],
    "class too large": ["--class", "10"],
    "negative class": ["--class", "-1"],
    "class not a number": ["--class", "seven"],
    "NaN guidance": ["--guidance", "nan"],
    "negative guidance": ["--guidance", "-1.5"],
    "infinite temperature": ["--temperature", "inf"],
    "zero images": ["-n", "0"],
    "too many digits": ["--seed", "000000000000000000001"],
    "seed with a sign": ["--seed", "+5"],
    "huge class": ["--class", "99999999999999999999"],
    "no chunking": ["-n", "65", "--no-chunk"],
    "threads": ["--threads", "-2"],
    "precision": ["--precision", "fp64"],
}


def python_error(bundle, args, tmp_path) -> str:
    result = CliRunner().invoke(cli, ["sample", str(bundle), *args, "-o", str(tmp_path / "py")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    return result.stderr


def cpp_error(exe: Path, bundle, args, tmp_path) -> str:
    out = tmp_path / "cpp"
    done = run(exe, "sample", bundle, *args, "-o", out)
    assert done.returncode == 1, (done.stdout, done.stderr)  # an error, not a crash
    assert not out.exists()
    return done.stderr


@pytest.mark.parametrize("build", ["release", "asan"])
@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_bad_bundles_are_refused_with_python_s_sentence(
    cpp_build, tiny_bundle, tmp_path, build, case
):
    bundle = broken_bundle(tiny_bundle, tmp_path, BAD_BUNDLES[case])
    expected = python_error(bundle, [], tmp_path)
    assert cpp_error(cpp_build[build] / "bld-cpp", bundle, [], tmp_path) == expected


@pytest.mark.parametrize("build", ["release", "asan"])
@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_are_refused_with_python_s_sentence(
    cpp_build, tiny_bundle, tmp_path, build, case
):
    args = BAD_ARGS[case]
    assert cpp_error(cpp_build[build] / "bld-cpp", tiny_bundle, args, tmp_path) == python_error(
        tiny_bundle, args, tmp_path
    )


@pytest.mark.parametrize("build", ["release", "asan"])
def test_bad_requests_are_refused_with_python_s_sentence(
    cpp_build, tiny_bundle, pipe, tmp_path, build
):
    L, C = pipe.latent_shape
    ok = {"seeds": [1, 2], "classes": [0, 1]}
    cases = {
        "mask shape": dict(
            ok, mask=[1] * (L * (C - 1)), known_bits=[0] * (L * (C - 1)), mask_shape=[1, L, C - 1]
        ),
        "mask rows": dict(
            ok, mask=[1] * (3 * L * C), known_bits=[0] * (3 * L * C), mask_shape=[3, L, C]
        ),
        "mask values": dict(ok, mask=[2] * (L * C), known_bits=[0] * (L * C), mask_shape=[1, L, C]),
        "mask without known bits": dict(ok, mask=[1] * (L * C), mask_shape=[1, L, C]),
        "NaN guidance": dict(ok, guidance=["nan"]),
        "guidance per image": dict(ok, guidance=[0.0, 1.0, 2.0]),
        "class out of range": dict(ok, classes=[3, 11]),
        "negative class": dict(ok, classes=[-1]),
        "classes per image": dict(ok, classes=[1, 2, 3]),
        "no images": dict(ok, seeds=[]),
        "no chunking": dict(ok, seeds=list(range(65)), classes=[0], chunk=False),
        "zero temperature": dict(ok, temperature=[0.0]),
    }
    spec = {
        "requests": [dict(request, name=name.replace(" ", "_")) for name, request in cases.items()]
    }
    out = probe(cpp_build[build], tiny_bundle, spec, tmp_path)
    for request in spec["requests"]:
        with pytest.raises(BldError) as caught:
            python_generate(pipe, request)
        kind = KINDS[type(caught.value).__name__]
        assert (out / f"{request['name']}.error").read_text() == f"{kind} {caught.value}"


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
