"""`bld bench --backend cpp`: the C++ runtime's library timed in the bench's own rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bld_bench.core import Request, StageClock
from bld_bench.cpp_contender import CppBackend
from bld_runtime.cli import cli
from bld_runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def library(cpp_build, monkeypatch_module):
    lib = cpp_build["release"] / "libbld.so"
    monkeypatch_module.setenv("BLD_LIBRARY", str(lib))
    return lib


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_cpp_contender_gives_the_python_runtimes_pixels_and_its_profile(library, tiny_bundle):
    backend = CppBackend(tiny_bundle, threads=1)
    request = Request(
        seeds=np.arange(5, 8, dtype=np.uint64),
        classes=np.array([0, 1, 2], np.int64),
        guidance=1.5,
        temperature=0.9,
    )
    clock = StageClock(16)
    images = backend.generate(request, clock)
    want = Pipeline.load(tiny_bundle).generate(
        seeds=request.seeds, classes=request.classes, guidance=1.5, temperature=0.9
    )
    np.testing.assert_array_equal(images, want.images)
    assert clock.initial > 0 and clock.decode > 0
    assert all(t > 0 for t in clock.model) and all(t > 0 for t in clock.sampling)


def test_bench_times_cpp_beside_python_and_reports_what_it_cannot_run(library, tiny_bundle):
    result = CliRunner().invoke(
        cli,
        ["bench", str(tiny_bundle), "--backend", "cpu,cpp,cpp:bf16", "--batch", "2",
         "--warmup", "0", "--iters", "1", "--threads", "1", "--no-peak", "--json", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    backends = {b["name"]: b for b in out["backends"]}
    assert backends["cpp"]["available"] and backends["cpp"]["kind"] == "runtime"
    assert backends["cpp:bf16"]["reason"] == (
        "precision 'bf16' runs on backend 'openvino' only; backend 'cpu' runs fp32, fp16, int8"
    )
    assert [r["backend"] for r in out["results"]] == ["cpu", "cpp"]


def test_a_missing_library_is_one_clear_reason(tmp_path, monkeypatch, tiny_bundle):
    from bld_runtime.errors import BackendUnavailableError

    monkeypatch.setenv("BLD_LIBRARY", str(tmp_path / "libbld.so"))
    with pytest.raises(BackendUnavailableError, match=r"BLD_LIBRARY is '.*libbld.so', which is"):
        CppBackend(tiny_bundle, threads=1)
