"""TensorRT plans for the `tensorrt_plan` graph models: from an engine cache or given by hand.

The engine cache is the one `bld-export engine` writes (bld_runtime/engine_cache.py):
CACHE/<graph>/<digest16>.plan, each with a strict manifest beside it. Its manifests are read and
its plans checked (size, sha256, header) by the cache's own code; this module only decides which
plans can serve a repository: those built from these very graphs (by hash, and the facts they
record held to bld.json), by TensorRT itself (Triton's TensorRT backend), at the repository's
precision, on the GPU (not DLA), covering every batch Triton's batcher can form, and all from
one TensorRT version (the Triton container's). Their compute capabilities become Triton's
cc_model_filenames; a hardware-compatible ("ampere+") plan is the default for every other GPU.
Triton deserialises the plans it is given, so only plans from a cache you trust belong in a
repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bld_runtime.engine_cache import CachedEngine, EngineCache, EngineManifest
from bld_runtime.errors import ManifestError, StaleEngineError
from bld_runtime.manifest import GRAPH_METADATA_KEY, Manifest, check_graph_facts, load_bundle

from .errors import ServingError

ROLES = ("step", "step_guided", "decoder")  # what sampling calls (no encoder)
ANY_GPU = "*"  # a hardware-compatible plan: Triton's default_model_filename
VERSION_COMPATIBLE_ARG = "--backend-config=tensorrt,version-compatible=true"
_CC = re.compile(r"\d+\.\d+")


@dataclass
class Plans:
    """Plans by graph role and compute capability (ANY_GPU for a hardware-compatible plan)."""

    by_role: dict[str, dict[str, Path]] = field(default_factory=dict)
    tensorrt_version: str | None = None  # of the engine cache's plans; None for --plan files
    # Some plan was built version-compatible: Triton's TensorRT backend loads such plans only
    # when started with VERSION_COMPATIBLE_ARG (it runs the lean runtime they carry).
    version_compatible: bool = False

    def add(self, role: str, cc: str, path: Path) -> None:
        self.by_role.setdefault(role, {})[cc] = path

    def missing(self) -> list[str]:
        return [role for role in ROLES if not self.by_role.get(role)]


def _graph_name(role: str, precision: str) -> str:
    """The bundle's graph of `role` at `precision`, as the runtime's graph_names picks it."""
    if precision == "fp16" or (precision == "int8" and role != "decoder"):
        return f"{role}_{precision}"
    return role


def _unusable(
    engine: EngineManifest, manifest: Manifest, name: str, precision: str, max_batch: int
) -> str | None:
    """Why an engine filed under graph `name` cannot serve this repository, or None."""
    key = engine.key
    if key.graph != name:
        return f"it is filed under {name} but built from {key.graph}"
    if key.graph_sha256 != manifest.graphs[name].sha256:
        return "it was built from another version of the graph (sha256 differs)"
    try:
        check_graph_facts(manifest, name, {GRAPH_METADATA_KEY: engine.graph_facts})
    except ManifestError as e:
        return str(e)
    if key.flavour != "tensorrt":
        return f"it is a {key.flavour} plan; Triton's TensorRT backend runs tensorrt plans"
    expected = manifest.graphs[name].precision  # as bld-export engine keys it
    if key.precision != expected:
        if expected == precision:
            return f"it is {key.precision}, the repository is {precision}"
        return f"it is {key.precision}; graph {name} is {expected} in a {precision} repository"
    if key.dla_core is not None:
        return f"it runs on DLA core {key.dla_core}; Triton's instances here are GPU ones"
    uncovered = [b for b in range(1, max_batch + 1) if not any(p.covers(b) for p in key.profiles)]
    if uncovered:
        return (
            f"its batch profiles do not cover batch {uncovered[0]} (Triton's batcher forms "
            f"any batch up to --max-batch {max_batch})"
        )
    if not key.compute_capabilities and key.hardware_compat != "ampere+":
        return "it names no compute capability (Triton's cc_model_filenames needs one)"
    return None


def from_engine_cache(
    cache: Path,
    manifest: Manifest,
    graphs: dict[str, str],
    precision: str,
    max_batch: int,
    tensorrt_version: str | None = None,
) -> tuple[Plans, list]:
    """(plans found, reasons others were passed over) for `graphs` (role -> the bundle's graph
    name). All plans must come from one TensorRT version (the Triton container's)."""
    cache = Path(cache)
    if not cache.is_dir():
        raise ServingError(f"engine cache {cache} does not exist")
    engines = EngineCache(cache)
    usable: list[tuple[str, CachedEngine]] = []
    reasons = []
    for role, name in graphs.items():
        for path in sorted((cache / name).glob("*.json")):
            try:  # passed over, like the runtime's own loader does
                entry = CachedEngine(path.parent, engines.read_manifest(path))
            except ManifestError as e:
                reasons.append(f"{path.relative_to(cache)}: manifest refused ({e})")
                continue
            why = _unusable(entry.manifest, manifest, name, precision, max_batch)
            if why is None and tensorrt_version not in (None, entry.key.version):
                why = f"it was built by TensorRT {entry.key.version}"
            if why:
                reasons.append(f"{path.relative_to(cache)}: {why}")
            else:
                usable.append((role, entry))
    versions = sorted({entry.key.version for _, entry in usable})
    if len(versions) > 1:
        raise ServingError(
            f"engine cache {cache} holds plans of TensorRT {', '.join(versions)};"
            f" pass --tensorrt-version with the version of your Triton "
            f"container's TensorRT"
        )
    plans = Plans(tensorrt_version=versions[0] if versions else None)
    for role, entry in usable:
        try:
            engines.load_plan(entry)  # size, sha256 and header, before it is copied
        except StaleEngineError as e:
            raise ServingError(f"{e}: rebuild it with bld-export engine") from None
        for cc in entry.key.compute_capabilities or (ANY_GPU,):
            plans.add(role, cc, entry.plan_path)
        plans.version_compatible |= "VERSION_COMPATIBLE" in entry.key.flags
    return plans, reasons


def parse_plan_arg(text: str) -> tuple[str, str, Path]:
    """'step@8.6=step.plan' -> ('step', '8.6', Path('step.plan'))."""
    head, sep, file = text.partition("=")
    role, at, cc = head.partition("@")
    if not (sep and at and _CC.fullmatch(cc) and file):
        raise ServingError(
            f"--plan must look like GRAPH@CC=FILE (e.g. step@8.6=step.plan), got {text!r}"
        )
    if role not in ROLES:
        raise ServingError(f"--plan {text!r}: the graph must be one of {', '.join(ROLES)}")
    path = Path(file)
    if not path.is_file():
        raise ServingError(f"--plan {text!r}: {file} does not exist")
    return role, cc, path


def collect_plans(
    bundle_dir,
    precision: str,
    max_batch: int,
    cache: Path | None,
    plan_args: tuple[str, ...] = (),
    tensorrt_version: str | None = None,
) -> Plans:
    """Plans for every sampling graph: the engine cache's, then --plan arguments on top."""
    manifest = load_bundle(bundle_dir).manifest
    graphs = {}
    for role in ROLES:
        name = _graph_name(role, precision)
        if name not in manifest.graphs:
            raise ServingError(
                f"bundle {bundle_dir} has no {name!r} graph, which precision "
                f"{precision} needs (export with --{precision})"
            )
        graphs[role] = name
    plans, reasons = (
        from_engine_cache(cache, manifest, graphs, precision, max_batch, tensorrt_version)
        if cache is not None
        else (Plans(), [])
    )
    for text in plan_args:
        role, cc, path = parse_plan_arg(text)
        plans.add(role, cc, path)
    missing = plans.missing()
    if missing:
        why = f"; passed over: {'; '.join(reasons[:3])}" if reasons else ""
        raise ServingError(
            f"no TensorRT plan for {', '.join(missing)} at {precision} (build "
            f"them with bld-export engine and pass --engine-cache, or pass "
            f"--plan GRAPH@CC=FILE){why}"
        )
    return plans
