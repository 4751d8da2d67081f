"""The TensorRT engine cache: keys, strict manifests, and the checks made BEFORE deserialising.

A plan is executable code for one TensorRT version and one GPU family: loading a foreign one
either fails late ("please rebuild") or runs something nobody checked. So every plan in the
cache has a manifest next to it (CACHE/<graph>/<digest>.plan + .json) that records its key:

    graph + graph sha256    which ONNX graph of which bundle it was built from
    flavour + version       tensorrt 10.16.1.11, tensorrt_rtx 1.7.1.116, ...
    compute capabilities    what it runs on (or the hardware-compatibility level)
    precision, profiles     fp32/fp16, and the batch ranges of its optimisation profiles
    flags                   builder/network flags BY NAME (enum numbers differ between versions)

and the plan's sha256. `load_plan` checks the manifest (strict, like bld.json), the plan's hash
and its header (magic and the version in bytes 24..27) before a single byte reaches TensorRT;
any mismatch is a StaleEngineError that says what differs and which command rebuilds.

The builder (bld_engines) writes entries with `EngineCache.put` under `EngineCache.lock` (a
files.OutputLock per key, waited for), each file through files.atomic_write, so two builders of
one key never leave a torn plan; the runtime only reads (`find`, `load_plan`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, TypeVar, cast

from . import files
from .errors import ManifestError, StaleEngineError
from .manifest import MAX_GRAPH_BYTES, Precision, TensorSpec, _parse, _unparse
from .trt_flavours import FLAVOURS, PLAN_MAGIC

EngineSource = Literal["builder", "trtexec"]  # who made a plan: bld's builder or trtexec

ENGINE_FORMAT = "bld-engine"
ENGINE_SCHEMA_VERSION = 1
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
#: Compute capabilities TensorRT-RTX targets when none are set (its documented default).
RTX_DEFAULT_MIN_CC = (8, 0)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_T = TypeVar("_T")
MAX_MANIFEST_BYTES = 1 << 20  # a real engine manifest is a few kB; refuse anything absurd unread
# A plan holds its graph's weights and kernels: four times the largest graph (protobuf's limit)
# is far beyond any real plan. The one bound of every plan: a manifest recording more is refused,
# and so is a plan file of more (bld-export engine import, unread).
MAX_PLAN_BYTES = 4 * MAX_GRAPH_BYTES
_PLAN_HEAD = 64  # the bytes of a plan's header that check_plan_header reads (28 of them)
_CC = re.compile(r"\d+\.\d+")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


@dataclass(frozen=True)
class BatchProfile:
    """One optimisation profile: the batch axis ranges over min..max, tuned for opt.

    Written `min:opt:max` (`str(profile)`), as `bld-export engine --profile` takes it.

    Attributes:
        min: The smallest batch the engine accepts (>= 1).
        opt: The batch TensorRT tunes its kernels for (min <= opt <= max).
        max: The largest batch the engine accepts.

    Raises:
        ManifestError: The bounds are not 1 <= min <= opt <= max.
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        _require(
            1 <= self.min <= self.opt <= self.max,
            f"batch profile must have 1 <= min <= opt <= max, got {self}",
        )

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def covers(self, batch: int) -> bool:
        """Whether the profile accepts `batch`.

        Args:
            batch: A batch size.

        Returns:
            True when min <= batch <= max.
        """
        return self.min <= batch <= self.max


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Equal keys mean interchangeable plans.

    Attributes:
        graph: The bundle's graph name, e.g. "step_fp16".
        graph_sha256: The sha256 of that graph's ONNX file (64 lowercase hex digits).
        flavour: "tensorrt" or "tensorrt_rtx".
        version: The version of the TensorRT that built the plan, e.g. "10.16.1.11".
        compute_capabilities: The GPUs it was built for, e.g. ("8.7",); () means any the
            hardware-compatibility level or the flavour allows.
        hardware_compat: "none", "ampere+" or "same-cc" (HARDWARE_COMPAT).
        precision: "fp32" or "fp16".
        profiles: The optimisation profiles of the batch axis (at least one).
        flags: The builder and network flags by name, sorted and unique.
        dla_core: The DLA core it runs on, or None for the GPU.
        optimization_level: The builder's optimisation level, or None for its default.
        workspace_mib: The builder's workspace limit in MiB, or None for its default.

    Raises:
        ManifestError: A field is malformed (hash, version, compute capability, no profile,
            unsorted flags, a negative DLA core).
    """

    graph: str  # the bundle's graph name, e.g. "step_fp16"
    graph_sha256: str
    flavour: Literal["tensorrt", "tensorrt_rtx"]
    version: str  # of the TensorRT that built it, e.g. "10.16.1.11"
    compute_capabilities: tuple[str, ...]  # e.g. ("8.7",); () = any the level/flavour allows
    hardware_compat: Literal["none", "ampere+", "same-cc"]
    precision: Precision
    profiles: tuple[BatchProfile, ...]
    flags: tuple[str, ...]  # sorted builder and network flag names
    dla_core: int | None
    optimization_level: int | None
    workspace_mib: int | None

    def __post_init__(self) -> None:
        _require(
            _HEX64.fullmatch(self.graph_sha256) is not None,
            "graph_sha256 must be 64 lowercase hexadecimal digits",
        )
        _require(
            re.fullmatch(r"\d+(\.\d+){1,3}", self.version) is not None,
            f"version must look like 10.16.1.11, got {self.version!r}",
        )
        for cc in self.compute_capabilities:
            _require(
                _CC.fullmatch(cc) is not None, f"compute capability must look like 8.7, got {cc!r}"
            )
        _require(len(self.profiles) >= 1, "profiles must not be empty")
        _require(list(self.flags) == sorted(set(self.flags)), "flags must be sorted and unique")
        _require(self.dla_core is None or self.dla_core >= 0, "dla_core must be >= 0")

    def digest(self) -> str:
        """sha256 of the key's canonical JSON: the cache file name.

        Returns:
            64 lowercase hex digits; the cache names a plan by the first 16.
        """
        text = json.dumps(_unparse(self), sort_keys=True, separators=(",", ":"))
        return files.sha256_bytes(text.encode())

    def describe(self) -> str:
        """One line for messages: graph, precision, flavour and version, target, profiles.

        Returns:
            E.g. "step_fp16 fp16 tensorrt 10.16.1.11 sm_87 batch 1:2:4".
        """
        target = ",".join(f"sm_{cc.replace('.', '')}" for cc in self.compute_capabilities) or "any"
        if self.hardware_compat != "none":
            target = f"hardware-compat {self.hardware_compat}"
        extra = f", DLA {self.dla_core}" if self.dla_core is not None else ""
        return (
            f"{self.graph} {self.precision} {self.flavour} {self.version} {target} "
            f"batch {' '.join(map(str, self.profiles))}{extra}"
        )


@dataclass(frozen=True)
class EngineManifest:
    """The JSON next to each plan. Unknown keys, missing keys and wrong types are refused.

    Attributes:
        format: Always ENGINE_FORMAT ("bld-engine").
        schema_version: Always ENGINE_SCHEMA_VERSION.
        key: What the plan was built from and for.
        key_digest: `key.digest()`.
        plan_file: The plan's file name next to the manifest: the digest's first 16 digits
            and ".plan".
        plan_sha256: The plan's sha256.
        plan_size: The plan's size in bytes (at most MAX_PLAN_BYTES).
        inputs: The engine's input tensors.
        outputs: The engine's output tensors.
        graph_facts: What the graph records about itself (its bld.graph metadata, as
            canonical JSON), held to the bundle's bld.json when the engine is loaded.
        source: Who made the plan: "builder" (bld's) or "trtexec" (imported).
        tool: The tool and version that made it, for people.

    Raises:
        ManifestError: A field contradicts the others or the format (constructed or parsed).
    """

    format: str
    schema_version: int
    key: EngineKey
    key_digest: str
    plan_file: str
    plan_sha256: str
    plan_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # What the graph records about itself (its bld.graph metadata, as canonical JSON), checked
    # against bld.json when the engine was made; the runtime holds bld.json to it again.
    graph_facts: str
    source: EngineSource
    tool: str

    def __post_init__(self) -> None:
        _require(
            self.format == ENGINE_FORMAT, f"format is {self.format!r}, expected {ENGINE_FORMAT!r}"
        )
        _require(
            self.schema_version == ENGINE_SCHEMA_VERSION,
            f"schema_version {self.schema_version} is not supported (this runtime reads "
            f"{ENGINE_SCHEMA_VERSION})",
        )
        _require(
            0 <= self.plan_size <= MAX_PLAN_BYTES,
            f"plan_size {self.plan_size} is more than any plan (at most {MAX_PLAN_BYTES} bytes)"
            if self.plan_size > MAX_PLAN_BYTES
            else f"plan_size {self.plan_size} is negative",
        )
        _require(
            _HEX64.fullmatch(self.plan_sha256) is not None,
            "plan_sha256 must be 64 lowercase hexadecimal digits",
        )
        _require(
            self.key_digest == self.key.digest(),
            "key_digest does not match the key (the manifest was edited)",
        )
        _require(
            self.plan_file == f"{self.key_digest[:16]}.plan",
            f"plan_file must be {self.key_digest[:16]}.plan, got {self.plan_file!r}",
        )
        try:
            facts = json.loads(self.graph_facts)
        except (ValueError, RecursionError):
            facts = None
        _require(
            isinstance(facts, dict) and facts.get("name") == self.key.graph,
            f"graph_facts must be the JSON object graph {self.key.graph!r} records",
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> EngineManifest:
        """Parse a manifest strictly: unknown or missing keys and wrong types are refused.

        Args:
            text: The manifest's JSON text.
            source: Where it came from (a path), to begin every error message.

        Returns:
            The checked manifest.

        Raises:
            ManifestError: The text is not JSON, or not a valid engine manifest.
        """
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as e:
            raise ManifestError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:  # one bad entry is one refused entry, never the cache's failure
            raise ManifestError(f"{source}: nested too deeply to be an engine manifest") from None
        return cast(EngineManifest, _parse(cls, data, "", source))

    def to_json(self) -> str:
        """The manifest as the JSON text `from_json` reads back (indented, newline-ended)."""
        return json.dumps(_unparse(self), indent=2) + "\n"


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


# --- the plan header --------------------------------------------------------------------------


def plan_header(data: bytes) -> tuple[bytes, tuple[int, int, int, int]]:
    """(magic, (major, minor, patch, build)) from a serialised plan's first 28 bytes.

    Args:
        data: The plan, or at least its first 28 bytes.

    Returns:
        The 4-byte magic (b"ftrt" for TensorRT, b"vtrt" for TensorRT-RTX) and the version
        of the TensorRT that built it, from bytes 24..27.

    Raises:
        StaleEngineError: `data` is shorter than 28 bytes.
    """
    if len(data) < 28:
        raise StaleEngineError(
            f"the plan is {len(data)} bytes long, too short for a TensorRT plan header"
        )
    return bytes(data[:4]), (data[24], data[25], data[26], data[27])


def check_plan_header(
    data: bytes, flavour: str, version: str, where: str, size: int | None = None
) -> None:
    """Refuse a plan whose header is not `flavour` `version` (first four version parts).
    `data` is the plan, or its first bytes when `size` gives the whole plan's length.

    Layout verified on plans built here by TensorRT-RTX 1.7.1.116: b"vtrt", bytes 24..27 =
    1, 7, 1, 116, bytes 16..23 = the plan's length (little-endian); TensorRT's plans start
    with b"ftrt" and carry the version in the same bytes.

    Args:
        data: The plan, or its first bytes (at least 28) when `size` is given.
        flavour: The flavour the plan must be, "tensorrt" or "tensorrt_rtx".
        version: The version it must have been built by (compared on its first four parts).
        where: What to call the plan in messages (a path).
        size: The whole plan's length when `data` is only its head; None when `data` is all
            of it.

    Raises:
        StaleEngineError: The magic, the version or (TensorRT-RTX) the recorded length does
            not match.
    """
    magic, found = plan_header(data)
    expected_magic = PLAN_MAGIC[flavour]
    if magic != expected_magic:
        other = next((f for f, m in PLAN_MAGIC.items() if m == magic), None)
        said = f"a {other} plan" if other else f"not a TensorRT plan (magic {magic!r})"
        raise StaleEngineError(
            f"{where} is {said}, but its manifest says {flavour} (magic {expected_magic!r})"
        )
    wanted = tuple(int(p) for p in version.split("."))[:4]
    if found[: len(wanted)] != wanted:
        raise StaleEngineError(
            f"{where}: the plan's header names {flavour} {'.'.join(map(str, found))}, but its "
            f"manifest says {version}"
        )
    if flavour == "tensorrt_rtx":
        (said,) = struct.unpack_from("<Q", data, 16)
        actual = len(data) if size is None else size
        if said != actual:
            raise StaleEngineError(
                f"{where}: the plan's header says {said} bytes, the file "
                f"has {actual} (truncated or altered)"
            )


# --- what a runtime offers, and whether an engine fits it --------------------------------------


@dataclass(frozen=True)
class RuntimeTarget:
    """What the loading side has: flavour, version, device and the DLA core it asks for.

    Attributes:
        flavour: The TensorRT flavour loaded, "tensorrt" or "tensorrt_rtx".
        version: Its version, e.g. "10.16.1".
        compute_capability: The device's, e.g. "8.7".
        dla_core: The DLA core the request is for, or None for the GPU.
    """

    flavour: str
    version: str
    compute_capability: str  # of the device, e.g. "8.7"
    dla_core: int | None = None


def _cc(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def versions_match(a: str, b: str) -> bool:
    """Whether two versions name the same release: the shorter, split at dots, is a prefix of
    the longer ("10.3.0" from tensorrt.__version__ matches "10.3.0.26" from a plan's header or
    the C++ runtime's getInferLibVersion plus build). The C++ runtime applies the same rule
    (runtime/cpp/src/graph_io.cpp, trt_versions_match).

    Args:
        a: A dotted version.
        b: Another dotted version.

    Returns:
        True when the shorter one's parts are the longer one's first parts.
    """
    pa, pb = a.split("."), b.split(".")
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def incompatibility(key: EngineKey, target: RuntimeTarget) -> str | None:
    """Why an engine with `key` cannot run on `target`, or None when it can.

    A version-compatible engine (flag VERSION_COMPATIBLE) runs on a newer TensorRT of the same
    major version.

    Args:
        key: The engine's key.
        target: The loading side.

    Returns:
        A clause for a message ("it was built for sm_86, this GPU is sm_87"), or None.
    """
    if key.flavour != target.flavour:
        return f"it was built by {key.flavour}, this runtime is {target.flavour}"
    if not versions_match(key.version, target.version):
        vc = "VERSION_COMPATIBLE" in key.flags
        newer_same_major = (
            _vtuple(target.version) >= _vtuple(key.version)
            and _vtuple(target.version)[0] == _vtuple(key.version)[0]
        )
        if not (vc and newer_same_major):
            return (
                f"it was built by {key.flavour} {key.version}, this runtime is "
                f"{target.version}" + ("" if vc else " (not built version-compatible)")
            )
    device = _cc(target.compute_capability)
    if key.hardware_compat == "ampere+":
        if device < (8, 0):
            return (
                f"it was built hardware-compatible for Ampere and later, this GPU is "
                f"sm_{target.compute_capability.replace('.', '')}"
            )
    elif key.compute_capabilities:
        if target.compute_capability not in key.compute_capabilities:
            built = ", ".join(f"sm_{c.replace('.', '')}" for c in key.compute_capabilities)
            return (
                f"it was built for {built}, this GPU is "
                f"sm_{target.compute_capability.replace('.', '')}"
            )
    elif key.flavour == "tensorrt_rtx" and device < RTX_DEFAULT_MIN_CC:
        return (
            f"TensorRT-RTX's default targets start at sm_80, this GPU is "
            f"sm_{target.compute_capability.replace('.', '')} (build with its compute "
            f"capability)"
        )
    if key.dla_core != target.dla_core:
        return f"it runs on {_device(key.dla_core)}, the request is for {_device(target.dla_core)}"
    return None


def _device(dla_core: int | None) -> str:
    return "the GPU" if dla_core is None else f"DLA core {dla_core}"


# --- the cache directory --------------------------------------------------------------------


@dataclass(frozen=True)
class CachedEngine:
    """One entry of an EngineCache: a parsed manifest and the folder of its plan.

    Attributes:
        directory: The graph's folder in the cache (CACHE/<graph>).
        manifest: The entry's manifest.
    """

    directory: Path
    manifest: EngineManifest

    @property
    def key(self) -> EngineKey:
        """The manifest's key."""
        return self.manifest.key

    @property
    def plan_path(self) -> Path:
        """CACHE/<graph>/<digest16>.plan."""
        return self.directory / self.manifest.plan_file

    @property
    def manifest_path(self) -> Path:
        """CACHE/<graph>/<digest16>.json."""
        return self.directory / f"{self.manifest.key_digest[:16]}.json"


class EngineCache:
    """A directory of plans and manifests, one subdirectory per graph name.

    The runtime reads it (`find`, `load_plan`); builders write it (`put`, under `lock`).
    Nothing is read or created until a method needs it, so the directory may not exist yet.

    Args:
        directory: The cache's folder, e.g. BUNDLE/engines (`bld-export engine -o`).

    Example:
        ```python
        cache = EngineCache("bundle/engines")
        entry = cache.find({"step": sha256}, "fp32", target, batch=4, rebuild_hint=command)
        plan = cache.load_plan(entry)  # checked bytes for TensorRT to deserialise
        ```
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def _dir(self, graph: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_]+", graph):
            raise ManifestError(f"graph name {graph!r} is not a plain name")
        return self.directory / graph

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """Where the entry of `key` lives, whether or not it exists.

        Args:
            key: An engine key.

        Returns:
            (plan path, manifest path): CACHE/<graph>/<digest16>.plan and .json.

        Raises:
            ManifestError: The key's graph name is not a plain name ([A-Za-z0-9_]+).
        """
        stem = key.digest()[:16]
        return self._dir(key.graph) / f"{stem}.plan", self._dir(key.graph) / f"{stem}.json"

    def lock(self, key: EngineKey) -> files.OutputLock:
        """The key's lock: one builder at a time per key (the others wait for it). Kept in
        CACHE/.locks, so that a graph's folder holds only plans and manifests.

        Args:
            key: The key about to be built.

        Returns:
            A context manager: `with cache.lock(key): ... cache.put(key, ...)`.

        Raises:
            ManifestError: The key's graph name is not a plain name.
        """
        self._dir(key.graph)  # a plain name
        return files.OutputLock(
            self.directory / ".locks" / f"{key.graph}-{key.digest()[:16]}",
            f"engine {key.describe()}",
            wait=True,
        )

    def read_manifest(self, path: Path) -> EngineManifest:
        """A manifest, read only if it is a regular file of a manifest's size (files.read_input);
        every refusal is a ManifestError.

        Args:
            path: A manifest file (CACHE/<graph>/<digest16>.json).

        Returns:
            The parsed, checked manifest.

        Raises:
            ManifestError: It cannot be read, is too large, not UTF-8, not JSON or not a valid
                engine manifest.
        """
        try:
            raw = files.read_input(path, "engine manifest", ManifestError, MAX_MANIFEST_BYTES)
        except OSError as e:
            raise ManifestError(f"{path}: cannot be read ({e.strerror or e})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{path}: not valid UTF-8 text") from None
        return EngineManifest.from_json(text, str(path))

    def get(self, key: EngineKey) -> CachedEngine | None:
        """The entry of exactly `key`, checked (hash and header); None when absent.

        Args:
            key: The exact key wanted.

        Returns:
            The entry, its plan verified against its manifest; None when neither file exists.

        Raises:
            StaleEngineError: One of the two files is missing, the manifest is refused or
                records another key, or the plan does not match it.
        """
        plan_path, manifest_path = self.paths(key)
        if not manifest_path.exists() and not plan_path.exists():
            return None
        if not manifest_path.exists():
            raise StaleEngineError(f"{plan_path} has no manifest next to it")
        try:
            manifest = self.read_manifest(manifest_path)
        except ManifestError as e:
            raise StaleEngineError(f"engine manifest refused: {e}") from None
        if manifest.key != key:
            raise StaleEngineError(f"{manifest_path} records another key than its file name")
        entry = CachedEngine(manifest_path.parent, manifest)
        self.load_plan(entry)  # hash and header, so a hit is a usable plan
        return entry

    def put(
        self,
        key: EngineKey,
        plan: bytes,
        inputs: Iterable[TensorSpec],
        outputs: Iterable[TensorSpec],
        graph_facts: str,
        source: EngineSource,
        tool: str,
    ) -> CachedEngine:
        """Store a plan and then its manifest, each atomically (call under `lock`).

        Args:
            key: What the plan was built from and for.
            plan: The serialised engine.
            inputs: The engine's input tensors.
            outputs: The engine's output tensors.
            graph_facts: The graph's bld.graph metadata as canonical JSON.
            source: "builder" or "trtexec".
            tool: The tool and version that made the plan.

        Returns:
            The new entry (it replaces an earlier entry of the same key).

        Raises:
            StaleEngineError: The plan's header is not the key's flavour and version.
            OSError: The files cannot be written.
        """
        plan_path, manifest_path = self.paths(key)
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        # What a builder of this key killed mid-write left (only this key's writers, who
        # hold its lock, write these names).
        files.sweep_temporaries(plan_path.parent, names=(plan_path.name, manifest_path.name))
        check_plan_header(plan, key.flavour, key.version, f"the new plan for {key.graph}")
        digest = key.digest()
        manifest = EngineManifest(
            format=ENGINE_FORMAT,
            schema_version=ENGINE_SCHEMA_VERSION,
            key=key,
            key_digest=digest,
            plan_file=plan_path.name,
            plan_sha256=files.sha256_bytes(plan),
            plan_size=len(plan),
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            graph_facts=graph_facts,
            source=source,
            tool=tool,
        )
        manifest_path.unlink(missing_ok=True)  # readers never pair a new plan with an old manifest
        files.atomic_write(plan_path, bytes(plan))
        files.atomic_write(manifest_path, manifest.to_json().encode())
        return CachedEngine(plan_path.parent, manifest)

    def entries(self) -> list[CachedEngine | tuple[Path, str]]:
        """Every manifest in the cache: entries, or (path, reason) for those that do not parse.

        Plans are not read (see `check_plan`).

        Returns:
            Entries and (manifest path, reason) pairs, sorted by path; [] when the directory
            does not exist.
        """
        out: list[CachedEngine | tuple[Path, str]] = []
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*/*.json")):
            try:
                out.append(CachedEngine(path.parent, self.read_manifest(path)))
            except ManifestError as e:
                out.append((path, str(e)))
        return out

    def load_plan(self, entry: CachedEngine) -> bytes:
        """The plan's bytes after checking size, sha256 and header against the manifest.

        Args:
            entry: An entry of this cache (`find`, `get`, `entries`).

        Returns:
            The whole plan, ready for TensorRT to deserialise.

        Raises:
            StaleEngineError: The plan is missing, unreadable, too large for memory, or does
                not match its manifest.
        """
        m, path = entry.manifest, entry.plan_path
        data = self._read_plan(entry, lambda f, size: f.read(size))
        if len(data) != m.plan_size or files.sha256_bytes(data) != m.plan_sha256:
            raise StaleEngineError(
                f"{path} does not match its manifest (sha256 or size "
                f"differs): the plan was altered or is incomplete"
            )
        check_plan_header(data, m.key.flavour, m.key.version, str(path))
        return data

    def check_plan(self, entry: CachedEngine) -> bytes:
        """load_plan's checks in bounded memory (the plan hashed in chunks, never held whole:
        `engine list` and `engine inspect`); returns the plan's first bytes (its header).

        Args:
            entry: An entry of this cache.

        Returns:
            The plan's first 64 bytes.

        Raises:
            StaleEngineError: As `load_plan`.
        """
        m, path = entry.manifest, entry.plan_path

        def stream(f: typing.BinaryIO, size: int) -> tuple[bytes, int, str]:
            digest, head, read = hashlib.sha256(), b"", 0
            while chunk := f.read(min(1 << 20, size - read)):
                digest.update(chunk)
                head = head or chunk[:_PLAN_HEAD]
                read += len(chunk)
            return head, read, digest.hexdigest()

        head, read, sha = self._read_plan(entry, stream)
        if read != m.plan_size or sha != m.plan_sha256:
            raise StaleEngineError(
                f"{path} does not match its manifest (sha256 or size "
                f"differs): the plan was altered or is incomplete"
            )
        check_plan_header(head, m.key.flavour, m.key.version, str(path), size=read)
        return head

    def _read_plan(
        self, entry: CachedEngine, read: typing.Callable[[typing.BinaryIO, int], _T]
    ) -> _T:
        """read(file, size) on the plan, once it is a regular file of its manifest's size."""
        m, path = entry.manifest, entry.plan_path
        if not path.exists():
            raise StaleEngineError(f"{path} is missing (its manifest is {entry.manifest_path})")
        try:
            with files.open_input(path, "engine plan", StaleEngineError) as f:
                size = os.fstat(f.fileno()).st_size
                if size != m.plan_size:  # before reading: a plan may be replaced by gigabytes
                    raise StaleEngineError(
                        f"{path} is {size} bytes, its manifest says {m.plan_size}: the plan "
                        "was altered or is incomplete"
                    )
                return read(f, size)
        except OSError as e:
            raise StaleEngineError(f"{path}: cannot be read ({e.strerror or e})") from None
        except MemoryError:
            raise StaleEngineError(
                f"{path}: not enough memory to read its {m.plan_size} bytes"
            ) from None

    def find(
        self,
        graphs: dict[str, str],
        precision: str,
        target: RuntimeTarget,
        batch: int | None,
        rebuild_hint: str,
    ) -> CachedEngine:
        """The engine for one graph kind: `graphs` maps candidate graph names to their sha256
        (e.g. {"step_fp16": ..., "step": ...} for fp16); it must fit `target`, match `precision`
        and cover `batch` (None: any batch, the engine covering the largest preferred).
        Refused with what differs, and `rebuild_hint`, when none does.

        Among the engines that fit, an exact version is preferred to a version-compatible one,
        then (batch None) the largest batch covered, then the newest manifest.

        Args:
            graphs: Candidate graph names of one kind, mapped to the sha256 of the bundle's
                graph of that name.
            precision: "fp32" or "fp16".
            target: The loading side (flavour, version, device, DLA core).
            batch: The batch to run, or None for any.
            rebuild_hint: The command that rebuilds the engines, quoted in the error.

        Returns:
            The chosen entry (its manifest checked; its plan not yet read, see `load_plan`).

        Raises:
            StaleEngineError: No engine fits; the message gives up to three reasons.
            ManifestError: A graph name is not a plain name.
        """
        reasons = []
        candidates = []
        for name, sha in graphs.items():
            if not self._dir(name).is_dir():
                continue
            for path in sorted(self._dir(name).glob("*.json")):
                try:
                    manifest = self.read_manifest(path)
                except ManifestError as e:
                    reasons.append(f"{path.name}: manifest refused ({e})")
                    continue
                key = manifest.key
                why = None
                if key.graph != name:
                    why = f"it is filed under {name} but built from {key.graph}"
                elif key.graph_sha256 != sha:
                    why = "it was built from another version of the graph (sha256 differs)"
                elif key.precision != precision:
                    why = f"it is {key.precision}, the request is {precision}"
                elif batch is not None and not any(p.covers(batch) for p in key.profiles):
                    why = (
                        f"its profiles ({' '.join(map(str, key.profiles))}) do not cover "
                        f"batch {batch}"
                    )
                else:
                    why = incompatibility(key, target)
                if why:
                    reasons.append(f"{key.describe()}: {why}")
                else:
                    candidates.append(CachedEngine(path.parent, manifest))
        if not candidates:
            first = "; ".join(reasons[:3]) if reasons else "the cache has no engine for it"
            raise StaleEngineError(
                f"no usable {precision} engine for graph {'/'.join(graphs)} in {self.directory} "
                f"({first}); rebuild with: {rebuild_hint}"
            )
        # Prefer an exact version over a version-compatible one, then (any batch) the largest
        # batch covered, then the newest file.
        candidates.sort(
            key=lambda e: (
                versions_match(e.key.version, target.version),
                0 if batch is not None else max(p.max for p in e.key.profiles),
                e.manifest_path.stat().st_mtime,
            ),
            reverse=True,
        )
        return candidates[0]


__all__ = [
    "BatchProfile",
    "CachedEngine",
    "EngineCache",
    "EngineKey",
    "EngineManifest",
    "RuntimeTarget",
    "StaleEngineError",
    "check_plan_header",
    "incompatibility",
    "versions_match",
    "plan_header",
    "HARDWARE_COMPAT",
    "FLAVOURS",
]
