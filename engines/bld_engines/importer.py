"""Bring a plan that trtexec built on a device into the engine cache, without TensorRT here.

The plan's header says which TensorRT made it (magic ftrt / vtrt, version in bytes 24..27);
the bundle says which graph (its sha256); the caller says what trtexec was told (precision,
profiles, DLA, compatibility) and the GPU's compute capability: the same options the trtexec
line from `--emit-trtexec` was made with. The options cannot be read back from a plan without
deserialising it on its GPU, so the runtime checks the engine's profiles again when it loads.

The graph is checked as the builder checks it (its sha256, its I/O and the facts it records
against bld.json), so the key's graph_sha256 names a graph that belongs to this bundle; with
`onnx`, the file trtexec was given must be that very graph (same sha256).
"""

from __future__ import annotations

from pathlib import Path

from bld_runtime import files
from bld_runtime.engine_cache import (
    MAX_PLAN_BYTES,
    PLAN_MAGIC,
    EngineCache,
    EngineKey,
    plan_header,
)
from bld_runtime.errors import InvalidRequestError
from bld_runtime.manifest import MAX_GRAPH_BYTES, load_bundle

from .builder import read_checked_graph
from .profiles import check_profiles, default_profile, parse_batch

# MAX_PLAN_BYTES (bld_runtime.engine_cache: the one bound of every plan): a "plan" of more is
# refused unread.


def import_plan(
    plan: Path,
    bundle,
    graph: str,
    cache=None,
    precision: str = "fp32",
    fp16_flag: bool = False,
    batches=(),
    dla_core=None,
    hardware_compat="none",
    version_compatible=False,
    compute_capability=None,
    default_cache: str = "engines",
    onnx: Path | None = None,
):
    loaded = load_bundle(bundle)
    m = loaded.manifest
    if graph not in m.graphs:
        raise InvalidRequestError(
            f"bundle {loaded.directory} has no graph {graph!r} (it has {', '.join(m.graphs)})"
        )
    spec = m.graphs[graph]
    # Both files are the user's: opened without blocking, refused unless regular files.
    onnx_sha256 = (
        files.sha256_file(
            onnx, what="ONNX file", error=InvalidRequestError, max_bytes=MAX_GRAPH_BYTES
        )
        if onnx
        else None
    )
    if onnx is not None and onnx_sha256 != spec.sha256:
        raise InvalidRequestError(
            f"{onnx} is not graph {graph!r} of bundle {loaded.directory} "
            f"(its sha256 differs from bld.json's): a plan built from it "
            f"does not belong to this bundle"
        )
    data = files.read_input(plan, "engine plan", InvalidRequestError, MAX_PLAN_BYTES)
    magic, version = plan_header(data)
    flavour = next((f for f, mg in PLAN_MAGIC.items() if mg == magic), None)
    if flavour is None:
        raise InvalidRequestError(f"{plan} is not a TensorRT plan (it starts with {magic!r})")
    major = version[0]
    if fp16_flag and (flavour != "tensorrt" or major >= 11):
        raise InvalidRequestError(
            "--fp16-flag describes TensorRT 10 plans built with trtexec --fp16"
        )
    if precision == "fp16" and not fp16_flag and spec.precision != "fp16":
        raise InvalidRequestError(
            f"graph {graph} is {spec.precision}: an fp16 engine comes from "
            f"an *_fp16 graph (or --fp16-flag on TensorRT 10)"
        )
    if precision == "fp32" and spec.precision != "fp32":
        raise InvalidRequestError(
            f"graph {graph} is {spec.precision}; pass --precision {spec.precision}"
        )
    if hardware_compat == "ampere+" or flavour == "tensorrt_rtx":
        ccs = (compute_capability,) if compute_capability else ()
    elif not compute_capability:
        raise InvalidRequestError(
            "--compute-capability is needed: the GPU the plan was built "
            "on (e.g. 8.7 for Jetson Orin, 11.0 for Thor)"
        )
    else:
        ccs = (compute_capability,)
    if hardware_compat == "ampere+":
        ccs = ()
    profiles = check_profiles(
        tuple(parse_batch(b, m.max_batch) for b in batches) or (default_profile(m.max_batch),)
    )
    flags = {"FP16"} if fp16_flag else {"STRONGLY_TYPED"}
    if version_compatible:
        flags.add("VERSION_COMPATIBLE")
    if dla_core is not None:
        flags.add("GPU_FALLBACK")
    key = EngineKey(
        graph=graph,
        graph_sha256=spec.sha256,
        flavour=flavour,
        version=".".join(map(str, version)),
        compute_capabilities=ccs,
        hardware_compat=hardware_compat,
        precision=precision,
        profiles=profiles,
        flags=tuple(sorted(flags)),
        dla_core=dla_core,
        optimization_level=None,
        workspace_mib=None,
    )
    _, facts = read_checked_graph(loaded, graph)
    store = EngineCache(cache or loaded.directory / default_cache)
    with store.lock(key):
        return store.put(
            key,
            data,
            spec.inputs,
            spec.outputs,
            facts,
            source="trtexec",
            tool=f"trtexec {key.version} (imported from {plan.name})",
        )
