"""TensorRT plans for the `tensorrt_plan` graph models: from an engine cache or given by hand.

The engine cache is the one `bld-export engine` writes (bld_runtime/engine_cache.py, on the
engines branch): CACHE/<graph>/<digest16>.plan, each with a strict JSON manifest beside it
(format "bld-engine", schema_version 1). Until that module is on main this file reads the
manifests itself, using only these keys:

    key.graph, key.graph_sha256   which bundle graph the plan was built from (matched by hash)
    key.flavour, key.version      "tensorrt" only (Triton's TensorRT backend); one version
    key.compute_capabilities      the GPUs it runs on -> Triton's cc_model_filenames
    key.hardware_compat           "ampere+": one plan for every GPU from sm_80 -> the default
    key.precision, key.profiles   the repository's precision; batches 1..max_batch covered
    key.dla_core                  None (Triton's GPU instances)
    graph_facts                   what the graph records (bld.graph), held to bld.json
    key_digest, plan_file         the plan's name is the key's digest (a renamed manifest is
                                  refused)
    plan_sha256, plan_size        the plan's bytes, checked before it is copied

Once bld_runtime.engine_cache is on main, `_read` becomes EngineCache.read_manifest and the
byte check EngineCache.load_plan (which also checks the plan header), and the dependency stays
one way (bld_serving -> bld_runtime). Triton deserialises the plans it is given, so only plans
from a cache you trust belong in a repository.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bld_runtime.errors import ManifestError
from bld_runtime.files import sha256_file
from bld_runtime.manifest import GRAPH_METADATA_KEY, Manifest, check_graph_facts, load_bundle

from .errors import ServingError

ROLES = ("step", "step_guided", "decoder")  # what sampling calls (no encoder)
ENGINE_FORMAT, ENGINE_SCHEMA_VERSION = "bld-engine", 1
ANY_GPU = "*"  # a hardware-compatible plan: Triton's default_model_filename
_CC = re.compile(r"\d+\.\d+")


@dataclass
class Plans:
    """Plans by graph role and compute capability (ANY_GPU for a hardware-compatible plan)."""

    by_role: dict[str, dict[str, Path]] = field(default_factory=dict)
    tensorrt_version: str | None = None  # of the engine cache's plans; None for --plan files

    def add(self, role: str, cc: str, path: Path) -> None:
        self.by_role.setdefault(role, {})[cc] = path

    def missing(self) -> list[str]:
        return [role for role in ROLES if not self.by_role.get(role)]


def _graph_name(role: str, precision: str) -> str:
    return role if precision == "fp32" else f"{role}_fp16"


def _digest(key: dict) -> str:
    """The engine cache's key digest: sha256 of the key's canonical JSON."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> dict:
    """An engine manifest, with the keys used here checked (ServingError if not usable)."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServingError(f"{path}: not a readable engine manifest ({e})") from None
    try:
        if entry["format"] != ENGINE_FORMAT or entry["schema_version"] != ENGINE_SCHEMA_VERSION:
            raise ServingError(
                f"{path}: format {entry['format']!r} v{entry['schema_version']}"
                f" is not {ENGINE_FORMAT!r} v{ENGINE_SCHEMA_VERSION}"
            )
        key = entry["key"]
        if (
            entry["key_digest"] != _digest(key)
            or entry["plan_file"] != f"{entry['key_digest'][:16]}.plan"
        ):
            raise ServingError(
                f"{path}: key_digest or plan_file does not match the key (the manifest was edited)"
            )
        for name in ("graph", "graph_sha256", "flavour", "version", "precision", "hardware_compat"):
            if not isinstance(key[name], str):
                raise TypeError(name)
        ccs = key["compute_capabilities"]
        if not isinstance(ccs, list) or not all(
            isinstance(c, str) and _CC.fullmatch(c) for c in ccs
        ):
            raise TypeError("compute_capabilities")
        for profile in key["profiles"]:
            if not all(isinstance(profile[k], int) for k in ("min", "opt", "max")):
                raise TypeError("profiles")
        if not isinstance(entry["plan_size"], int) or not isinstance(entry["plan_sha256"], str):
            raise TypeError("plan")
        if not isinstance(entry["graph_facts"], str):
            raise TypeError("graph_facts")
    except (KeyError, TypeError) as e:
        raise ServingError(
            f"{path}: not an engine manifest ({e} missing or of the wrong type)"
        ) from None
    return entry


def _unusable(
    entry: dict, manifest: Manifest, name: str, precision: str, max_batch: int
) -> str | None:
    """Why an engine filed under graph `name` cannot serve this repository, or None."""
    key = entry["key"]
    if key["graph"] != name:
        return f"it is filed under {name} but built from {key['graph']}"
    if key["graph_sha256"] != manifest.graphs[name].sha256:
        return "it was built from another version of the graph (sha256 differs)"
    try:
        check_graph_facts(manifest, name, {GRAPH_METADATA_KEY: entry["graph_facts"]})
    except ManifestError as e:
        return str(e)
    if key["flavour"] != "tensorrt":
        return f"it is a {key['flavour']} plan; Triton's TensorRT backend runs tensorrt plans"
    if key["precision"] != precision:
        return f"it is {key['precision']}, the repository is {precision}"
    if key.get("dla_core") is not None:
        return f"it runs on DLA core {key['dla_core']}; Triton's instances here are GPU ones"
    uncovered = [
        b
        for b in range(1, max_batch + 1)
        if not any(p["min"] <= b <= p["max"] for p in key["profiles"])
    ]
    if uncovered:
        return (
            f"its batch profiles do not cover batch {uncovered[0]} (Triton's batcher forms "
            f"any batch up to --max-batch {max_batch})"
        )
    if not key["compute_capabilities"] and key["hardware_compat"] != "ampere+":
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
    usable: list[tuple[str, dict, Path]] = []
    reasons = []
    for role, name in graphs.items():
        for path in sorted((cache / name).glob("*.json")):
            try:
                entry = _read(path)
            except ServingError as e:  # passed over, like the cache's own loader does
                reasons.append(str(e))
                continue
            why = _unusable(entry, manifest, name, precision, max_batch)
            if why is None and tensorrt_version not in (None, entry["key"]["version"]):
                why = f"it was built by TensorRT {entry['key']['version']}"
            if why:
                reasons.append(f"{path.relative_to(cache)}: {why}")
            else:
                usable.append((role, entry, path))
    versions = sorted({entry["key"]["version"] for _, entry, _ in usable})
    if len(versions) > 1:
        raise ServingError(
            f"engine cache {cache} holds plans of TensorRT {', '.join(versions)};"
            f" pass --tensorrt-version with the version of your Triton "
            f"container's TensorRT"
        )
    plans = Plans(tensorrt_version=versions[0] if versions else None)
    for role, entry, path in usable:
        plan = path.with_name(entry["plan_file"])
        if (
            not plan.is_file()
            or plan.stat().st_size != entry["plan_size"]
            or sha256_file(plan) != entry["plan_sha256"]
        ):
            raise ServingError(
                f"{plan} does not match its manifest {path} (missing, or its "
                f"size or sha256 differs): rebuild it with bld-export engine"
            )
        key = entry["key"]
        for cc in key["compute_capabilities"] or [ANY_GPU]:
            plans.add(role, cc, plan)
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
                f"{precision} needs (export with --fp16)"
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
