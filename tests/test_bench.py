"""`bld bench`: the JSON report's schema, the A B A B order, and what its figures must satisfy.

No timing assertions: how fast things are is the benchmark's business (benchmarks/), not a
test's. One small run (tiny bundle, batches 1 and 2, 1 warm-up + 2 timed rounds, runtime and
eager PyTorch) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import entry_points
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from bld_bench import IDLE_SECONDS, core, machine
from bld_bench import report as bench_report
from bld_runtime.cli import cli

jsonschema = pytest.importorskip("jsonschema")

WARMUP, ITERS, BATCHES = 1, 2, (1, 2)

_num = {"type": "number", "minimum": 0}
_num_or_null = {"type": ["number", "null"], "minimum": 0}
_int_or_null = {"type": ["integer", "null"], "minimum": 0}


def _obj(properties: dict, required=None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


_stats = _obj(dict.fromkeys(("min", "mean", "p50", "p90", "p99", "max"), _num))
_stage = _obj(
    {
        **dict.fromkeys(("min", "mean", "p50", "p90", "p99", "max"), _num),
        "total_share": {"type": "number", "minimum": 0, "maximum": 1},
    }
)

# The stable schema of `bld bench --json` (documented in bld_bench/core.py).
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_obj(
        {
            "schema": {"const": "bld-bench/1"},
            "bundle": _obj(
                {
                    "path": {"type": "string"},
                    "image": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 3,
                        "maxItems": 3,
                    },
                    "latent": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                    "steps": {"type": "integer", "minimum": 1},
                    "classes": {"type": "integer", "minimum": 0},
                    "step_graph": {
                        "enum": ["step", "step_guided", "step_fp16", "step_guided_fp16"]
                    },
                    "step_flops": _int_or_null,
                    "decoder_flops": _int_or_null,
                }
            ),
            "settings": _obj(
                {
                    "backends": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "batches": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 1,
                    },
                    "warmup": {"type": "integer", "minimum": 0},
                    "iters": {"type": "integer", "minimum": 1},
                    "threads": {"type": "integer", "minimum": 1},
                    "guidance": _num,
                    "temperature": {"type": "number", "exclusiveMinimum": 0},
                    "seed": {"type": "integer", "minimum": 0},
                    "precision": {"enum": ["fp32", "fp16", "bf16", "int8"]},
                    "thread_pool": {"enum": ["session", "shared"]},
                    "pin_threads": {"type": "boolean"},
                    "idle": {"type": "number", "minimum": 0},
                }
            ),
            "machine": _obj(
                {
                    "platform": {"type": "string"},
                    "processor": {"type": ["string", "null"]},
                    "logical_cores": {"type": ["integer", "null"], "minimum": 1},
                    "usable_cores": {"type": "integer", "minimum": 1},
                    "python": {"type": "string"},
                    "numpy": {"type": "string"},
                    "onnxruntime": {"type": "string"},
                    "isa": {"type": "array", "items": {"type": "string"}},
                    "rss_scope": {"enum": ["run", "process"]},
                    "draws": {"enum": ["compiled", "numpy"]},
                }
            ),
            "gemm_peak": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "gflops": {"type": "number", "exclusiveMinimum": 0},
                            "size": {"type": "integer", "minimum": 1},
                            "threads": {"type": "integer", "minimum": 1},
                            "engines": {
                                "type": "array",
                                "minItems": 1,
                                "items": _obj(
                                    {
                                        "engine": {"enum": ["numpy", "onnxruntime"]},
                                        "gflops": {"type": "number", "exclusiveMinimum": 0},
                                        "threads": {"type": "integer", "minimum": 1},
                                    }
                                ),
                            },
                        }
                    ),
                ]
            },
            "backends": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "kind": {"enum": ["runtime", "torch"]},
                        "precision": {"enum": ["fp32", "fp16", "bf16", "int8"]},
                        "available": {"type": "boolean"},
                        "reason": {"type": ["string", "null"]},
                        "threads": {"type": ["integer", "null"], "minimum": 1},
                        "load_seconds": _num_or_null,
                        "load_rss_bytes": {"type": ["integer", "null"]},
                    }
                ),
            },
            "order": {
                "type": "array",
                "items": _obj(
                    {
                        "backend": {"type": "string"},
                        "batch": {"type": "integer", "minimum": 1},
                        "round": {"type": "integer", "minimum": 0},
                        "warmup": {"type": "boolean"},
                    }
                ),
            },
            "baseline": {"type": ["string", "null"]},
            "results": {
                "type": "array",
                "items": _obj(
                    {
                        "backend": {"type": "string"},
                        "batch": {"type": "integer", "minimum": 1},
                        "runs": {"type": "integer", "minimum": 1},
                        "latency": _stats,
                        "images_per_second": {"type": "number", "exclusiveMinimum": 0},
                        "stages": _obj(
                            dict.fromkeys(
                                ("initial", "step_model", "step_sampling", "decode"), _stage
                            )
                        ),
                        "per_step": {
                            "type": "array",
                            "minItems": 1,
                            "items": _obj(
                                {
                                    "step": {"type": "integer", "minimum": 0},
                                    "model_p50": _num,
                                    "sampling_p50": _num,
                                }
                            ),
                        },
                        "overhead_share": {"type": "number", "minimum": 0, "maximum": 1},
                        "step_gflops_per_second": _num_or_null,
                        "gemm_peak_share": _num_or_null,
                        "peak_rss_bytes": _int_or_null,
                        "device_memory_bytes": _int_or_null,
                        "speedup": _num_or_null,
                        "step_speedup": _num_or_null,
                    }
                ),
            },
        }
    ),
}


def installed() -> bool:
    """The `bench` command and the torch contenders are entry points: they need an install."""
    commands = {ep.name for ep in entry_points(group="bld.commands")}
    return "bench" in commands and "torch" in core.plugin_backends()


def bld(*args):
    """`bld ARGS` as a user runs it: through the CLI group and its entry points."""
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def report(tiny_bundle, tiny_run):
    if not installed():
        pytest.skip(
            "bld is not installed (pip install -e '.[train,dev]'), so the "
            "bld.commands / bld.bench_backends entry points do not exist"
        )
    result = bld(
        "bench",
        tiny_bundle,
        "--run",
        tiny_run,
        "--backend",
        "cpu",
        "--backend",
        "torch",
        "--batch",
        ",".join(map(str, BATCHES)),
        "--warmup",
        WARMUP,
        "--iters",
        ITERS,
        "--threads",
        1,
        "--json",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_report_matches_the_schema(report):
    jsonschema.validate(report, SCHEMA)
    assert report["baseline"] == "torch"
    assert {(r["backend"], r["batch"]) for r in report["results"]} == {
        (name, b) for name in ("cpu", "torch") for b in BATCHES
    }
    for r in report["results"]:
        assert r["runs"] == ITERS
        assert len(r["per_step"]) == report["bundle"]["steps"]


def test_backends_run_interleaved(report):
    expected = [
        {"backend": name, "batch": b, "round": i, "warmup": i < WARMUP}
        for b in BATCHES
        for i in range(WARMUP + ITERS)
        for name in ("cpu", "torch")
    ]
    assert report["order"] == expected


def test_overhead_and_stage_shares_are_fractions(report):
    for r in report["results"]:
        assert 0.0 <= r["overhead_share"] <= 1.0
        shares = [s["total_share"] for s in r["stages"].values()]
        assert all(0.0 <= s <= 1.0 for s in shares)
        assert sum(shares) <= 1.0 + 1e-9  # the stages are disjoint parts of the total
        model = r["stages"]["step_model"]["total_share"] + r["stages"]["decode"]["total_share"]
        assert r["overhead_share"] == pytest.approx(1.0 - model)


def test_percentiles_are_ordered(report):
    for r in report["results"]:
        for s in [r["latency"], *r["stages"].values()]:
            assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
            assert s["min"] <= s["mean"] <= s["max"]


def test_ratios_and_roofline_figures_are_consistent(report):
    peak = report["gemm_peak"]["gflops"]
    for r in report["results"]:
        if r["backend"] == "torch":
            assert r["speedup"] == pytest.approx(1.0)
        step = r["stages"]["step_model"]["p50"]
        flops = report["bundle"]["step_flops"] * r["batch"]
        assert r["step_gflops_per_second"] == pytest.approx(flops / step / 1e9)
        assert r["gemm_peak_share"] == pytest.approx(r["step_gflops_per_second"] / peak)


def test_plot_writes_a_png(report, tmp_path):
    pytest.importorskip("matplotlib")
    path = bench_report.write_plot(report, tmp_path / "latency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this machine has the CUDA provider, so 'cuda' is available",
)
def test_a_backend_that_cannot_run_here_is_reported_not_fatal(tiny_bundle):
    if not installed():
        pytest.skip("bld is not installed (pip install -e .)")
    result = bld(
        "bench",
        tiny_bundle,
        "--backend",
        "cpu,cuda",
        "--batch",
        "1",
        "--warmup",
        0,
        "--iters",
        1,
        "--no-peak",
        "--json",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    cuda = next(b for b in out["backends"] if b["name"] == "cuda")
    assert not cuda["available"] and cuda["reason"]
    assert [r["backend"] for r in out["results"]] == ["cpu"]


def test_idle_before_each_run_is_set_and_recorded(report, tiny_bundle, monkeypatch):
    """--idle SECONDS sleeps that long before each run, warm-up included (0: back to back)."""
    if not installed():
        pytest.skip("bld is not installed (pip install -e .)")
    assert report["settings"]["idle"] == IDLE_SECONDS
    slept = []
    clock = SimpleNamespace(perf_counter=time.perf_counter, sleep=slept.append)
    monkeypatch.setattr(core, "time", clock)  # bench's own clock only
    for idle in (0.25, 0):
        slept.clear()
        args = ["--batch", "1,2", "--warmup", 1, "--iters", 2, "--no-peak", "--json", "--quiet"]
        result = bld("bench", tiny_bundle, "--backend", "cpu", "--idle", idle, *args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["settings"]["idle"] == idle
        assert slept == [idle] * 6  # 2 batch sizes x 3 rounds x 1 contender
    result = bld("bench", tiny_bundle, "--idle", -1)
    assert result.exit_code != 0 and "--idle" in result.output


def test_steps_must_match_the_bundle(tiny_bundle):
    if not installed():
        pytest.skip("bld is not installed (pip install -e .)")
    result = bld("bench", tiny_bundle, "--steps", "7", "--no-peak")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: this bundle samples 16 steps")


def test_gemm_peak_model_computes_a_matmul():
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((8, 8), dtype=np.float32) for _ in range(2))
    sess = ort.InferenceSession(machine.matmul_model(8), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["C"], {"A": a, "B": b})[0], a @ b, rtol=1e-5, atol=1e-5)


def test_a_backend_may_name_its_own_precision(tiny_bundle, tiny_run):
    """NAME:PRECISION: fp32 and bf16 contenders timed in one alternating run; a precision a
    contender cannot run is reported, not fatal."""
    if not installed():
        pytest.skip("bld is not installed (pip install -e '.[train,dev]')")
    result = bld(
        "bench", tiny_bundle, "--run", tiny_run, "--backend", "cpu,torch:bf16,torch-reference:int8",
        "--batch", "2", "--warmup", 0, "--iters", 1, "--threads", 1, "--no-peak", "--json",
        "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    backends = {b["name"]: b for b in out["backends"]}
    assert backends["cpu"]["precision"] == "fp32" and backends["cpu"]["available"]
    assert backends["torch:bf16"]["precision"] == "bf16" and backends["torch:bf16"]["available"]
    assert backends["torch-reference:int8"]["reason"] == (
        "backend 'torch-reference' runs fp32, not 'int8'"
    )
    assert [r["backend"] for r in out["results"]] == ["cpu", "torch:bf16"]


def test_an_unknown_precision_suffix_is_refused_in_one_line(tiny_bundle):
    if not installed():
        pytest.skip("bld is not installed (pip install -e .)")
    result = bld("bench", tiny_bundle, "--backend", "cpu:fp64", "--no-peak")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: backend 'cpu:fp64': the precision after ':' must be one of fp32, fp16, int8, "
        "bf16, got 'fp64'\n"
    )
