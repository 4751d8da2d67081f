"""Hostile and careless bundles: tampered files, broken manifests, and manifests that tell a
consistent story the graphs do not (refused at load by `bld sample` and by `bld-export verify`
without the run)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest

from bld_runtime import contract

from .conftest import check_refused, copy_bundle, edit_manifest, rehash, run, snapshot

GRAPHS = (
    "encoder",
    "decoder",
    "step",
    "step_guided",
    "decoder_fp16",
    "step_fp16",
    "step_guided_fp16",
)


def sample_refused(bundle: Path, tmp: Path, fragment: str, *args) -> None:
    out = tmp / "out"
    check_refused(run("bld", "sample", bundle, "-n", 2, "-o", out, *args), fragment, [out])


def verify_refused(bundle: Path, fragment: str) -> None:
    check_refused(run("bld-export", "verify", bundle), fragment)


# --- tampered and missing files ---------------------------------------------------------------


def flip_byte(bundle: Path, name: str) -> None:
    path = bundle / f"{name}.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", GRAPHS)
def test_a_flipped_byte_is_refused(tiny_bundle, tmp_path, name):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    flip_byte(bundle, name)
    precision = "fp16" if name.endswith("_fp16") else "fp32"
    sample_refused(
        bundle,
        tmp_path,
        f"graph file '{name}.onnx' (graphs.{name}) does not match the manifest: sha256 expected",
        "--precision",
        precision,
    )


@pytest.mark.parametrize("name", GRAPHS)
def test_a_missing_graph_file_is_refused(tiny_bundle, tmp_path, name):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / f"{name}.onnx").unlink()
    sample_refused(bundle, tmp_path, f"graph file '{name}.onnx' (graphs.{name}) is missing")


@pytest.mark.parametrize("name", ["encoder", "step", "decoder_fp16"])
def test_a_graph_that_is_not_onnx_is_refused_even_with_a_matching_hash(tiny_bundle, tmp_path, name):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / f"{name}.onnx").write_bytes(b"not a graph at all")
    rehash(bundle, name)
    precision = "fp16" if name.endswith("_fp16") else "fp32"
    sample_refused(
        bundle, tmp_path, f"onnxruntime cannot load graph '{name}'", "--precision", precision
    )


def test_a_truncated_graph_is_refused(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    path = bundle / "decoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    rehash(bundle, "decoder")
    sample_refused(bundle, tmp_path, "onnxruntime cannot load graph 'decoder'")


def test_external_data_is_refused(tiny_bundle, tmp_path):
    """Weights beside a graph (step.bin) would escape its sha256: refused, wherever it is run."""
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    model = onnx.load(str(bundle / "step.onnx"))
    onnx.save(
        model,
        str(bundle / "step.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="step.bin",
        size_threshold=0,
    )
    rehash(bundle, "step")
    sample_refused(bundle, tmp_path, "keeps tensors in external data files")
    # ... also when the working directory holds a file of that name
    (tmp_path / "step.bin").write_bytes((bundle / "step.bin").read_bytes())
    out = tmp_path / "out2"
    check_refused(
        run("bld", "sample", bundle, "-o", out, cwd=tmp_path),
        "keeps tensors in external data files",
        [out],
    )


def test_a_graph_swapped_after_loading_is_never_run(tiny_bundle, tmp_path):
    """Time of check vs time of use: sessions are made from the bytes that were hashed."""
    from bld_runtime.pipeline import Pipeline

    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    pipe = Pipeline.load(bundle)
    before = pipe.generate(n=3, seeds=4).bits
    flip_byte(bundle, "step")  # too late: nothing reads the file again
    (bundle / "decoder.onnx").unlink()
    np.testing.assert_array_equal(pipe.generate(n=3, seeds=4).bits, before)


# --- the manifest itself -------------------------------------------------------------------------


def _deeply_nested(bundle: Path) -> None:
    (bundle / "bld.json").write_text("[" * 200_000 + "]" * 200_000)


MANIFEST_TEXT = {
    "empty file": (lambda b: (b / "bld.json").write_text(""), "not valid JSON"),
    "truncated": (
        lambda b: (b / "bld.json").write_text((b / "bld.json").read_text()[:300]),
        "not valid JSON",
    ),
    "not json": (lambda b: (b / "bld.json").write_text("format = bld-bundle"), "not valid JSON"),
    "deeply nested": (_deeply_nested, "nested too deeply"),
    "not utf-8": (lambda b: (b / "bld.json").write_bytes(b"\xff\xfe{}"), "not valid UTF-8"),
    "too large": (
        lambda b: (b / "bld.json").write_text(" " * (5 << 20) + "{}"),
        "far larger than any bundle manifest",
    ),
    # said as files.open_input says it: what it is, not "it has no bld.json"
    "a directory": (
        lambda b: ((b / "bld.json").unlink(), (b / "bld.json").mkdir()),
        "bld.json is a folder, not a regular file",
    ),
    "a device": (
        lambda b: ((b / "bld.json").unlink(), (b / "bld.json").symlink_to("/dev/zero")),
        "bld.json resolves (through a symlink) to /dev/zero, outside the bundle directory",
    ),
    "an array": (lambda b: (b / "bld.json").write_text("[1, 2]"), "expected an object"),
}


def _text_edit(old: str, new: str):
    def edit(bundle: Path) -> None:
        path = bundle / "bld.json"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    return edit


def _set(path: str, value):
    def change(data):
        keys = path.split(".")
        target = data
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value

    return lambda bundle: edit_manifest(bundle, change)


def _drop(path: str):
    def change(data):
        keys = path.split(".")
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return lambda bundle: edit_manifest(bundle, change)


MANIFEST_CONTENT = {
    "nan": (_text_edit('"temperature": 1.0', '"temperature": NaN'), "NaN is not a valid JSON"),
    "1e999": (_text_edit('"temperature": 1.0', '"temperature": 1e999'), "out of range"),
    "huge integer": (_set("max_batch", 10**30), "out of range (64-bit integers)"),
    "duplicate key": (
        _text_edit('"max_batch":', '"max_batch": 3, "max_batch":'),
        "duplicate key 'max_batch'",
    ),
    "unknown top key": (_set("extra", 1), "unknown key 'extra'"),
    "unknown nested key": (
        _set("graphs.step.inputs.0.foo", 1),
        "graphs.step.inputs[0]: unknown key 'foo'",
    ),
    "missing key": (_drop("defaults.guidance"), "defaults: missing key 'guidance'"),
    "wrong type": (_set("max_batch", "64"), "max_batch: expected an integer, got a string"),
    "bool for int": (_set("max_batch", True), "max_batch: expected an integer, got a boolean"),
    "negative max_batch": (_set("max_batch", -1), "max_batch must be >= 1"),
    "wrong format": (_set("format", "onnx-bundle"), "this is not a bld bundle"),
    "future schema": (_set("schema_version", 2), "schema_version 2 is not supported"),
    "null class": (_set("classes.null_class", 3), "null_class (3) must equal count (10)"),
    "timesteps": (_set("schedule.timesteps", list(range(16, 0, -1))), "differ from the contract's"),
    "unknown schedule": (_set("schedule.name", "quadratic"), "unknown schedule 'quadratic'"),
    "negative temperature": (_set("defaults.temperature", -1.0), "temperature must be > 0"),
    "unknown graph": (
        lambda b: edit_manifest(b, lambda d: d["graphs"].update(refiner=d["graphs"]["step"])),
        "unknown graph 'refiner'",
    ),
    "missing graph": (_drop("graphs.step_guided"), "missing graph 'step_guided'"),
    "bad sha": (_set("graphs.step.sha256", "abc"), "sha256 must be 64 lowercase hexadecimal"),
    "absolute path": (_set("graphs.step.file", "/etc/passwd"), "is an absolute path"),
    "dot-dot path": (_set("graphs.step.file", "../step.onnx"), "uses '..' to leave the bundle"),
    "windows path": (_set("graphs.step.file", "C:\\\\step.onnx"), "is an absolute path"),
    "nul in path": (_set("graphs.step.file", "step\u0000.onnx"), "contains a NUL character"),
    "empty path": (_set("graphs.step.file", ""), "file must not be empty"),
    "renamed input": (
        _set("graphs.step.inputs.2.name", "label"),
        "graphs.step.inputs: bundle format v1 defines",
    ),
    "renamed output": (
        _set("graphs.decoder.outputs.0.name", "pixels"),
        "graphs.decoder.outputs: bundle format v1 defines",
    ),
    "retyped input": (
        _set("graphs.step.inputs.1.dtype", "int32"),
        "graphs.step.inputs: bundle format v1 defines",
    ),
    "reshaped input": (
        _set("graphs.step.inputs.0.shape", ["batch", 64, 16]),
        "graphs.step.inputs: bundle format v1 defines",
    ),
    "fixed batch": (
        _set("graphs.encoder.inputs.0.shape", [1, 1, 16, 16]),
        "graphs.encoder.inputs: bundle format v1 defines",
    ),
    "relabelled precision": (
        _set("graphs.step.precision", "fp16"),
        "graphs.step.precision: must be 'fp32'",
    ),
}


@pytest.mark.parametrize("case", list(MANIFEST_TEXT) + list(MANIFEST_CONTENT))
def test_a_broken_manifest_is_refused(tiny_bundle, tmp_path, case):
    mutate, fragment = {**MANIFEST_TEXT, **MANIFEST_CONTENT}[case]
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    mutate(bundle)
    sample_refused(bundle, tmp_path, fragment)


def test_graph_paths_through_symlinks(tiny_bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "step.onnx").write_bytes((tiny_bundle / "step.onnx").read_bytes())
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / "step.onnx").unlink()
    (bundle / "step.onnx").symlink_to(outside / "step.onnx")
    sample_refused(bundle, tmp_path, "resolves (through a symlink) to")
    (bundle / "step.onnx").unlink()
    (bundle / "step.onnx").symlink_to(bundle / "loop.onnx")
    (bundle / "loop.onnx").symlink_to(bundle / "step.onnx")
    sample_refused(bundle, tmp_path, "cannot be resolved (a symlink loop?)")
    # not "missing": what it is, in files.open_input's words
    (bundle / "step.onnx").unlink()
    (bundle / "step.onnx").mkdir()
    sample_refused(bundle, tmp_path, f"graph file {bundle / 'step.onnx'} is a folder, not a")
    (bundle / "step.onnx").rmdir()
    os.mkfifo(bundle / "step.onnx")
    sample_refused(bundle, tmp_path, f"graph file {bundle / 'step.onnx'} is a FIFO (named pipe)")
    (bundle / "step.onnx").unlink()
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(bundle / "step.onnx"))
        sample_refused(
            bundle, tmp_path, f"graph file {bundle / 'step.onnx'} is a socket, not a regular file"
        )
    (bundle / "step.onnx").unlink()
    sample_refused(bundle, tmp_path, "graph file 'step.onnx' (graphs.step) is missing")


def test_a_manifest_through_a_symlink_follows_the_graphs_rule(tiny_bundle, tmp_path):
    """bld.json is a file of the bundle like the graphs: a symlink may not lead outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bld.json").write_bytes((tiny_bundle / "bld.json").read_bytes())
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / "bld.json").unlink()
    (bundle / "bld.json").symlink_to(outside / "bld.json")
    fragment = f"bld.json resolves (through a symlink) to {outside / 'bld.json'}, outside the"
    sample_refused(bundle, tmp_path, fragment)
    verify_refused(bundle, fragment)
    (bundle / "bld.json").unlink()
    (bundle / "bld.json").symlink_to(bundle / "loop.json")
    (bundle / "loop.json").symlink_to(bundle / "bld.json")
    sample_refused(bundle, tmp_path, "bld.json cannot be resolved (a symlink loop?)")
    (bundle / "bld.json").unlink()
    os.mkfifo(bundle / "bld.json")
    for given in (bundle, bundle / "bld.json"):
        check_refused(
            run("bld", "sample", given, "-o", tmp_path / "out", timeout=120),
            f"bundle manifest {bundle / 'bld.json'} is a FIFO (named pipe), not a regular file",
            [tmp_path / "out"],
        )


# --- manifests that tell a consistent story the graphs do not -----------------------------------


def _timesteps(train_steps: int, steps: int) -> list[int]:
    return contract.sampling_timesteps(train_steps, steps).tolist()


def _classes(count: int):
    return _set("classes", {"count": count, "null_class": count})


def _steps(k: int):
    def change(data):
        data["schedule"]["sampling_steps"] = k
        data["schedule"]["timesteps"] = _timesteps(data["schedule"]["train_steps"], k)

    return lambda bundle: edit_manifest(bundle, change)


def _train_steps(t: int):
    def change(data):
        data["schedule"]["train_steps"] = t
        data["schedule"]["timesteps"] = _timesteps(t, data["schedule"]["sampling_steps"])

    return lambda bundle: edit_manifest(bundle, change)


def _latent(height: int, width: int, bits: int):
    """A latent geometry, with every graph's I/O shapes made consistent with it."""

    def change(data):
        data["latent"] = {"height": height, "width": width, "bits": bits}
        for graph in data["graphs"].values():
            for spec in graph["inputs"] + graph["outputs"]:
                if spec["name"] in ("bits", "probs"):
                    spec["shape"] = ["batch", height * width, bits]

    return lambda bundle: edit_manifest(bundle, change)


def _image(size: int, channels: int):
    def change(data):
        data["image"] = {"height": size, "width": size, "channels": channels}
        for graph in data["graphs"].values():
            for spec in graph["inputs"] + graph["outputs"]:
                if spec["name"] == "image":
                    spec["shape"] = ["batch", channels, size, size]

    return lambda bundle: edit_manifest(bundle, change)


def _swap(a: str, b: str):
    def change(data):
        for key in ("file", "sha256"):
            data["graphs"][a][key], data["graphs"][b][key] = (
                data["graphs"][b][key],
                data["graphs"][a][key],
            )

    return lambda bundle: edit_manifest(bundle, change)


def _rewrite_metadata(name: str, value):
    """Change what a graph records about itself (bld.graph), then re-hash it consistently."""

    def mutate(bundle: Path) -> None:
        path = bundle / f"{name}.onnx"
        model = onnx.load(str(path))
        facts = json.loads(next(p.value for p in model.metadata_props if p.key == "bld.graph"))
        del model.metadata_props[:]
        if value is not None:
            text = value(facts) if callable(value) else value
            model.metadata_props.add(key="bld.graph", value=text)
        onnx.save(model, str(path))
        rehash(bundle, name)

    return mutate


def _extra_input(bundle: Path) -> None:
    path = bundle / "decoder.onnx"
    model = onnx.load(str(path))
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT, ["batch"])
    )
    onnx.save(model, str(path))
    rehash(bundle, "decoder")


def _other_classes(facts):
    facts["classes"] = {"count": 3, "null_class": 3}
    return json.dumps(facts)


MISMATCHES = {
    "no classes": (_classes(0), "was built for classes"),
    "fewer classes": (_classes(5), "was built for classes"),
    "more classes": (_classes(11), "was built for classes"),
    "half the steps": (_steps(8), "was built for schedule"),
    "more steps": (_steps(32), "was built for schedule"),
    "other train steps": (_train_steps(64), "was built for schedule"),
    "other schedule": (_set("schedule.name", "cosine"), "was built for schedule"),
    "other latent bits": (_latent(8, 8, 16), "has shape ['batch', 64, 8], but the manifest says"),
    "other latent grid": (_latent(4, 16, 8), "was built for latent"),
    "other image size": (_image(32, 1), "has shape ['batch', 1, 16, 16], but the manifest says"),
    "other channels": (_image(16, 3), "has shape ['batch', 1, 16, 16], but the manifest says"),
    "step files swapped": (_swap("step", "step_guided"), "has inputs"),
    "decoder precisions swapped": (_swap("decoder", "decoder_fp16"), "was built for name"),
    "step precisions swapped": (_swap("step", "step_fp16"), "was built for name"),
    "encoder is the decoder": (_swap("encoder", "decoder"), "has inputs"),
    "other opset": (
        lambda b: edit_manifest(b, lambda d: [g.update(opset=18) for g in d["graphs"].values()]),
        "was built for opset",
    ),
    "facts removed": (_rewrite_metadata("step", None), "records no 'bld.graph' metadata"),
    "facts not json": (_rewrite_metadata("step", "{classes: 3"), "is not valid JSON"),
    "facts of another bundle": (
        _rewrite_metadata("step_guided", _other_classes),
        "was built for classes",
    ),
    "extra graph input": (_extra_input, "has inputs ['bits', 'noise']"),
}


@pytest.mark.parametrize("command", ["sample", "verify"])
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_manifest_that_disagrees_with_its_graphs_is_refused(tiny_bundle, tmp_path, case, command):
    mutate, fragment = MISMATCHES[case]
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    mutate(bundle)
    if command == "sample":
        precision = "fp16" if "precisions" in case else "fp32"
        sample_refused(bundle, tmp_path, fragment, "--precision", precision)
    else:
        verify_refused(bundle, fragment)


def test_verify_probes_what_the_step_graphs_compute(tiny_bundle, tmp_path):
    """Facts rewritten to match an edited manifest still cannot fool the probes."""
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")

    def eight_steps(facts):
        facts["schedule"]["sampling_steps"] = 8
        facts["schedule"]["timesteps"] = _timesteps(facts["schedule"]["train_steps"], 8)
        return json.dumps(facts)

    _steps(8)(bundle)
    for name in GRAPHS:
        _rewrite_metadata(name, eight_steps)(bundle)
    verify_refused(bundle, "does not compute the manifest's schedule: at step")

    bundle = copy_bundle(tiny_bundle, tmp_path / "c")

    def five_classes(facts):
        facts["classes"] = {"count": 5, "null_class": 5}
        return json.dumps(facts)

    _classes(5)(bundle)
    for name in GRAPHS:
        _rewrite_metadata(name, five_classes)(bundle)
    verify_refused(bundle, "accepts class 6: it has more classes than the manifest's 5")


def test_the_intact_bundle_verifies(tiny_bundle):
    result = run("bld-export", "verify", tiny_bundle)
    assert result.returncode == 0, result.stderr
    assert "computes the manifest's schedule" in result.stdout
    assert result.stderr == ""


def test_refusals_leave_previous_output_intact(tiny_bundle, tmp_path, previous_samples):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    flip_byte(bundle, "decoder")
    before = snapshot(previous_samples)
    check_refused(
        run("bld", "sample", bundle, "-o", previous_samples, "--force"),
        "does not match the manifest",
        kept=before,
    )
    assert os.listdir(previous_samples)
