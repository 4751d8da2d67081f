"""TensorRT engines without a GPU: real TensorRT-RTX builds of the tiny bundle, the engine cache
(hits, misses, locks) and every refusal that happens before deserialisation.

TensorRT-RTX builds plans ahead of time on the CPU; nothing here deserialises or runs one
(that needs a GPU: benchmarks/gpu_check.sh). The lean TensorRT 10/11 modules and trtexec lines
are in test_trt_versions.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner

from bld_runtime.engine_cache import (
    BatchProfile,
    CachedEngine,
    EngineCache,
    EngineManifest,
    RuntimeTarget,
    check_plan_header,
    incompatibility,
)
from bld_runtime.errors import ManifestError, StaleEngineError
from bld_runtime.manifest import load_bundle, manifest_graph_facts

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (make test does)")

from bld_engines.builder import BuildOptions, build_bundle
from bld_export.cli import main as bld_export

RTX_VERSION = __import__("tensorrt_rtx").__version__
ALL_GRAPHS = (
    "encoder",
    "decoder",
    "step",
    "step_guided",
    "decoder_fp16",
    "step_fp16",
    "step_guided_fp16",
)


def entries(cache):
    return {e.key.graph + "/" + e.key.precision: e for e in EngineCache(cache).entries()}


def copy_cache(rtx_engines, tmp_path):
    target = tmp_path / "cache"
    shutil.copytree(rtx_engines, target)
    return target


def one(cache, graph) -> CachedEngine:
    (entry,) = [e for e in EngineCache(cache).entries() if e.key.graph == graph]
    return entry


def edited_bundle(tiny_bundle, tmp_path):
    """A copy of tiny_bundle whose bld.json states one class more than its graphs were built
    for (a valid manifest that no longer describes its graphs)."""
    bundle = tmp_path / "edited"
    shutil.copytree(tiny_bundle, bundle)
    path = bundle / "bld.json"
    data = json.loads(path.read_text())
    data["classes"] = {"count": 11, "null_class": 11}
    path.write_text(json.dumps(data))
    return bundle


# --- building --------------------------------------------------------------------------------


def test_every_graph_is_built_fp32_and_fp16_with_manifests(rtx_engines, tiny_bundle):
    found = entries(rtx_engines)
    assert set(found) == {
        "encoder/fp32",
        "decoder/fp32",
        "step/fp32",
        "step_guided/fp32",
        "decoder_fp16/fp16",
        "step_fp16/fp16",
        "step_guided_fp16/fp16",
    }
    graphs = load_bundle(tiny_bundle).manifest.graphs
    store = EngineCache(rtx_engines)
    for entry in found.values():
        k = entry.key
        assert k.graph_sha256 == graphs[k.graph].sha256
        assert (k.flavour, k.version) == ("tensorrt_rtx", RTX_VERSION)
        assert k.profiles == (BatchProfile(1, 2, 4),)
        # by name: numbers differ between versions; RTX needs user allocation for capture
        assert k.flags == ("REQUIRE_USER_ALLOCATION", "STRONGLY_TYPED")
        plan = store.load_plan(entry)  # sha256, size and header all match
        assert plan[:4] == b"vtrt"
        assert tuple(plan[24:28]) == tuple(int(p) for p in RTX_VERSION.split("."))
        assert entry.manifest.inputs == graphs[k.graph].inputs
        recorded = json.loads(entry.manifest.graph_facts)  # what the graph's bld.graph says
        assert recorded == manifest_graph_facts(load_bundle(tiny_bundle).manifest, k.graph)
        raw = json.loads(entry.manifest_path.read_text())
        assert raw["key"]["flags"] == ["REQUIRE_USER_ALLOCATION", "STRONGLY_TYPED"]


def test_int8_engines_are_built_from_the_qdq_step_graphs(tiny_int8_bundle, tmp_path):
    """`bld-export engine --precision int8`: the *_int8 Q/DQ step graphs strongly typed, the
    encoder and decoder fp32 (keyed with their graphs' precision, as the runtime looks them up);
    a bundle without int8 graphs is refused, saying how to make them."""
    cache = tmp_path / "cache"
    args = ["engine", "build", str(tiny_int8_bundle), "-o", str(cache), "--precision", "int8"]
    done = CliRunner().invoke(bld_export, [*args, "--flavour", "tensorrt_rtx", "--batch", "1:2:4"])
    assert done.exit_code == 0, done.output
    found = entries(cache)
    assert set(found) == {"encoder/fp32", "decoder/fp32", "step_int8/int8", "step_guided_int8/int8"}
    graphs = load_bundle(tiny_int8_bundle).manifest.graphs
    for entry in found.values():
        assert entry.key.graph_sha256 == graphs[entry.key.graph].sha256
        assert entry.key.flags == ("REQUIRE_USER_ALLOCATION", "STRONGLY_TYPED")
        assert EngineCache(cache).load_plan(entry)[:4] == b"vtrt"


def test_int8_engines_need_int8_graphs(tiny_bundle, tmp_path):
    with pytest.raises(ManifestError, match="has no 'step_int8' graph, which precision 'int8'"):
        build_bundle(
            tiny_bundle,
            tmp_path / "cache",
            BuildOptions(precision="int8", flavour="tensorrt_rtx"),
        )


def test_rtx_builds_require_user_allocation(tiny_bundle):
    """TensorRT-RTX captures an engine in a CUDA graph only when all its memory is the caller's:
    the real builder config of an RTX build has REQUIRE_USER_ALLOCATION set (the runtime gives
    every context user-managed memory)."""
    import tensorrt_rtx as trt

    from bld_engines.builder import Builder, read_checked_graph
    from bld_runtime.trt_flavours import import_flavour

    bundle = load_bundle(tiny_bundle)
    profiles = (BatchProfile(1, 2, 4),)
    builder = Builder(import_flavour("tensorrt_rtx"), BuildOptions(profiles=profiles))
    spec = bundle.manifest.graphs["step"]
    key = builder.key("step", spec, "fp32", profiles)
    assert "REQUIRE_USER_ALLOCATION" in key.flags
    onnx, _ = read_checked_graph(bundle, "step")
    _builder, _network, config, _parser = builder.configure(
        onnx, str(bundle.graph_path("step")), spec, key
    )
    assert config.get_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION) is True


def test_hardware_compat_is_refused_on_jetson(tiny_bundle, rtx_engines, tmp_path, monkeypatch):
    """TensorRT has no hardware compatibility on Jetson: the builder refuses the option in one
    line, and the backend refuses a hardware-compatible plan before deserialising it."""
    import threading

    from bld_engines.builder import Builder
    from bld_runtime import trt_flavours
    from bld_runtime.backends.base import graph_names
    from bld_runtime.backends.tensorrt import TensorRTBackend
    from bld_runtime.errors import InvalidRequestError

    cache = copy_cache(rtx_engines, tmp_path)
    options = BuildOptions(
        flavour="tensorrt_rtx", hardware_compat="ampere+", profiles=(BatchProfile(1, 2, 4),)
    )
    build_bundle(tiny_bundle, cache, replace(options, graphs=("step",)))  # not on a Jetson
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3\n")
    monkeypatch.setattr(trt_flavours, "JETSON_RELEASE_FILE", release)
    with pytest.raises(
        InvalidRequestError, match="does not support hardware compatibility on Jetson"
    ):
        Builder(trt_flavours.import_flavour("tensorrt_rtx"), options)

    class NeverDeserialise:
        def deserialize_cuda_engine(self, plan):
            raise AssertionError("a hardware-compatible plan reached TensorRT on a Jetson")

    bundle = load_bundle(tiny_bundle)
    backend = object.__new__(TensorRTBackend)
    backend.bundle, backend.manifest, backend.precision = bundle, bundle.manifest, "fp32"
    backend.graphs = {
        kind: type("G", (), {"name": name})() for kind, name in graph_names(bundle, "fp32").items()
    }
    backend.cache, backend.cache_dir = EngineCache(cache), str(cache)
    (hw,) = [e for e in EngineCache(cache).entries() if e.key.hardware_compat == "ampere+"]
    (plain,) = [
        e
        for e in EngineCache(cache).entries()
        if e.key.graph == "step" and e is not hw and e.key.hardware_compat == "none"
    ]
    plain.plan_path.unlink()  # only the hardware-compatible step engine is left to find
    plain.manifest_path.unlink()
    backend.target = RuntimeTarget("tensorrt_rtx", RTX_VERSION, "8.7")
    backend.options = type("O", (), {"trt_rebuild_if_stale": False})()
    backend.flavour = type("F", (), {"name": "tensorrt_rtx"})()
    backend.runtime, backend._engines, backend._lock = NeverDeserialise(), {}, threading.RLock()
    backend._rebuilt = False
    with pytest.raises(StaleEngineError, match="which TensorRT does not support on Jetson"):
        backend.engine("step", 2)


def test_second_build_hits_the_cache(rtx_engines, tiny_bundle, tmp_path):
    cache = copy_cache(rtx_engines, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*/*.plan")}
    results = build_bundle(
        tiny_bundle,
        cache,
        BuildOptions(precision="fp16", flavour="tensorrt_rtx", profiles=(BatchProfile(1, 2, 4),)),
    )
    assert [r.cached for r in results] == [True] * 4
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/*.plan")} == before


def test_changed_profile_or_flag_misses_and_builds_anew(rtx_engines, tiny_bundle, tmp_path):
    cache = copy_cache(rtx_engines, tmp_path)
    base = BuildOptions(flavour="tensorrt_rtx", profiles=(BatchProfile(1, 2, 4),), graphs=("step",))
    for changed in (
        replace(base, profiles=(BatchProfile(1, 3, 4),)),
        replace(base, hardware_compat="ampere+"),
        replace(base, optimization_level=1),
    ):
        (result,) = build_bundle(tiny_bundle, cache, changed)
        assert not result.cached
    assert len(list((cache / "step").glob("*.plan"))) == 4  # the old one is still there
    (again,) = build_bundle(tiny_bundle, cache, base)
    assert again.cached


def test_changed_graph_or_version_is_another_key(rtx_engines):
    entry = one(rtx_engines, "step")
    store = EngineCache(rtx_engines)
    assert store.get(entry.key) is not None
    for changed in (
        replace(entry.key, graph_sha256="0" * 64),
        replace(entry.key, version="1.7.2.0"),
        replace(entry.key, flags=("STRONGLY_TYPED", "VERSION_COMPATIBLE")),
        replace(entry.key, profiles=(BatchProfile(1, 2, 8),)),
    ):
        assert changed.digest() != entry.key.digest()
        assert store.get(changed) is None  # a miss: the builder would build it


def test_parser_errors_name_the_node_and_op(tmp_path, tiny_bundle):
    import onnx
    from onnx import TensorProto, helper

    from bld_engines.builder import Builder
    from bld_engines.errors import EngineBuildError
    from bld_runtime.trt_flavours import import_flavour

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="the_bad_node", domain="example")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example", 1)],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    spec = load_bundle(tiny_bundle).manifest.graphs["step"]
    builder = Builder(import_flavour("tensorrt_rtx"), BuildOptions())
    key = builder.key("step", spec, "fp32", (BatchProfile(1, 1, 1),))
    with pytest.raises(EngineBuildError, match=r"node the_bad_node \(NoSuchOp\)"):
        builder.build(path.read_bytes(), str(path), spec, key)


def test_a_graph_that_does_not_fit_its_bld_json_is_never_built(tiny_bundle, rtx_engines, tmp_path):
    """The builder checks each graph as the runtime loads it (the facts it records in bld.graph
    against bld.json), before TensorRT parses it; a cached engine's recorded facts too."""
    bundle = edited_bundle(tiny_bundle, tmp_path)
    cache = tmp_path / "new"
    options = BuildOptions(
        flavour="tensorrt_rtx", profiles=(BatchProfile(1, 2, 4),), graphs=("step",)
    )
    with pytest.raises(
        ManifestError,
        match=r"graph 'step' \(step.onnx\) was built for classes "
        r'\{"count": 10, "null_class": 10\}, but bld.json '
        r'says \{"count": 11',
    ):
        build_bundle(bundle, cache, options)
    assert list(cache.rglob("*.plan")) == []
    with pytest.raises(
        ManifestError,
        match=r"engine .*\.plan: graph 'step' \(step.onnx\) was "
        r"built for classes",
    ):
        build_bundle(bundle, copy_cache(rtx_engines, tmp_path), options)  # a cache hit
    emitted = run_cli("engine", bundle, "--emit-trtexec", "--graph", "step")
    assert emitted.exit_code == 1 and "was built for classes" in emitted.stderr
    assert emitted.stdout == ""


def test_the_backend_refuses_an_engine_whose_graph_facts_differ(rtx_engines, tiny_bundle, tmp_path):
    """The native backend never reads the ONNX files: it holds bld.json to the facts the
    engine's manifest recorded, before deserialising. (Its set-up needs a GPU; here the
    lookup runs on a backend object given the real cache and bundle.)"""
    import threading

    from bld_runtime.backends.base import graph_names
    from bld_runtime.backends.tensorrt import TensorRTBackend

    bundle = load_bundle(edited_bundle(tiny_bundle, tmp_path))

    class NeverDeserialise:
        def deserialize_cuda_engine(self, plan):
            raise AssertionError("an engine of a mismatched graph reached TensorRT")

    backend = object.__new__(TensorRTBackend)
    backend.bundle, backend.manifest, backend.precision = bundle, bundle.manifest, "fp32"
    backend.graphs = {
        kind: type("G", (), {"name": name})() for kind, name in graph_names(bundle, "fp32").items()
    }
    backend.cache, backend.cache_dir = EngineCache(rtx_engines), str(rtx_engines)
    backend.target = RuntimeTarget("tensorrt_rtx", RTX_VERSION, "8.6")
    backend.options = type("O", (), {"trt_rebuild_if_stale": False})()
    backend.flavour = type("F", (), {"name": "tensorrt_rtx"})()
    backend.runtime, backend._engines, backend._lock = NeverDeserialise(), {}, threading.RLock()
    backend._rebuilt = False
    with pytest.raises(
        ManifestError,
        match=r"engine .*\.plan: graph 'decoder' \(decoder.onnx\) "
        r"was built for classes",
    ):
        backend.engine("decoder", 2)


def test_timing_cache_is_left_alone_by_tensorrt_rtx(tiny_bundle, tmp_path):
    """TensorRT-RTX's timing-cache calls are deprecated no-ops (it times nothing ahead of
    time): the builder does not call them and says so. TensorRT 10/11 load, merge and save
    the file (atomically, under a lock): that path runs only where TensorRT builds (a GPU)."""
    import warnings

    timing = tmp_path / "timing.cache"
    lines = []
    options = BuildOptions(
        flavour="tensorrt_rtx",
        graphs=("step",),
        timing_cache=timing,
        profiles=(BatchProfile(1, 1, 2),),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        build_bundle(tiny_bundle, tmp_path / "a", options, log=lines.append)
    assert any("ignores timing caches" in line for line in lines)
    assert not timing.exists()


def test_two_builders_of_one_key_leave_one_intact_plan(tiny_bundle, tmp_path, subprocess_env):
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "bld_export.cli",
        "engine",
        str(tiny_bundle),
        "-o",
        str(cache),
        "--graph",
        "step",
        "--batch",
        "1:1:2",
        "--flavour",
        "tensorrt_rtx",
    ]
    procs = [
        subprocess.Popen(
            cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    summary = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert summary == ["1 engines ready (0 built, 1 cached)", "1 engines ready (1 built, 0 cached)"]
    store = EngineCache(cache)
    (entry,) = store.entries()
    store.load_plan(entry)
    assert not [p for p in (cache / "step").iterdir() if p.suffix not in (".plan", ".json")]


# --- refusals before deserialisation ---------------------------------------------------------


def test_tampered_plan_is_refused(rtx_engines, tmp_path):
    cache = copy_cache(rtx_engines, tmp_path)
    entry = one(cache, "step")
    data = bytearray(entry.plan_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.plan_path.write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match="does not match its manifest"):
        EngineCache(cache).load_plan(entry)
    with pytest.raises(StaleEngineError, match="does not match its manifest"):
        EngineCache(cache).get(entry.key)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["key"].update(precision="fp16"), "key_digest does not match the key"),
        (lambda m: m["key"]["profiles"][0].update(max=64), "key_digest does not match the key"),
        (lambda m: m.update(plan_sha256="0" * 64), "does not match its manifest"),
        (lambda m: m["key"].update(extra=1), "key: unknown key 'extra'"),
        (lambda m: m.pop("plan_size"), "missing key 'plan_size'"),
        (lambda m: m["key"].update(flags="STRONGLY_TYPED"), "key.flags: expected an array"),
    ],
)
def test_tampered_manifest_is_refused(rtx_engines, tmp_path, edit, message):
    cache = copy_cache(rtx_engines, tmp_path)
    entry = one(cache, "step")
    data = json.loads(entry.manifest_path.read_text())
    edit(data)
    entry.manifest_path.write_text(json.dumps(data))
    with pytest.raises(StaleEngineError, match=message):
        EngineCache(cache).get(entry.key)


def _rewrite_plan(cache, entry, data: bytes) -> CachedEngine:
    """Replace the plan and give its manifest the matching sha256 (a consistent forgery)."""
    import hashlib

    entry.plan_path.write_bytes(data)
    m = json.loads(entry.manifest_path.read_text())
    m.update(plan_sha256=hashlib.sha256(data).hexdigest(), plan_size=len(data))
    entry.manifest_path.write_text(json.dumps(m))
    return one(cache, entry.key.graph)


def test_plan_whose_header_names_another_version_is_refused(rtx_engines, tmp_path):
    cache = copy_cache(rtx_engines, tmp_path)
    entry = one(cache, "step")
    data = bytearray(entry.plan_path.read_bytes())
    data[25] += 1  # the minor version
    forged = _rewrite_plan(cache, entry, bytes(data))
    with pytest.raises(
        StaleEngineError,
        match=r"header names tensorrt_rtx 1\.8\.1\.116, but its "
        r"manifest says 1\.7\.1\.116",
    ):
        EngineCache(cache).load_plan(forged)


def test_plan_of_another_flavour_or_length_is_refused(rtx_engines, tmp_path):
    cache = copy_cache(rtx_engines, tmp_path)
    entry = one(cache, "step")
    data = entry.plan_path.read_bytes()
    with pytest.raises(
        StaleEngineError, match="is a tensorrt plan, but its manifest says tensorrt_rtx"
    ):
        check_plan_header(b"ftrt" + data[4:], "tensorrt_rtx", RTX_VERSION, "plan")
    truncated = _rewrite_plan(cache, entry, data[:-100])
    with pytest.raises(StaleEngineError, match=r"header says .* bytes"):
        EngineCache(cache).load_plan(truncated)


def test_the_backend_checks_before_tensorrt_sees_a_byte(rtx_engines, tmp_path, tiny_bundle):
    """TrtEngine hands TensorRT only what load_plan returned: a refused plan never reaches
    deserialize_cuda_engine (which, without a GPU, we must not call at all)."""
    from bld_runtime.backends.tensorrt import TrtEngine

    cache = copy_cache(rtx_engines, tmp_path)
    entry = one(cache, "step")
    entry.plan_path.write_bytes(entry.plan_path.read_bytes()[:-1] + b"\0")

    class NeverDeserialise:
        def deserialize_cuda_engine(self, plan):
            raise AssertionError("a refused plan reached TensorRT")

    class Owner:
        cache = EngineCache(tmp_path / "cache")
        runtime = NeverDeserialise()

    spec = load_bundle(tiny_bundle).manifest.graphs["step"]
    with pytest.raises(StaleEngineError, match="does not match its manifest"):
        TrtEngine(Owner(), "step", entry, spec)


# --- what the runtime side accepts -----------------------------------------------------------


def test_find_picks_a_fitting_engine_and_explains_refusals(rtx_engines, tiny_bundle):
    graphs = load_bundle(tiny_bundle).manifest.graphs
    store = EngineCache(rtx_engines)
    ampere = RuntimeTarget("tensorrt_rtx", RTX_VERSION, "8.6")
    found = store.find(
        {"step_fp16": graphs["step_fp16"].sha256, "step": graphs["step"].sha256},
        "fp16",
        ampere,
        3,
        "HINT",
    )
    assert found.key.graph == "step_fp16"
    cases = [
        (dict(batch=5), "do not cover batch 5"),
        (dict(target=RuntimeTarget("tensorrt_rtx", RTX_VERSION, "7.5")), "start at sm_80"),
        (
            dict(target=RuntimeTarget("tensorrt_rtx", "1.8.0.1", "8.6")),
            "built by tensorrt_rtx 1.7.1.116, this runtime is 1.8.0.1",
        ),
        (dict(target=RuntimeTarget("tensorrt", "10.16.1.11", "8.6")), "this runtime is tensorrt"),
        (dict(sha="f" * 64), "another version of the graph"),
        (
            dict(target=RuntimeTarget("tensorrt_rtx", RTX_VERSION, "8.6", dla_core=0)),
            "request is for DLA core 0",
        ),
    ]
    for change, message in cases:
        with pytest.raises(StaleEngineError, match=message) as raised:
            store.find(
                {"step": change.get("sha", graphs["step"].sha256)},
                "fp32",
                change.get("target", ampere),
                change.get("batch", 2),
                "HINT",
            )
        assert "rebuild with: HINT" in str(raised.value)


def test_find_without_a_batch_prefers_the_engine_covering_the_largest(
    rtx_engines, tiny_bundle, tmp_path
):
    """What the backend loads with the pipeline: per graph kind the engine covering the largest
    batch (other batch sizes look theirs up when they come)."""
    cache = copy_cache(rtx_engines, tmp_path)
    build_bundle(
        tiny_bundle,
        cache,
        BuildOptions(flavour="tensorrt_rtx", graphs=("step",), profiles=(BatchProfile(1, 1, 2),)),
    )
    sha = load_bundle(tiny_bundle).manifest.graphs["step"].sha256
    store, target = EngineCache(cache), RuntimeTarget("tensorrt_rtx", RTX_VERSION, "8.9")
    assert store.find({"step": sha}, "fp32", target, None, "HINT").key.profiles == (
        BatchProfile(1, 2, 4),
    )
    # With a batch size, the newest engine that covers it.
    assert store.find({"step": sha}, "fp32", target, 1, "HINT").key.profiles == (
        BatchProfile(1, 1, 2),
    )


def test_compatibility_rules():
    from bld_runtime.engine_cache import EngineKey

    key = EngineKey(
        graph="step",
        graph_sha256="a" * 64,
        flavour="tensorrt",
        version="10.3.0.26",
        compute_capabilities=("8.7",),
        hardware_compat="none",
        precision="fp16",
        profiles=(BatchProfile(1, 4, 8),),
        flags=("FP16",),
        dla_core=None,
        optimization_level=None,
        workspace_mib=None,
    )
    orin = RuntimeTarget("tensorrt", "10.3.0.26", "8.7")
    assert incompatibility(key, orin) is None
    assert "built for sm_87, this GPU is sm_90" in incompatibility(
        key, replace(orin, compute_capability="9.0")
    )
    assert "not built version-compatible" in incompatibility(
        key, replace(orin, version="10.7.0.23")
    )
    vc = replace(key, flags=("FP16", "VERSION_COMPATIBLE"))
    assert incompatibility(vc, replace(orin, version="10.7.0.23")) is None
    assert incompatibility(vc, replace(orin, version="11.4.0.106")) is not None  # new major
    assert incompatibility(vc, replace(orin, version="10.2.0.1")) is not None  # older
    anywhere = replace(key, compute_capabilities=(), hardware_compat="ampere+")
    assert incompatibility(anywhere, replace(orin, compute_capability="12.0")) is None
    assert "Ampere and later" in incompatibility(anywhere, replace(orin, compute_capability="7.5"))


# --- the CLI ---------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(bld_export, [str(a) for a in args])


def test_cli_builds_lists_and_inspects(tiny_bundle, rtx_engines, tmp_path):
    cache = tmp_path / "cli-cache"
    result = run_cli(
        "engine",
        tiny_bundle,
        "-o",
        cache,
        "--graph",
        "step",
        "--batch",
        "1:1:2",
        "--flavour",
        "tensorrt_rtx",
    )
    assert result.exit_code == 0, result.output
    assert "1 engines ready (1 built, 0 cached)" in result.output
    listed = run_cli("engine", "list", rtx_engines)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(" ok ") >= 7 or listed.output.count("│ ok") >= 7
    shown = run_cli("engine", "inspect", rtx_engines / "step")
    assert shown.exit_code == 0, shown.output
    assert '"graph": "step"' in shown.output and "check: ok" in shown.output


def test_cli_import_takes_a_plan_and_reads_its_header(tiny_bundle, rtx_engines, tmp_path):
    plan = tmp_path / "step.plan"
    shutil.copy(one(rtx_engines, "step").plan_path, plan)
    cache = tmp_path / "imported"
    result = run_cli(
        "engine",
        "import",
        plan,
        "--bundle",
        tiny_bundle,
        "--graph",
        "step",
        "-o",
        cache,
        "--batch",
        "1:2:4",
    )
    assert result.exit_code == 0, result.output
    (entry,) = EngineCache(cache).entries()
    assert entry.manifest.source == "trtexec"
    assert (entry.key.flavour, entry.key.version) == ("tensorrt_rtx", RTX_VERSION)
    EngineCache(cache).load_plan(entry)
    other = run_cli(
        "engine",
        "import",
        plan,
        "--bundle",
        tiny_bundle,
        "--graph",
        "step",
        "-o",
        cache,
        "--onnx",
        tiny_bundle / "decoder.onnx",
    )
    assert other.exit_code == 1
    assert "is not graph 'step' of bundle" in other.stderr
    same = run_cli(
        "engine",
        "import",
        plan,
        "--bundle",
        tiny_bundle,
        "--graph",
        "step",
        "-o",
        cache,
        "--batch",
        "1:2:4",
        "--onnx",
        tiny_bundle / "step.onnx",
    )
    assert same.exit_code == 0, same.output
    edited = run_cli(
        "engine",
        "import",
        plan,
        "--bundle",
        edited_bundle(tiny_bundle, tmp_path),
        "--graph",
        "step",
        "-o",
        tmp_path / "other-cache",
    )
    assert edited.exit_code == 1 and "was built for classes" in edited.stderr
    assert not (tmp_path / "other-cache").exists()
    junk = tmp_path / "junk.plan"
    junk.write_bytes(b"not a plan at all, but long enough for a header")
    bad = run_cli("engine", "import", junk, "--bundle", tiny_bundle, "--graph", "step", "-o", cache)
    assert bad.exit_code == 1 and "is not a TensorRT plan" in bad.stderr


def test_cli_refuses_a_stale_cache_and_rebuilds_when_asked(tiny_bundle, tmp_path):
    cache = tmp_path / "cache"
    args = [
        "engine",
        tiny_bundle,
        "-o",
        cache,
        "--graph",
        "step",
        "--batch",
        "1:1:2",
        "--flavour",
        "tensorrt_rtx",
    ]
    assert run_cli(*args).exit_code == 0
    (plan,) = (cache / "step").glob("*.plan")
    plan.write_bytes(plan.read_bytes()[:-10])
    refused = run_cli(*args)
    assert refused.exit_code == 1
    assert re.search(r"does not match its manifest|its manifest says \d+", refused.stderr)
    assert "--rebuild-if-stale" in refused.stderr
    rebuilt = run_cli(*args, "--rebuild-if-stale")
    assert rebuilt.exit_code == 0, rebuilt.output
    (entry,) = EngineCache(cache).entries()
    EngineCache(cache).load_plan(entry)


def test_manifest_roundtrip_is_strict(rtx_engines):
    entry = one(rtx_engines, "decoder")
    text = entry.manifest_path.read_text()
    parsed = EngineManifest.from_json(text, "m.json")
    assert parsed == entry.manifest and parsed.to_json() == text
