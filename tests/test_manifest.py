"""bld.json: the strict typed parser, consistency checks and bundle file integrity."""

import copy
import dataclasses
import hashlib
import json
import os

import pytest

from bld_runtime import contract
from bld_runtime.errors import BundleIntegrityError, ManifestError
from bld_runtime.files import sha256_file
from bld_runtime.manifest import (
    MANIFEST_NAME,
    Bundle,
    GraphSpec,
    ImageSpec,
    Manifest,
    TensorSpec,
    load_bundle,
    parse_manifest_text,
    write_manifest,
)

GRAPHS = ("encoder", "decoder", "step", "step_guided")


def graph_entry(file, sha, inputs, outputs):
    return {
        "file": file,
        "sha256": sha,
        "precision": "fp32",
        "opset": 17,
        "inputs": copy.deepcopy(inputs),
        "outputs": copy.deepcopy(outputs),
        "flops": 1_000_000,
    }


def tensor(name, dtype, shape):
    return {"name": name, "dtype": dtype, "shape": shape}


def manifest_dict(shas):
    bits = tensor("bits", "float32", ["batch", 16, 32])
    step_in = [
        bits,
        tensor("step", "int64", ["batch"]),
        tensor("class_label", "int64", ["batch"]),
        tensor("temperature", "float32", ["batch"]),
    ]
    probs = [tensor("probs", "float32", ["batch", 16, 32])]
    image = [tensor("image", "float32", ["batch", 1, 32, 32])]
    return {
        "format": "bld-bundle",
        "schema_version": 1,
        "image": {"height": 32, "width": 32, "channels": 1},
        "latent": {"height": 4, "width": 4, "bits": 32},
        "classes": {"count": 10, "null_class": 10},
        "schedule": {
            "name": "linear",
            "train_steps": 64,
            "sampling_steps": 16,
            "timesteps": contract.sampling_timesteps(64, 16).tolist(),
        },
        "defaults": {"temperature": 1.0, "guidance": 0.0},
        "max_batch": 64,
        "graphs": {
            "encoder": graph_entry("encoder.onnx", shas["encoder"], image, probs),
            "decoder": graph_entry("decoder.onnx", shas["decoder"], [bits], image),
            "step": graph_entry("step.onnx", shas["step"], step_in, probs),
            "step_guided": graph_entry(
                "step_guided.onnx",
                shas["step_guided"],
                step_in + [tensor("guidance", "float32", ["batch"])],
                probs,
            ),
        },
        "producer": {"bld": "0.1.0", "torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0"},
    }


@pytest.fixture
def bundle(tmp_path):
    """A bundle directory with dummy graph bytes (hashing is bytes-level) and its manifest dict."""
    shas = {}
    for name in GRAPHS:
        payload = f"dummy graph {name}".encode()
        (tmp_path / f"{name}.onnx").write_bytes(payload)
        shas[name] = hashlib.sha256(payload).hexdigest()
    data = manifest_dict(shas)
    write_json(tmp_path, data)
    return tmp_path, data


def write_json(directory, data):
    (directory / MANIFEST_NAME).write_text(json.dumps(data))


def load_error(directory, data, error=ManifestError):
    write_json(directory, data)
    with pytest.raises(error) as info:
        load_bundle(directory)
    return str(info.value)


def test_valid_bundle_loads_into_typed_frozen_objects(bundle):
    directory, _ = bundle
    b = load_bundle(directory)
    assert isinstance(b, Bundle) and b.directory == directory
    m = b.manifest
    assert m.latent.shape == (16, 32) and m.latent.tokens == 16 and m.image.shape == (32, 32, 1)
    assert m.schedule.timesteps[0] == 64 and m.schedule.timesteps[-1] == 1
    assert isinstance(m.graphs["step"], GraphSpec)
    assert m.graphs["step"].inputs[0] == TensorSpec("bits", "float32", ("batch", 16, 32))
    assert m.graphs["step_guided"].input("guidance").dtype == "float32"
    assert isinstance(m.defaults.temperature, float)
    assert b.graph_path("step") == directory / "step.onnx"
    assert load_bundle(directory / MANIFEST_NAME).manifest == m  # the file itself works too
    with pytest.raises(AttributeError):
        m.max_batch = 3  # frozen
    with pytest.raises(TypeError):
        m.graphs["new"] = m.graphs["step"]  # read-only mapping
    with pytest.raises(ManifestError, match="has no graph 'step_fp16'"):
        b.graph_path("step_fp16")


def test_round_trip_is_exact(bundle, tmp_path_factory):
    directory, data = bundle
    m = Manifest.from_dict(data)
    assert m.to_dict() == data
    assert json.loads(json.dumps(m.to_dict())) == data
    assert Manifest.from_dict(m.to_dict()) == m
    other = tmp_path_factory.mktemp("copy")
    for name in GRAPHS:
        (other / f"{name}.onnx").write_bytes((directory / f"{name}.onnx").read_bytes())
    assert write_manifest(other, m) == other / MANIFEST_NAME
    assert load_bundle(other).manifest == m
    assert sorted(os.listdir(other)) == sorted([MANIFEST_NAME] + [f"{g}.onnx" for g in GRAPHS])


def test_integer_json_numbers_are_accepted_for_float_fields(bundle):
    _, data = bundle
    data["defaults"] = {"temperature": 1, "guidance": 2}
    m = Manifest.from_dict(data)
    assert m.defaults.temperature == 1.0 and type(m.defaults.temperature) is float


def test_write_manifest_validates_and_leaves_no_partial_file(bundle):
    directory, data = bundle
    before = (directory / MANIFEST_NAME).read_bytes()
    good = Manifest.from_dict(data)
    bad = dataclasses.replace(good, image=ImageSpec(32.0, 32, 1))  # an exporter bug: float dims
    with pytest.raises(
        ManifestError, match=r"image.height: expected an integer, got a number 32.0"
    ):
        write_manifest(directory, bad)
    assert (directory / MANIFEST_NAME).read_bytes() == before
    assert not [p for p in os.listdir(directory) if p.endswith(".tmp")]


# What each field may hold and the consistency checks (unknown and missing keys, types, the
# schedule, the defaults, graphs and their tensors), one sentence per rule, are conformance cases
# that both runtimes are held to: tests/conformance/manifests.json (tests/test_conformance.py,
# tests/test_cpp_runtime.py). The JSON level and the files are tested here.


def test_json_level_errors(bundle):
    directory, _ = bundle
    cases = {
        '{"format": "bld-bundle",': "bld.json: not valid JSON (",
        '{"a": 1, "a": 2}': "bld.json: duplicate key 'a'",
        '{"x": NaN}': "bld.json: NaN is not a valid JSON number",
        "[1, 2]": "bld.json: expected an object, got an array",
    }
    for text, expected in cases.items():
        with pytest.raises(ManifestError, match="^" + expected.replace("(", r"\(")):
            parse_manifest_text(text)
    (directory / MANIFEST_NAME).write_bytes(b"\xff\xfe")
    with pytest.raises(ManifestError, match="not valid UTF-8"):
        load_bundle(directory)


def test_graph_file_paths_must_stay_inside_the_bundle(bundle, tmp_path_factory):
    directory, data = bundle
    outside = tmp_path_factory.mktemp("outside")
    (outside / "evil.onnx").write_bytes(b"dummy graph step")
    cases = [
        (
            "/etc/passwd",
            "bld.json: graphs.step.file '/etc/passwd' is an absolute path; "
            "graph files must be relative to the bundle directory",
        ),
        ("C:/models/step.onnx", "is an absolute path"),
        (
            "../outside/evil.onnx",
            "bld.json: graphs.step.file '../outside/evil.onnx' uses '..' "
            "to leave the bundle directory",
        ),
        ("sub/../../evil.onnx", "uses '..' to leave the bundle directory"),
    ]
    for file, expected in cases:
        data["graphs"]["step"]["file"] = file
        assert expected in load_error(directory, data, BundleIntegrityError)
    (directory / "link.onnx").symlink_to(outside / "evil.onnx")
    data["graphs"]["step"]["file"] = "link.onnx"
    message = load_error(directory, data, BundleIntegrityError)
    assert "graphs.step.file 'link.onnx' resolves (through a symlink)" in message
    assert "outside the bundle directory" in message
    # a symlink that stays inside the bundle is fine
    (directory / "models").mkdir()
    (directory / "models" / "step.onnx").symlink_to(directory / "step.onnx")
    data["graphs"]["step"]["file"] = "models/step.onnx"
    write_json(directory, data)
    assert load_bundle(directory).graph_path("step") == directory / "models" / "step.onnx"


def test_missing_and_altered_graph_files(bundle):
    directory, data = bundle
    (directory / "decoder.onnx").unlink()
    message = load_error(directory, data, BundleIntegrityError)
    assert (
        message == f"graph file 'decoder.onnx' (graphs.decoder) is missing from bundle {directory}"
    )

    (directory / "decoder.onnx").write_bytes(b"tampered")
    actual = hashlib.sha256(b"tampered").hexdigest()
    expected = data["graphs"]["decoder"]["sha256"]
    write_json(directory, data)
    bundle = load_bundle(directory)  # hashes are checked when graphs are read, not at load
    want = (
        f"graph file 'decoder.onnx' (graphs.decoder) does not match the manifest: "
        f"sha256 expected {expected}, actual {actual}"
    )
    with pytest.raises(BundleIntegrityError) as info:
        bundle.read_graph("decoder")
    assert str(info.value) == want
    with pytest.raises(BundleIntegrityError) as info:
        bundle.verify_files()
    assert str(info.value) == want
    bundle.verify_files(["encoder", "step"])  # the others are intact
    assert bundle.read_graph("step") == b"dummy graph step"


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleIntegrityError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleIntegrityError, match=r"is not a bundle: it has no bld\.json"):
        load_bundle(tmp_path)


def test_bundle_integrity_error_is_a_manifest_error():
    assert issubclass(BundleIntegrityError, ManifestError)


def test_sha256_file_reads_in_chunks(tmp_path):
    payload = os.urandom(10_000)
    (tmp_path / "blob").write_bytes(payload)
    assert sha256_file(tmp_path / "blob", chunk_size=1024) == hashlib.sha256(payload).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
