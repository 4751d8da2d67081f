"""A hostile engine cache: FIFOs, plans swapped for huge sparse files, manifests nested absurdly
deep. Each bad entry is one refused entry: `engine list` and `engine inspect` report it and go
on with the others, and `EngineCache.find` still finds the good engines beside it.

The plans here are fake (a TensorRT 10 header and a few bytes): everything tested happens
before a plan's bytes would reach TensorRT, so no GPU or TensorRT is needed.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from bld_runtime.engine_cache import (
    BatchProfile,
    CachedEngine,
    EngineCache,
    EngineKey,
    RuntimeTarget,
)
from bld_runtime.manifest import TensorSpec

from .conftest import check_refused, run

VERSION = "10.16.1.11"
TIMEOUT = 60  # a reader that blocks on a FIFO never returns: the case fails by timeout
WIDE = {"COLUMNS": "1000"}  # rich wraps the table to the terminal's width otherwise


def _put(cache: EngineCache, graph: str, sha: str) -> CachedEngine:
    key = EngineKey(
        graph=graph,
        graph_sha256=sha,
        flavour="tensorrt",
        version=VERSION,
        compute_capabilities=("8.7",),
        hardware_compat="none",
        precision="fp32",
        profiles=(BatchProfile(1, 4, 16),),
        flags=(),
        dla_core=None,
        optimization_level=None,
        workspace_mib=None,
    )
    plan = b"ftrt" + bytes(20) + bytes(int(p) for p in VERSION.split(".")) + b"plan" * 64
    spec = TensorSpec("bits", "float32", ("batch", 64, 8))
    facts = json.dumps({"name": graph})
    with cache.lock(key):
        return cache.put(key, plan, (spec,), (spec,), facts, "builder", "test")


@pytest.fixture
def cache(tmp_path) -> tuple[EngineCache, CachedEngine, CachedEngine]:
    """A cache with two good engines of graph `step` (different graph versions)."""
    store = EngineCache(tmp_path / "cache")
    return store, _put(store, "step", "a" * 64), _put(store, "step", "b" * 64)


def _memory_cap(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _listed(cache_dir: Path, **kwargs) -> str:
    result = run("bld-export", "engine", "list", cache_dir, env=WIDE, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def _inspected(path: Path, **kwargs) -> str:
    result = run("bld-export", "engine", "inspect", path, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_a_fifo_in_the_cache_is_one_refused_entry(cache):
    store, good, _ = cache
    fifo = good.manifest_path.parent / "0123456789abcdef.json"
    os.mkfifo(fifo)
    listed = _listed(store.directory)
    assert listed.count("ok") == 2
    assert f"engine manifest {fifo} is a FIFO (named pipe), not a regular file" in listed
    inspected = _inspected(store.directory)
    assert inspected.count("check: ok") == 2
    assert f"engine manifest {fifo} is a FIFO (named pipe)" in inspected
    found = store.find(
        {"step": "a" * 64}, "fp32", RuntimeTarget("tensorrt", VERSION, "8.7"), 4, "rebuild"
    )
    assert found.manifest == good.manifest


@pytest.mark.parametrize("kind", ["a FIFO (named pipe)", "a device", "a folder"])
def test_inspecting_one_manifest_that_is_not_a_file_names_what_it_is(cache, kind):
    """Not "holds no engine manifests": the path given is refused by what it is, in
    files.open_input's words, without blocking on a FIFO or reading /dev/urandom."""
    _, good, _ = cache
    path = good.manifest_path.parent / "0123456789abcdef.json"
    if kind == "a FIFO (named pipe)":
        os.mkfifo(path)
    elif kind == "a device":
        path.symlink_to("/dev/urandom")
    else:
        path.mkdir()
    check_refused(
        run("bld-export", "engine", "inspect", path, timeout=TIMEOUT),
        f"engine manifest {path} is {kind}, not a regular file",
    )


def test_a_plan_swapped_for_a_huge_sparse_file_is_refused_by_its_size(cache):
    """6 GiB of holes in place of a plan: compared with the manifest's size, never read (under a
    2 GiB memory cap, reading it would fail)."""
    store, good, _ = cache
    with open(good.plan_path, "r+b") as f:
        f.truncate(6 << 30)
    cap = _memory_cap(2 << 30)
    listed = _listed(store.directory, preexec_fn=cap)
    said = f"{good.plan_path} is {6 << 30} bytes, its manifest says {good.manifest.plan_size}"
    assert said in listed and listed.count("ok") == 1
    inspected = _inspected(good.manifest_path, preexec_fn=cap)
    assert f"check: refused: {said}" in inspected


def test_a_huge_plan_its_manifest_agrees_with_is_checked_in_bounded_memory(cache):
    """A manifest that consistently records a 3 GiB plan (the plan 3 GiB of holes): `engine list`
    and `engine inspect` hash it in chunks, never read it whole (under a 2 GiB memory cap that
    once failed the whole listing): one refused row, the other entry ok. A manifest recording
    more than any plan (engine_cache.MAX_PLAN_BYTES) is refused as a manifest, its plan unread."""
    store, good, _ = cache
    size = 3 << 30
    with open(good.plan_path, "r+b") as f:
        f.truncate(size)
    text = json.loads(good.manifest_path.read_text())
    text["plan_size"] = size
    good.manifest_path.write_text(json.dumps(text))
    cap = _memory_cap(2 << 30)
    said = f"{good.plan_path} does not match its manifest (sha256 or size differs)"
    listed = _listed(store.directory, preexec_fn=cap)
    assert said in listed and listed.count("ok") == 1
    inspected = _inspected(good.manifest_path, preexec_fn=cap)
    assert f"check: refused: {said}" in inspected
    # more than any plan: refused by the number alone
    from bld_runtime.engine_cache import MAX_PLAN_BYTES

    text["plan_size"] = MAX_PLAN_BYTES + 1
    good.manifest_path.write_text(json.dumps(text))
    listed = _listed(store.directory, preexec_fn=cap)
    assert f"plan_size {MAX_PLAN_BYTES + 1} is more than any plan" in listed
    assert listed.count("ok") == 1


def test_a_manifest_nested_absurdly_deep_is_one_refused_entry(cache):
    store, good, other = cache
    deep = good.manifest_path.parent / "fedcba9876543210.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    listed = _listed(store.directory)
    assert listed.count("ok") == 2
    assert "nested too deeply to be an engine manifest" in listed
    inspected = _inspected(store.directory)
    assert inspected.count("check: ok") == 2 and "nested too deeply" in inspected
    target = RuntimeTarget("tensorrt", VERSION, "8.7")
    found = store.find({"step": "b" * 64}, "fp32", target, 4, "rebuild")
    assert found.manifest == other.manifest
    # Deep inside a valid manifest too (its graph_facts is JSON in a string).
    text = json.loads(good.manifest_path.read_text())
    text["graph_facts"] = "[" * 100_000 + "]" * 100_000
    good.manifest_path.write_text(json.dumps(text))
    found = store.find({"step": "b" * 64}, "fp32", target, 4, "rebuild")
    assert found.manifest == other.manifest
    assert _listed(store.directory).count("ok") == 1


# --- engine import: the plan and the ONNX file are the user's -------------------------------

PLAN = b"ftrt" + bytes(20) + bytes(int(p) for p in VERSION.split(".")) + b"plan" * 64


def _import(tiny_bundle: Path, plan: Path, cache: Path, *extra, **kwargs):
    args = [plan, "--bundle", tiny_bundle, "--graph", "step", "--compute-capability", "8.7"]
    return run(
        "bld-export", "engine", "import", *args, "-o", cache, *extra, timeout=TIMEOUT, **kwargs
    )


@pytest.mark.parametrize("which", ["plan", "onnx"])
def test_import_refuses_a_fifo_without_blocking(tiny_bundle, tmp_path, which):
    """A FIFO named as the plan or as --onnx (click lets both through: they exist and are not
    folders) is refused in one line, never opened for a blocking read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plan = tmp_path / "step.plan"
    plan.write_bytes(PLAN)
    cache = tmp_path / "cache"
    if which == "plan":
        result, what = _import(tiny_bundle, fifo, cache), "engine plan"
    else:
        result, what = _import(tiny_bundle, plan, cache, "--onnx", fifo), "ONNX file"
    check_refused(
        result, f"{what} {fifo} is a FIFO (named pipe), not a regular file", new_outputs=[cache]
    )


def test_import_refuses_a_huge_plan_unread(tiny_bundle, tmp_path):
    """A "plan" of 9 GiB of holes, more than any plan (importer.MAX_PLAN_BYTES): refused by its
    size, never read (under a 2 GiB memory cap, reading it would fail)."""
    from bld_engines.importer import MAX_PLAN_BYTES

    plan = tmp_path / "huge.plan"
    with open(plan, "wb") as f:
        f.write(PLAN)
        f.truncate(MAX_PLAN_BYTES + (1 << 30))
    cache = tmp_path / "cache"
    result = _import(tiny_bundle, plan, cache, preexec_fn=_memory_cap(2 << 30))
    check_refused(
        result,
        f"engine plan {plan} is {MAX_PLAN_BYTES + (1 << 30)} bytes, more than any engine plan "
        f"(at most {MAX_PLAN_BYTES}); refusing to read it",
        new_outputs=[cache],
    )


def test_import_refuses_a_huge_onnx_by_its_size_unhashed(tiny_bundle, tmp_path):
    """--onnx of 40 GiB of holes, more than any graph (manifest.MAX_GRAPH_BYTES): refused by its
    size at once, not hashed first (which took minutes)."""
    from bld_runtime.manifest import MAX_GRAPH_BYTES

    plan = tmp_path / "step.plan"
    plan.write_bytes(PLAN)
    onnx = tmp_path / "huge.onnx"
    with open(onnx, "wb") as f:
        f.truncate(40 << 30)
    cache = tmp_path / "cache"
    result = _import(tiny_bundle, plan, cache, "--onnx", onnx)  # hashing it: past TIMEOUT
    check_refused(
        result,
        f"ONNX file {onnx} is {40 << 30} bytes, more than any ONNX file "
        f"(at most {MAX_GRAPH_BYTES}); refusing to read it",
        new_outputs=[cache],
    )
