"""Build TensorRT engines for a bundle's graphs: one code path for TensorRT 10, 11 and RTX.

    build_bundle(bundle_dir, cache_dir, BuildOptions(...)) -> list[BuiltEngine]

For each graph of the chosen precision (fp32: encoder, decoder, step, step_guided; fp16: the
fp32 encoder and the *_fp16 graphs, strongly typed; int8: the fp32 encoder and decoder and the
*_int8 Q/DQ step graphs, strongly typed) the builder computes the engine key, takes
the key's lock, returns the cached plan when it is there and intact, and otherwise reads the
graph (its sha256 checked), checks it the way the runtime does (its I/O and the facts it
records in `bld.graph` against bld.json: a graph that does not match its bundle is never
built), parses those very bytes, sets the profiles and options, builds, and stores plan +
manifest atomically. A cached engine's recorded facts are checked against bld.json too.

Every version difference is detected by name: STRONGLY_TYPED where the network flags have it,
BuilderFlag.FP16 only where it exists (TensorRT 10; 11 removed it with weak typing),
set_compute_capability only on TensorRT-RTX, DLA only where DeviceType.DLA exists and the
device has cores. Flags go into the key by name.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bld_runtime import __version__ as BLD_VERSION
from bld_runtime import files
from bld_runtime.backends import PRECISIONS, cudart
from bld_runtime.engine_cache import (
    HARDWARE_COMPAT,
    BatchProfile,
    CachedEngine,
    EngineCache,
    EngineKey,
)
from bld_runtime.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    ManifestError,
    StaleEngineError,
)
from bld_runtime.manifest import (
    GRAPH_METADATA_KEY,
    KINDS,
    Bundle,
    GraphSpec,
    check_graph_facts,
    graph_kind,
    load_bundle,
)
from bld_runtime.trt_flavours import Flavour, import_flavour

from .errors import EngineBuildError
from .profiles import check_profiles, default_profile, input_shapes

#: TensorRT names the builder uses in every version (tests resolve them in the real lean
#: modules of TensorRT 10.16 and 11.4, which ship these enums and interfaces)...
SHARED_NAMES = (
    "BuilderFlag.VERSION_COMPATIBLE",
    "BuilderFlag.GPU_FALLBACK",
    "MemoryPoolType.WORKSPACE",
    "HardwareCompatibilityLevel.NONE",
    "HardwareCompatibilityLevel.AMPERE_PLUS",
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",
    "DeviceType.DLA",
    "ILogger",
    "ILogger.Severity.ERROR",
    "IProgressMonitor",
    "IProgressMonitor.phase_start",
    "IProgressMonitor.step_complete",
    "IProgressMonitor.phase_finish",
    "ITimingCache.combine",
    "ITimingCache.serialize",
)
#: ...and those only a builder has (no lean runtime ships them: checked in TensorRT-RTX).
BUILDER_NAMES = (
    "Builder",
    "Builder.create_network",
    "Builder.create_builder_config",
    "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "Builder.num_DLA_cores",
    "OnnxParser",
    "OnnxParser.parse",
    "OnnxParser.num_errors",
    "OnnxParser.get_error",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "IBuilderConfig.set_flag",
    "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.set_memory_pool_limit",
    "IBuilderConfig.builder_optimization_level",
    "IBuilderConfig.hardware_compatibility_level",
    "IBuilderConfig.default_device_type",
    "IBuilderConfig.DLA_core",
    "IBuilderConfig.progress_monitor",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.get_timing_cache",
    "IOptimizationProfile.set_shape",
)
#: TensorRT-RTX only: the GPUs an ahead-of-time build targets.
RTX_NAMES = (
    "BuilderFlag.REQUIRE_USER_ALLOCATION",
    "ComputeCapability",
    "IBuilderConfig.num_compute_capabilities",
    "IBuilderConfig.set_compute_capability",
)


@dataclass(frozen=True)
class BuildOptions:
    """The options of one `bld-export engine` call (its flags, one field each).

    Attributes:
        precision: "fp32", "fp16" (the *_fp16 graphs, strongly typed; the encoder stays
            fp32) or "int8" (the *_int8 Q/DQ step graphs, strongly typed; the encoder and
            decoder stay fp32).
        fp16_flag: TensorRT 10 only: build the fp32 graphs with the FP16 builder flag
            (with precision "fp16").
        profiles: Batch profiles; () means one profile 1:max_batch:max_batch.
        workspace_mib: The builder's workspace limit; None for TensorRT's default.
        optimization_level: 0..5; None for TensorRT's default (3).
        timing_cache: A timing cache file to read and update; None for none.
        hardware_compat: "none", "ampere+" or "same-cc".
        version_compatible: Build engines that newer TensorRT of the same major version run.
        dla_core: Build for this DLA core; None for the GPU.
        compute_capabilities: TensorRT-RTX's target GPUs, e.g. ("8.6", "8.9"); () for its
            default.
        flavour: "tensorrt" or "tensorrt_rtx"; None for the first importable.
        rebuild_if_stale: Rebuild a cached engine that is refused instead of failing.
        graphs: Build only these graphs; () for every graph of the precision.

    Raises:
        InvalidRequestError: An option out of range, or fp16_flag without precision "fp16".
    """

    precision: str = "fp32"  # fp32 | fp16 | int8
    fp16_flag: bool = False  # TensorRT 10 only: FP16 builder flag on the fp32 graphs
    profiles: tuple[BatchProfile, ...] = ()  # () = 1:max_batch:max_batch
    workspace_mib: int | None = None
    optimization_level: int | None = None  # 0..5 (TensorRT's default is 3)
    timing_cache: Path | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets, e.g. ("8.6", "8.9")
    flavour: str | None = None  # None: the first importable
    rebuild_if_stale: bool = False
    graphs: tuple[str, ...] = ()  # () = every graph of the precision

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InvalidRequestError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.fp16_flag and self.precision != "fp16":
            raise InvalidRequestError(
                "--fp16-flag builds fp16 engines: use it with --precision fp16"
            )
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise InvalidRequestError(
                f"hardware compatibility must be one of "
                f"{', '.join(HARDWARE_COMPAT)}, got {self.hardware_compat!r}"
            )
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise InvalidRequestError(
                f"builder optimisation level must be 0..5, got {self.optimization_level}"
            )
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise InvalidRequestError(f"workspace must be >= 1 MiB, got {self.workspace_mib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise InvalidRequestError(f"DLA core must be >= 0, got {self.dla_core}")


@dataclass
class BuiltEngine:
    """One engine `build_bundle` built or found.

    Attributes:
        graph: The bundle's graph name, e.g. "step_fp16".
        entry: The engine's cache entry (plan and manifest paths, key).
        cached: True for a cache hit (nothing was built).
        seconds: How long the build took (0 for a hit).
    """

    graph: str
    entry: CachedEngine
    cached: bool  # True: a cache hit, nothing was built
    seconds: float = 0.0


def graph_names(bundle: Bundle, precision: str, fp16_flag: bool) -> list[tuple[str, str]]:
    """(graph name, key precision) per graph kind: the graphs the runtime loads for
    `precision`, each keyed with its own precision (the encoder is always fp32, and with int8
    the decoder too), or with fp16_flag the fp32 graphs built fp16.

    Args:
        bundle: A loaded bundle.
        precision: "fp32", "fp16" or "int8".
        fp16_flag: The fp32 graphs, keyed fp16 (TensorRT 10's FP16 builder flag).

    Returns:
        One (graph name, precision of its engine key) per kind, in KINDS order.
    """
    from bld_runtime.backends.base import graph_names as runtime_graph_names

    names = runtime_graph_names(bundle, "fp32" if fp16_flag else precision)
    graphs = bundle.manifest.graphs
    return [
        (
            names[kind],
            "fp16" if fp16_flag and kind != "encoder" else graphs[names[kind]].precision,
        )
        for kind in KINDS
    ]


class Builder:
    """One flavour's builder with the options of one `bld-export engine` call."""

    def __init__(
        self, flavour: Flavour, options: BuildOptions, progress: Callable[[], object] | None = None
    ):
        self.flavour, self.options = flavour, options
        self.trt = flavour.module
        self.progress = progress  # a factory of trt.IProgressMonitor (or None)
        self.logger = _CollectingLogger(self.trt)
        self._check_supported()
        self.device = None
        if flavour.name == "tensorrt":
            # TensorRT (not RTX) times kernels on the GPU it builds on: it needs one. Check
            # before touching the Builder, which would otherwise fail deep inside.
            info = cudart.probe()
            if info.count < 1:
                raise BackendUnavailableError(
                    f"{flavour.describe()} builds engines on a GPU and none is usable here "
                    f"({info.problem}); TensorRT-RTX (pip install tensorrt-rtx-cu12) builds "
                    f"without one, or build on the device with trtexec (--emit-trtexec)"
                )
            self.device = info
        self._timing_lock = threading.Lock()

    def _check_supported(self) -> None:
        o, f = self.options, self.flavour
        if o.fp16_flag and f.builder_flag("FP16") is None:
            raise InvalidRequestError(
                f"{f.describe()} has no FP16 builder flag (TensorRT 11 "
                f"removed weak typing): build the strongly typed fp16 "
                f"graphs with --precision fp16 alone"
            )
        if o.version_compatible and (
            f.builder_flag("VERSION_COMPATIBLE") is None or f.name == "tensorrt_rtx"
        ):
            # TensorRT-RTX 1.7 has the flag, but building with it fails: it loads TensorRT's
            # lean runtime library (libnvinfer_lean), which it does not ship.
            raise InvalidRequestError(f"{f.describe()} cannot build version-compatible engines")
        if o.hardware_compat != "none":
            f.hardware_compat_level(o.hardware_compat)  # refuses on Jetson, or a missing level
        if o.compute_capabilities and not hasattr(self.trt, "ComputeCapability"):
            raise InvalidRequestError(
                f"{f.describe()} builds for the GPU it runs on; only "
                f"TensorRT-RTX takes --compute-capability"
            )
        for cc in o.compute_capabilities:
            if getattr(getattr(self.trt, "ComputeCapability", None), _cc_enum(cc), None) is None:
                raise InvalidRequestError(f"{f.describe()} cannot target compute capability {cc}")
        if o.dla_core is not None and (
            not hasattr(self.trt, "DeviceType") or not hasattr(self.trt.DeviceType, "DLA")
        ):
            raise InvalidRequestError(f"{f.describe()} has no DLA support")

    # --- keys ----------------------------------------------------------------------------

    def flag_names(self, key_precision: str, graph_precision: str) -> tuple[str, ...]:
        o, names = self.options, set()
        if key_precision == "fp16" and graph_precision == "fp32":
            names.add("FP16")  # the weakly typed route (TensorRT 10, JetPack 6)
        elif self.flavour.network_flag("STRONGLY_TYPED") is not None:
            names.add("STRONGLY_TYPED")
        if o.version_compatible:
            names.add("VERSION_COMPATIBLE")
        if o.dla_core is not None:
            names.add("GPU_FALLBACK")
        rtx = self.flavour.name == "tensorrt_rtx"
        if rtx and self.flavour.builder_flag("REQUIRE_USER_ALLOCATION") is not None:
            # TensorRT-RTX captures an engine in a CUDA graph only when all its memory is the
            # caller's (the runtime gives every context user-managed scratch memory).
            names.add("REQUIRE_USER_ALLOCATION")
        return tuple(sorted(names))

    def key(
        self, name: str, spec: GraphSpec, key_precision: str, profiles: tuple[BatchProfile, ...]
    ) -> EngineKey:
        o = self.options
        if self.flavour.name == "tensorrt_rtx":
            ccs = tuple(o.compute_capabilities)
        elif o.hardware_compat == "ampere+":
            ccs = ()
        else:
            ccs = (self.device.compute_capability,)
        return EngineKey(
            graph=name,
            graph_sha256=spec.sha256,
            flavour=self.flavour.name,
            version=self.flavour.version,
            compute_capabilities=ccs,
            hardware_compat=o.hardware_compat,
            precision=key_precision,
            profiles=profiles,
            flags=self.flag_names(key_precision, spec.precision),
            dla_core=o.dla_core,
            optimization_level=o.optimization_level,
            workspace_mib=o.workspace_mib,
        )

    # --- building ------------------------------------------------------------------------

    def build(self, onnx: bytes, source: str, spec: GraphSpec, key: EngineKey) -> bytes:
        """A plan of the ONNX graph `onnx` (bytes; `source` names its file) for `key`."""
        f = self.flavour
        # The parser owns the graph's weights: it stays alive until the build is done.
        builder, network, config, _parser = self.configure(onnx, source, spec, key)
        timing = self._load_timing_cache(config)
        if self.progress is not None and hasattr(self.trt, "IProgressMonitor"):
            config.progress_monitor = self.progress()
        self.logger.errors.clear()
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            detail = self.logger.errors[-1] if self.logger.errors else "no error was logged"
            raise EngineBuildError(
                f"{f.describe()} could not build {key.graph} ({Path(source).name}): {detail}"
            )
        if timing is not None:
            self._save_timing_cache(config)
        return bytes(memoryview(plan))

    def configure(self, onnx: bytes, source: str, spec: GraphSpec, key: EngineKey):
        """(builder, network, builder config, parser) for `key`: everything but the build."""
        trt, f, o = self.trt, self.flavour, self.options
        builder = trt.Builder(self.logger)
        network_flags = 0
        if "STRONGLY_TYPED" in key.flags:
            network_flags |= 1 << int(f.network_flag("STRONGLY_TYPED"))
        network = builder.create_network(network_flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx, source):
            raise EngineBuildError(_parser_errors(parser, key.graph, Path(source)))
        config = builder.create_builder_config()
        for name in key.flags:
            flag = f.builder_flag(name)
            if flag is not None:
                config.set_flag(flag)
        for profile in key.profiles:
            p = builder.create_optimization_profile()
            for input_name, (lo, opt, hi) in input_shapes(spec, profile).items():
                p.set_shape(input_name, lo, opt, hi)
            config.add_optimization_profile(p)
        if o.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, o.workspace_mib << 20)
        if o.optimization_level is not None:
            config.builder_optimization_level = o.optimization_level
        if o.hardware_compat != "none":
            config.hardware_compatibility_level = f.hardware_compat_level(o.hardware_compat)
        if o.compute_capabilities:
            config.num_compute_capabilities = len(o.compute_capabilities)
            for i, cc in enumerate(o.compute_capabilities):
                config.set_compute_capability(getattr(trt.ComputeCapability, _cc_enum(cc)), i)
        if key.dla_core is not None:
            if builder.num_DLA_cores <= key.dla_core:
                raise BackendUnavailableError(
                    f"DLA core {key.dla_core} does not exist here "
                    f"(this device has {builder.num_DLA_cores})"
                )
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = key.dla_core
        return builder, network, config, parser

    @property
    def uses_timing_cache(self) -> bool:
        # TensorRT-RTX builds ahead of time without timing anything: since 1.2 its timing-cache
        # calls are deprecated no-ops, so it gets none (and the CLI says so).
        return self.options.timing_cache is not None and self.flavour.name != "tensorrt_rtx"

    def _load_timing_cache(self, config):
        path = self.options.timing_cache
        if not self.uses_timing_cache:
            return None
        data = Path(path).read_bytes() if Path(path).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
        return cache

    def _save_timing_cache(self, config) -> None:
        """Merge what this build timed into the file (others may have written it meanwhile)."""
        path = Path(self.options.timing_cache)
        ours = config.get_timing_cache()
        with self._timing_lock, files.OutputLock(path, f"timing cache {path}", wait=True):
            data = path.read_bytes() if path.is_file() else b""
            merged = config.create_timing_cache(data)
            merged.combine(ours, True)
            files.atomic_write(path, bytes(memoryview(merged.serialize())))


def read_checked_graph(bundle: Bundle, name: str) -> tuple[bytes, str]:
    """Graph `name`'s bytes, sha256 checked, after the runtime's load checks held them to
    bld.json (onnxruntime loads them on the CPU: I/O, and the facts recorded in bld.graph);
    and those facts as canonical JSON, for the engine's manifest.

    Args:
        bundle: A loaded bundle.
        name: One of its graphs.

    Returns:
        (the ONNX bytes, the recorded facts as canonical JSON).

    Raises:
        BundleIntegrityError: The file is missing or its sha256 differs.
        ManifestError: The graph's I/O or recorded facts differ from bld.json.
    """
    import onnxruntime as ort

    from bld_runtime.backends.base import Graph, checked_session

    data = bundle.read_graph(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    graph = Graph(graph_kind(name), name, bundle.manifest.graphs[name])
    session = checked_session(bundle.manifest, graph, data, options, ["CPUExecutionProvider"])
    facts = json.loads(session.get_modelmeta().custom_metadata_map[GRAPH_METADATA_KEY])
    return data, json.dumps(facts, sort_keys=True, separators=(",", ":"))


def check_recorded_facts(bundle: Bundle, entry: CachedEngine) -> None:
    """Refuse a cached engine whose graph's recorded facts differ from today's bld.json.

    Args:
        bundle: The loaded bundle.
        entry: A cached engine of one of its graphs.

    Raises:
        ManifestError: The facts differ (the message names the plan).
    """
    try:
        check_graph_facts(
            bundle.manifest, entry.key.graph, {GRAPH_METADATA_KEY: entry.manifest.graph_facts}
        )
    except ManifestError as e:
        raise ManifestError(f"engine {entry.plan_path}: {e}") from None


def build_bundle(
    bundle_dir,
    cache_dir,
    options: BuildOptions,
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[], object] | None = None,
    flavour: Flavour | None = None,
) -> list[BuiltEngine]:
    """Build (or find in the cache) every engine of `bundle_dir` for `options`.

    Each engine is built under its key's lock, so concurrent builds of one key build it once.

    Args:
        bundle_dir: The bundle's folder (or its bld.json).
        cache_dir: The engine cache's folder (created when missing), e.g. BUNDLE/engines.
        options: What to build and how.
        log: Called with one line per graph (cached, rebuilding, built) and notes.
        progress: A factory of trt.IProgressMonitor, set on each build where TensorRT has
            progress monitors; None for none.
        flavour: An imported TensorRT flavour; None imports `options.flavour`.

    Returns:
        One BuiltEngine per graph, in KINDS order.

    Raises:
        InvalidRequestError: A profile above the bundle's max_batch, an unknown --graph, or
            an option this TensorRT cannot build.
        BackendUnavailableError: No TensorRT builder of that flavour can be imported.
        StaleEngineError: A cached engine of the same key is refused and
            `options.rebuild_if_stale` is False.
        ManifestError: The bundle, or a graph's recorded facts, does not check.
        BundleIntegrityError: A graph file is missing or altered.
        EngineBuildError: TensorRT cannot parse or build a graph.
    """
    import time

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    profiles = check_profiles(options.profiles or (default_profile(m.max_batch),))
    for p in profiles:
        if p.max > m.max_batch:
            raise InvalidRequestError(
                f"batch profile {p} goes above the bundle's max_batch ({m.max_batch})"
            )
    flavour = flavour or import_flavour(options.flavour, need_builder=True)
    builder = Builder(flavour, options, progress)
    if options.timing_cache is not None and not builder.uses_timing_cache:
        log(
            f"note: {flavour.describe()} times no kernels ahead of time and ignores timing "
            f"caches; {options.timing_cache} is left as it is"
        )
    cache = EngineCache(cache_dir)
    wanted = graph_names(bundle, options.precision, options.fp16_flag)
    if options.graphs:
        unknown = set(options.graphs) - {n for n, _ in wanted}
        if unknown:
            raise InvalidRequestError(
                f"--graph {', '.join(sorted(unknown))}: not among this "
                f"precision's graphs ({', '.join(n for n, _ in wanted)})"
            )
        wanted = [(n, p) for n, p in wanted if n in options.graphs]
    results = []
    for name, key_precision in wanted:
        spec = m.graphs[name]
        key = builder.key(name, spec, key_precision, profiles)
        with cache.lock(key):
            try:
                hit = cache.get(key)
            except StaleEngineError as e:
                if not options.rebuild_if_stale:
                    raise StaleEngineError(f"{e}; pass --rebuild-if-stale to rebuild it") from None
                log(f"{name}: {e}; rebuilding")
                hit = None
            if hit is not None:
                check_recorded_facts(bundle, hit)
                log(f"{name}: cached ({hit.plan_path})")
                results.append(BuiltEngine(name, hit, cached=True))
                continue
            start = time.perf_counter()
            onnx, facts = read_checked_graph(bundle, name)
            plan = builder.build(onnx, str(bundle.graph_path(name)), spec, key)
            entry = cache.put(
                key,
                plan,
                spec.inputs,
                spec.outputs,
                facts,
                source="builder",
                tool=f"bld-export engine {BLD_VERSION} ({flavour.describe()})",
            )
            seconds = time.perf_counter() - start
            log(f"{name}: built in {seconds:.1f}s, {len(plan) / 1e6:.1f} MB -> {entry.plan_path}")
            results.append(BuiltEngine(name, entry, cached=False, seconds=seconds))
    return results


def rebuild_for_runtime(bundle_dir, cache_dir, precision: str, flavour: str | None) -> None:
    """The runtime's --rebuild-if-stale (entry point "bld.engine_builder"): build the bundle's
    engines for this TensorRT and GPU with the default profile.

    Args:
        bundle_dir: The bundle's folder.
        cache_dir: The engine cache's folder.
        precision: "fp32", "fp16" or "int8".
        flavour: "tensorrt" or "tensorrt_rtx"; None for the first importable.

    Raises:
        BldError: As `build_bundle` (stale engines are rebuilt, not refused).
    """
    build_bundle(
        bundle_dir,
        cache_dir,
        BuildOptions(precision=precision, flavour=flavour, rebuild_if_stale=True),
    )


def _cc_enum(cc: str) -> str:
    return "SM" + cc.replace(".", "")


def _parser_errors(parser, graph: str, path: Path) -> str:
    parts = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = e.node_name() if hasattr(e, "node_name") else f"#{e.node()}"
        op = e.node_operator() if hasattr(e, "node_operator") else "?"
        desc = " ".join(str(e.desc()).split())
        parts.append(f"node {node or '#' + str(e.node())} ({op}): {desc}")
    detail = "; ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "")
    return f"the ONNX parser rejected {graph} ({path.name}): {detail or 'no error recorded'}"


class _CollectingLogger:
    """A trt.ILogger that keeps errors (for one-line messages) and shows nothing below ERROR."""

    def __new__(cls, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if int(severity) <= int(trt.ILogger.Severity.ERROR):
                    self.errors.append(" ".join(str(msg).split()))

        return Logger()


__all__ = [
    "BuildOptions",
    "BuiltEngine",
    "Builder",
    "build_bundle",
    "check_recorded_facts",
    "graph_names",
    "read_checked_graph",
]
