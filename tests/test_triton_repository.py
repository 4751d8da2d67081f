"""`bld-export triton`: the repositories it writes, checked without a server.

Every config is parsed back with Triton's model_config.proto (tritonclient's copy) and held to
Triton's load rules by bld_serving.configs.check_config. The in-process layout also runs on a
real tritonserver (test_triton.py); the GPU graph layout (onnxruntime_onnx, tensorrt_plan)
cannot run here, so these tests are what checks it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from bld_runtime.engine_cache import BatchProfile, EngineCache, EngineKey
from bld_runtime.files import sha256_file
from bld_runtime.manifest import load_bundle, manifest_graph_facts
from bld_runtime.trt_flavours import PLAN_MAGIC
from bld_serving import configs
from bld_serving.configs import Serving
from bld_serving.errors import ServingError
from bld_serving.plans import ANY_GPU, Plans, collect_plans, from_engine_cache
from bld_serving.repository import check_repository, write_repository


def _config(repo: Path, model: str):
    config = pb.ModelConfig()
    text_format.Parse((repo / model / "config.pbtxt").read_text(), config)
    return config


def _params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_in_process_layout(tiny_bundle, tmp_path):
    repo = tmp_path / "repo"
    serving = Serving(
        max_batch=8,
        queue_delay_us=500,
        instances=2,
        threads=1,
        python_env="/opt/bld-env",
        preview_every=2,
    )
    assert write_repository(tiny_bundle, repo, serving) == ["bld", "bld_stream"]
    manifest = load_bundle(tiny_bundle).manifest
    for name, decoupled in (("bld", False), ("bld_stream", True)):
        config = _config(repo, name)
        assert config.backend == "python" and config.max_batch_size == 8
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, g.kind) for g in config.instance_group] == [
            (2, pb.ModelInstanceGroup.KIND_CPU)
        ]
        assert config.model_transaction_policy.decoupled == decoupled
        params = _params(config)
        assert params["EXECUTION_ENV_PATH"] == "/opt/bld-env"
        assert params["bld_backend"] == "cpu" and params["bld_threads"] == "1"
        assert params["bld_latent"] == "8x8x8" and params["bld_classes"] == "10"
        assert params.get("bld_preview_every") == ("2" if decoupled else None)
        inputs = {t.name: t for t in config.input}
        assert list(inputs["seed"].dims) == [1] and not inputs["seed"].optional
        assert inputs["mask"].optional and inputs["mask"].allow_ragged_batch
        outputs = {t.name: list(t.dims) for t in config.output}
        assert outputs["image"] == [16, 16, 1] and outputs["bits"] == [64]
        # the bundle is copied with its manifest and hashes, and loads verified
        copy = load_bundle(repo / name / "1" / "bundle")
        copy.verify_files()
        assert copy.manifest == manifest
        assert (repo / name / "1" / "model.py").read_text().startswith('"""Triton Python')


def test_gpu_backends_use_gpu_instances(tiny_bundle, tmp_path):
    write_repository(
        tiny_bundle, tmp_path / "repo", Serving(backend="tensorrt-ep", trt_cache="/cache/trt")
    )
    config = _config(tmp_path / "repo", "bld")
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert _params(config)["bld_backend"] == "tensorrt-ep"
    assert _params(config)["bld_trt_cache"] == "/cache/trt"


def _check_graph_models(repo: Path, bundle: Path, precision="fp32"):
    manifest = load_bundle(bundle).manifest
    for role in ("step", "step_guided", "decoder"):
        own = precision == "fp16" or (precision == "int8" and role != "decoder")
        graph = manifest.graphs[f"{role}_{precision}" if own else role]
        config = _config(repo, f"bld_{role}")
        assert _params(config)["bld_sha256"] == graph.sha256
        assert [t.name for t in config.input] == [t.name for t in graph.inputs]
        for tensor, spec in zip(config.input, graph.inputs, strict=True):
            if len(spec.shape) == 1:  # a per-row scalar: dims [1], reshaped to []
                assert list(tensor.dims) == [1] and tensor.HasField("reshape")
                assert list(tensor.reshape.shape) == []
            else:
                assert list(tensor.dims) == list(spec.shape[1:])
                assert not tensor.HasField("reshape")
        assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    bls = _config(repo, "bld")
    assert bls.backend == "python"
    assert bls.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert {k: v for k, v in _params(bls).items() if k.startswith("bld_model_")} == {
        "bld_model_step": "bld_step",
        "bld_model_step_guided": "bld_step_guided",
        "bld_model_decoder": "bld_decoder",
    }
    assert (repo / "bld" / "1" / "pipeline_model.py").is_file()


def test_graph_layout_with_onnxruntime_and_the_tensorrt_accelerator(tiny_bundle, tmp_path):
    repo = tmp_path / "repo"
    names = write_repository(
        tiny_bundle,
        repo,
        Serving(backend="tensorrt-ep", precision="fp16", trt_cache="/cache/trt"),
        graphs=True,
    )
    assert sorted(names) == ["bld", "bld_decoder", "bld_step", "bld_step_guided"]
    _check_graph_models(repo, tiny_bundle, "fp16")
    step = _config(repo, "bld_step")
    assert step.platform == "onnxruntime_onnx"
    graph = load_bundle(tiny_bundle).manifest.graphs["step_fp16"]
    assert sha256_file(repo / "bld_step" / "1" / "model.onnx") == graph.sha256
    (trt,) = step.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert dict(trt.parameters) == {
        "precision_mode": "FP16",
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": "/cache/trt",
        "max_workspace_size_bytes": str(1 << 30),
    }


def _engine(
    cache: Path,
    graph: str,
    manifest,
    ccs=("8.6",),
    version="10.3.0.26",
    precision="fp32",
    profiles=((1, 16, 64),),
    built_from=None,
    **key,
) -> Path:
    """One engine cache entry, written by the engine cache itself (EngineCache.put), keyed by
    the graph's sha256 and the facts it records; returns its manifest's path. The plan is a
    stand-in with a TensorRT plan header (Triton deserialises plans; tests cannot)."""
    name = built_from or graph
    spec = manifest.graphs[name]
    fields = dict(
        graph=name,
        graph_sha256=spec.sha256,
        flavour="tensorrt",
        version=version,
        compute_capabilities=tuple(ccs),
        hardware_compat="none",
        precision=precision,
        profiles=tuple(BatchProfile(*p) for p in profiles),
        flags=(),
        dla_core=None,
        optimization_level=None,
        workspace_mib=None,
    )
    engine_key = EngineKey(**{**fields, **key})
    body = f"{graph}@{','.join(ccs) or 'any'}".encode()
    plan = (
        PLAN_MAGIC[engine_key.flavour]
        + bytes(12)
        + struct.pack("<Q", 28 + len(body))
        + bytes(int(p) for p in version.split("."))
        + body
    )
    # filed under `graph`, whatever it was built from
    entry = EngineCache(cache).put(
        engine_key,
        plan,
        spec.inputs,
        spec.outputs,
        json.dumps(manifest_graph_facts(manifest, name)),
        "builder",
        "test",
    )
    if built_from is None:
        return entry.manifest_path
    folder = cache / graph
    folder.mkdir(parents=True, exist_ok=True)
    for path in (entry.plan_path, entry.manifest_path):
        path.rename(folder / path.name)
    return folder / entry.manifest_path.name


def _engine_cache(tmp_path: Path, bundle: Path, ccs=("8.6", "8.7")) -> Path:
    """Plans of every graph (the encoder too, which sampling does not use), one per cc."""
    cache = tmp_path / "engines"
    manifest = load_bundle(bundle).manifest
    for graph in ("step", "step_guided", "decoder", "encoder"):
        for cc in ccs:
            _engine(cache, graph, manifest, (cc,))
    return cache


def test_tensorrt_plans_per_compute_capability_from_an_engine_cache(tiny_bundle, tmp_path):
    cache = _engine_cache(tmp_path, tiny_bundle)
    by_hand = next((cache / "decoder").glob("*.plan"))
    plans = collect_plans(tiny_bundle, "fp32", 16, cache, (f"decoder@9.0={by_hand}",))
    assert sorted(plans.by_role) == ["decoder", "step", "step_guided"]  # not the encoder
    assert sorted(plans.by_role["decoder"]) == ["8.6", "8.7", "9.0"]
    assert plans.tensorrt_version == "10.3.0.26"
    repo = tmp_path / "repo"
    write_repository(tiny_bundle, repo, Serving(backend="tensorrt"), plans=plans)
    _check_graph_models(repo, tiny_bundle)
    step = _config(repo, "bld_step")
    assert step.platform == "tensorrt_plan"
    assert dict(step.cc_model_filenames) == {"8.6": "model.sm86.plan", "8.7": "model.sm87.plan"}
    assert step.default_model_filename == "model.sm87.plan"
    assert _params(step)["bld_tensorrt_version"] == "10.3.0.26"
    assert (repo / "bld_step" / "1" / "model.sm87.plan").read_bytes() == plans.by_role["step"][
        "8.7"
    ].read_bytes()

    with pytest.raises(
        ServingError, match="no TensorRT plan for step, step_guided, decoder at fp16"
    ):
        collect_plans(tiny_bundle, "fp16", 16, cache, ())
    for bad in ("step=x.plan", "step@86=x.plan", f"encoder@8.6={by_hand}", "step@8.6=missing.plan"):
        with pytest.raises(ServingError, match="--plan"):
            collect_plans(tiny_bundle, "fp32", 16, cache, (bad,))


def test_int8_repositories(tiny_int8_bundle, tmp_path):
    """--precision int8: the runtime's cpu backend in the Python models, or TensorRT plans of the
    *_int8 step graphs and the fp32 decoder (keyed as bld-export engine keys them); the
    onnxruntime GPU backends refuse it, as the runtime does."""
    repo = tmp_path / "cpu"
    write_repository(tiny_int8_bundle, repo, Serving(precision="int8"))
    assert _params(_config(repo, "bld"))["bld_precision"] == "int8"
    assert (repo / "bld" / "1" / "bundle" / "step_int8.onnx").is_file()
    for backend in ("cuda", "tensorrt-ep"):
        with pytest.raises(
            ServingError,
            match=f"^--precision int8 is served with --backend cpu or tensorrt, not {backend}$",
        ):
            write_repository(
                tiny_int8_bundle, tmp_path / backend, Serving(backend=backend, precision="int8")
            )
    manifest = load_bundle(tiny_int8_bundle).manifest
    cache = tmp_path / "engines"
    for graph in ("step_int8", "step_guided_int8"):
        _engine(cache, graph, manifest, ("8.9",), precision="int8")
    _engine(cache, "decoder", manifest, ("8.9",))
    _engine(cache, "decoder", manifest, ("9.0",), precision="int8")  # passed over
    plans = collect_plans(tiny_int8_bundle, "int8", 16, cache)
    assert {role: sorted(by_cc) for role, by_cc in plans.by_role.items()} == {
        "step": ["8.9"],
        "step_guided": ["8.9"],
        "decoder": ["8.9"],
    }
    repo = tmp_path / "trt"
    write_repository(
        tiny_int8_bundle, repo, Serving(backend="tensorrt", precision="int8"), plans=plans
    )
    _check_graph_models(repo, tiny_int8_bundle, "int8")
    with pytest.raises(ServingError, match=r"precision fp16 needs \(export with --fp16\)$"):
        collect_plans(tiny_int8_bundle, "fp16", 16, cache)


def test_engine_cache_plans_that_cannot_serve_are_passed_over(tiny_bundle, tmp_path):
    """Only plans of these very graphs, flavour tensorrt, the repository's precision, on the
    GPU, covering every batch Triton can form, intact, from one TensorRT version."""
    manifest = load_bundle(tiny_bundle).manifest
    cache = tmp_path / "engines"
    graphs = {role: role for role in ("step", "step_guided", "decoder")}
    good = {role: _engine(cache, role, manifest, ("8.9",)) for role in graphs}
    any_gpu = _engine(cache, "step", manifest, (), hardware_compat="ampere+")
    _engine(cache, "decoder", manifest, ("8.6",), flavour="tensorrt_rtx")
    _engine(cache, "decoder", manifest, ("8.7",), dla_core=0)
    _engine(cache, "decoder", manifest, ("7.5",), profiles=((1, 4, 8),))
    _engine(cache, "decoder", manifest, ("9.0",), precision="fp16")
    _engine(cache, "decoder", manifest, ("8.0",), built_from="encoder")
    wrong_facts = _engine(cache, "decoder", manifest, ("6.1",))
    entry = json.loads(wrong_facts.read_text())
    entry["graph_facts"] = entry["graph_facts"].replace('"count": 10', '"count": 11')
    wrong_facts.write_text(json.dumps(entry))
    edited = _engine(cache, "decoder", manifest, ("10.0",))
    entry = json.loads(edited.read_text())
    entry["key"]["compute_capabilities"] = ["12.0"]
    edited.write_text(json.dumps(entry))

    plans, reasons = from_engine_cache(cache, manifest, graphs, "fp32", 16)
    assert plans.by_role == {
        "step": {"8.9": good["step"].with_suffix(".plan"), ANY_GPU: any_gpu.with_suffix(".plan")},
        "step_guided": {"8.9": good["step_guided"].with_suffix(".plan")},
        "decoder": {"8.9": good["decoder"].with_suffix(".plan")},
    }
    text = "\n".join(reasons)
    for why in (
        "it is a tensorrt_rtx plan",
        "it runs on DLA core 0",
        "do not cover batch 9",
        "it is fp16, the repository is fp32",
        "filed under decoder but built from encoder",
        'was built for classes {"count": 11',
        "key_digest does not match the key (the manifest was edited)",
    ):
        assert why in text, why
    assert len(reasons) == 7
    plans, _ = from_engine_cache(cache, manifest, graphs, "fp32", 8)  # batches 1..8 covered
    assert sorted(plans.by_role["decoder"]) == ["7.5", "8.9"]

    repo = tmp_path / "repo"
    write_repository(
        tiny_bundle,
        repo,
        Serving(backend="tensorrt"),
        plans=collect_plans(tiny_bundle, "fp32", 16, cache),
    )
    step = _config(repo, "bld_step")
    assert step.default_model_filename == "model.plan"  # the hardware-compatible plan
    assert dict(step.cc_model_filenames) == {"8.9": "model.sm89.plan"}

    # a plan altered after it was built; then two TensorRT versions in one cache
    plan = any_gpu.with_suffix(".plan")
    plan.write_bytes(plan.read_bytes() + b"x")
    # (the size check may name the sizes instead: both say the plan is not its manifest's)
    with pytest.raises(ServingError, match=r"does not match its manifest|its manifest says \d+"):
        collect_plans(tiny_bundle, "fp32", 16, cache)
    plan.unlink()
    any_gpu.unlink()
    _engine(cache, "step", manifest, ("8.9",), version="10.8.0.43")
    with pytest.raises(
        ServingError,
        match=r"holds plans of TensorRT 10\.3\.0\.26, 10\.8\.0\.43; pass --tensorrt-version",
    ):
        collect_plans(tiny_bundle, "fp32", 16, cache)
    with pytest.raises(ServingError, match="no TensorRT plan for step_guided, decoder"):
        collect_plans(tiny_bundle, "fp32", 16, cache, tensorrt_version="10.8.0.43")
    assert (
        collect_plans(tiny_bundle, "fp32", 16, cache, tensorrt_version="10.3.0.26").tensorrt_version
        == "10.3.0.26"
    )


def test_check_config_enforces_triton_load_rules(tiny_bundle, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_bundle, repo, Serving(backend="cuda"), graphs=True)
    config = _config(repo, "bld_step")
    configs.check_config(config, "ok", {"model.onnx"})

    def fails(change, files, message):
        broken = pb.ModelConfig()
        broken.CopyFrom(config)
        change(broken)
        with pytest.raises(ServingError, match=message):
            configs.check_config(broken, "bld_step/config.pbtxt", files)

    fails(lambda c: c.input[0].reshape.SetInParent(), {"model.onnx"}, "reshaped")
    fails(lambda c: None, {"other.onnx"}, "model.onnx is missing")
    fails(lambda c: setattr(c, "max_batch_size", 0), {"model.onnx"}, "max_batch_size")
    fails(lambda c: c.input[0].dims.append(-1), {"model.onnx"}, "positive dims")
    fails(lambda c: setattr(c, "backend", "python"), {"model.onnx"}, "exactly one")

    def plan(c):
        c.platform = "tensorrt_plan"
        c.cc_model_filenames["8.6"] = "model.sm86.plan"

    fails(plan, {"model.onnx"}, r"cc_model_filenames\['8.6'\]")

    with pytest.raises(ServingError, match="not a valid Triton model config"):
        configs.parse('name: "x"\nmax_batch_sise: 4\n', "bad.pbtxt")
    (repo / "bld_step" / "config.pbtxt").write_text(
        (repo / "bld_step" / "config.pbtxt")
        .read_text()
        .replace('name: "bld_step"', 'name: "other"')
    )
    with pytest.raises(ServingError, match="Triton needs them equal"):
        check_repository(repo)


def test_bad_options_are_refused_and_leave_nothing(tiny_bundle, tmp_path):
    repo = tmp_path / "repo"
    for serving, message in (
        (Serving(max_batch=65), "above the bundle's max_batch of 64"),
        (Serving(instances=0), "--instances must be >= 1"),
        (Serving(python_env="env"), "must be an absolute path"),
        (Serving(backend="tpu"), "--backend must be one of"),
    ):
        with pytest.raises(ServingError, match=message):
            write_repository(tiny_bundle, repo, serving)
    assert not repo.exists() and list(tmp_path.iterdir()) == []
    write_repository(tiny_bundle, repo)
    with pytest.raises(ServingError, match="exists and is not empty"):
        write_repository(tiny_bundle, repo)
    write_repository(tiny_bundle, repo, Serving(max_batch=4), force=True)
    assert _config(repo, "bld").max_batch_size == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".repo.lock", "repo"]

    # a repository is replaced whole or not at all: a failure while writing keeps the old one
    gone = Plans()
    for role in ("step", "step_guided", "decoder"):
        gone.add(role, "8.6", tmp_path / "deleted.plan")
    with pytest.raises(FileNotFoundError):
        write_repository(tiny_bundle, repo, Serving(backend="tensorrt"), plans=gone, force=True)
    assert _config(repo, "bld").max_batch_size == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".repo.lock", "repo"]


def test_bld_export_triton_cli(tiny_bundle, tmp_path, subprocess_env):
    def run(*args):
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "from bld_export.cli import main; main()",
                "triton",
                *map(str, args),
            ],
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=300,
        )

    ok = run(
        tiny_bundle,
        "-o",
        tmp_path / "repo",
        "--max-batch",
        "4",
        "--instances",
        "2",
        "--queue-delay-us",
        "100",
        "--python-env",
        "/env",
    )
    assert ok.returncode == 0, ok.stderr
    assert "models bld, bld_stream" in ok.stdout
    config = _config(tmp_path / "repo", "bld")
    assert (config.max_batch_size, config.instance_group[0].count) == (4, 2)
    bad = run(tiny_bundle, "-o", tmp_path / "repo2", "--backend", "tensorrt")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: no TensorRT plan for step, step_guided, decoder at fp32 (build them with "
        "bld-export engine and pass --engine-cache, or pass --plan GRAPH@CC=FILE)"
    ]


def test_version_compatible_plans_need_the_tensorrt_backend_flag(tiny_bundle, tmp_path):
    """Triton's TensorRT backend loads a version-compatible plan only when started with
    --backend-config=tensorrt,version-compatible=true: the graph models record it, the local
    server passes it, and `bld-export triton` prints it."""
    from bld_serving.local_server import LocalTriton
    from bld_serving.plans import VERSION_COMPATIBLE_ARG
    from bld_serving.repository import server_args

    manifest = load_bundle(tiny_bundle).manifest
    plain, vc = tmp_path / "plain", tmp_path / "vc"
    for graph in ("step", "step_guided", "decoder"):
        _engine(plain, graph, manifest)
        _engine(vc, graph, manifest, flags=("STRONGLY_TYPED", "VERSION_COMPATIBLE"))
    for cache, expected in ((plain, []), (vc, [VERSION_COMPATIBLE_ARG])):
        plans = collect_plans(tiny_bundle, "fp32", 16, cache, ())
        assert plans.version_compatible == bool(expected)
        repo = tmp_path / f"repo-{cache.name}"
        write_repository(tiny_bundle, repo, Serving(backend="tensorrt"), plans=plans)
        assert server_args(repo) == expected
        assert ("bld_version_compatible" in _params(_config(repo, "bld_step"))) == bool(expected)
        server = LocalTriton.__new__(LocalTriton)  # only its command line is looked at
        server.install = type("I", (), {"server": "tritonserver", "backends": "/backends"})()
        server.repository, server.extra_args = repo, []
        server.http_port = server.grpc_port = server.metrics_port = 0
        assert (VERSION_COMPATIBLE_ARG in server.command()) == bool(expected)
    assert VERSION_COMPATIBLE_ARG == "--backend-config=tensorrt,version-compatible=true"

    done = subprocess.run(
        [sys.executable, "-c", "from bld_export.cli import main; main()", "triton"]
        + [str(tiny_bundle), "-o", str(tmp_path / "cli"), "--backend", "tensorrt"]
        + ["--engine-cache", str(vc), "--max-batch", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        f"serve it with: tritonserver --model-repository {tmp_path / 'cli'} "
        f"{VERSION_COMPATIBLE_ARG}"
    )


def test_every_bls_request_asks_for_cpu_memory():
    """The BLS model reads its graph models' outputs with as_numpy(), which refuses GPU
    tensors: every InferenceRequest it makes goes through graph_request, which asks for CPU
    memory (Triton's preferred_memory). The request's construction runs on a real
    tritonserver in test_triton.py (the GPU layout's BLS test)."""
    import ast

    source = (
        Path(__file__).resolve().parents[1] / "serving" / "bld_serving" / "models" / "bls_model.py"
    )
    tree = ast.parse(source.read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "InferenceRequest"
    ]
    assert len(calls) == 1
    keywords = {k.arg: ast.unparse(k.value) for k in calls[0].keywords}
    assert keywords["preferred_memory"] == "cpu_memory()"
    (cpu_memory,) = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "cpu_memory"
    ]
    assert "pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)" in ast.unparse(
        cpu_memory
    )
