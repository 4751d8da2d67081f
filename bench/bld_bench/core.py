"""The benchmark: the runtime's sampling loop timed stage by stage, side by side with PyTorch.

Every backend generates the same request (batch, seeds, classes, guidance, temperature, K
steps) in turns, A B A B ..., so that drift of a shared machine hits all of them alike. A
runtime backend is timed through its own Pipeline.generate: the pipeline runs on a thin
wrapper of its backend (TimedBackend) that times each call of the backend interface, so the
code path is the pipeline's, not a copy. Other backends ("torch", "torch-compile") come from
the entry-point group "bld.bench_backends" (bld_bench.torch_contenders), so this module never
imports torch. Stages of one generation:

    initial        Loop.start: the request's arrays and the initial Philox draw
    step model     Loop.run_step(i): the step graph (denoiser, sigmoid, posterior)
    step sampling  Loop.advance(i): the Philox draw from the probabilities (threshold at K-1)
    decode         Backend.decode: the decoder graph
    total          the whole Pipeline.generate call, argument checks and uint8 images included

Runtime overhead is everything but the model calls (step graphs and decoder), as a share of
the total. FLOPs per step come from the manifest (counted at export); achieved GFLOP/s of the
step graph is set against a GEMM peak measured here, with the same thread count.

JSON output (`--json`, schema "bld-bench/1"; tests/test_bench.py holds its JSON Schema).
Times are seconds, memory bytes; null where a figure does not apply or is unknown.

    schema        "bld-bench/1"
    bundle        {path, image [H, W, ch], latent [L, C], steps, classes, step_graph,
                   step_flops (per image per step call), decoder_flops (per image)}
    settings      {backends, batches, warmup, iters, threads, guidance, temperature, seed,
                   precision (the default; a backend named "NAME:PRECISION" runs its own),
                   thread_pool (the runtime backends' onnxruntime pools: "session" | "shared"),
                   pin_threads (BackendOptions.pin_threads of the runtime backends),
                   idle (seconds of idle before each run)}
    machine       {platform, processor, logical_cores, usable_cores, python, numpy,
                   onnxruntime, isa (the CPU flags of ISA_FLAGS it has), rss_scope ("run":
                   peak RSS per run; "process": since start), draws ("compiled" |
                   "numpy": what the Python runtime's host loop draws with, bld_runtime.draws)}
    gemm_peak     {gflops (the best engine), size, threads,
                   engines: [{engine ("numpy" | "onnxruntime"), gflops, threads}]}: the better
                  of two measurements, before and after the runs
    backends      [{name (as given, e.g. "openvino:bf16"), kind ("runtime" | "torch"),
                    precision, available, reason, threads, load_seconds, load_rss_bytes}]
    order         [{backend, batch, round, warmup}]: every run in the order it ran
    baseline      name of the backend ratios are taken against ("torch") or null
    results       [{backend, batch, runs,
                    latency        {min, mean, p50, p90, p99, max} of whole generations
                    images_per_second   batch * runs / sum of latencies
                    stages         {initial, step_model, step_sampling, decode}: each
                                   {min, mean, p50, p90, p99, max, total_share}; step stats
                                   pool all steps of all runs
                    per_step       [{step, model_p50, sampling_p50}]
                    overhead_share 1 - (model calls + decoder calls) / total, in [0, 1]
                    step_gflops_per_second   step FLOPs * batch / median step model time
                    gemm_peak_share          the same over gemm_peak.gflops
                    peak_rss_bytes, device_memory_bytes
                    speedup        baseline p50 latency / this p50 latency
                    step_speedup   baseline median step model time / this one}]
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from bld_runtime import draws, philox
from bld_runtime.backends import ALL_PRECISIONS, Backend, BackendOptions, Loop
from bld_runtime.backends import names as runtime_backends
from bld_runtime.backends.base import usable_cores
from bld_runtime.cpuinfo import cpu_flags, cpu_model
from bld_runtime.errors import BackendUnavailableError, InvalidRequestError
from bld_runtime.manifest import load_bundle
from bld_runtime.request import RequestChunk

from . import IDLE_SECONDS
from .machine import current_rss_bytes, gemm_peak, peak_rss_bytes, reset_peak_rss

SCHEMA = "bld-bench/1"
PLUGIN_GROUP = "bld.bench_backends"
PERCENTILES = (50, 90, 99)


# --- what every benchmarked backend gets and reports --------------------------------------------


@dataclass(frozen=True)
class Request:
    """One generation, identical for every backend."""

    seeds: np.ndarray  # uint64 (batch,)
    classes: np.ndarray  # int64 (batch,)
    guidance: float
    temperature: float

    @property
    def batch(self) -> int:
        return len(self.seeds)


@dataclass
class StageClock:
    """Stage times of one generation, filled in by the backend's instrumentation."""

    num_steps: int
    initial: float = 0.0
    model: list[float] = field(default_factory=list)
    sampling: list[float] = field(default_factory=list)
    decode: float = 0.0
    total: float = 0.0

    def __post_init__(self):
        self.model = [0.0] * self.num_steps
        self.sampling = [0.0] * self.num_steps


class BenchBackend(ABC):
    """A contender: generates a Request and reports its stage times into a StageClock."""

    name: str = ""
    kind: str = ""
    threads: int | None = None
    fragile = False  # True: an error while running means "unavailable here" (torch.compile)

    @abstractmethod
    def generate(self, request: Request, clock: StageClock) -> np.ndarray:
        """Run one generation; return the uint8 images (N, H, W, ch)."""

    def reset_device_peak(self) -> None:  # noqa: B027 - optional: CPU contenders have no device
        """Start a new peak-device-memory window (GPU backends)."""

    def device_peak_bytes(self) -> int | None:
        return None


# --- the runtime, timed through its own Pipeline -----------------------------------------------


class TimedLoop(Loop):
    """A backend's Loop whose start/run_step/advance calls are timed into the current clock."""

    def __init__(self, inner: Loop, timed: TimedBackend):
        self.inner, self.timed, self.batch = inner, timed, inner.batch

    def start(self, chunk: RequestChunk) -> None:
        t = time.perf_counter()
        self.inner.start(chunk)
        self.timed.sync()
        self.timed.clock.initial += time.perf_counter() - t

    def run_step(self, i):
        t = time.perf_counter()
        self.inner.run_step(i)
        self.timed.sync()
        self.timed.clock.model[i] += time.perf_counter() - t

    def advance(self, i):
        t = time.perf_counter()
        self.inner.advance(i)
        self.timed.sync()
        self.timed.clock.sampling[i] += time.perf_counter() - t

    def set_bits(self, bits):
        self.inner.set_bits(bits)

    def read_bits(self, out):
        return self.inner.read_bits(out)

    def read_probs(self, out):
        return self.inner.read_probs(out)

    def bits_view(self):
        return self.inner.bits_view()


class TimedBackend:
    """Stands in for a pipeline's backend: the pipeline's calls go through unchanged, timed.
    (One pipeline per benchmark contender, used by one thread.)

    GPU loops return before their kernels finish, so after each timed call we wait for the
    device (CuPy's for the onnxruntime GPU backends, the native TensorRT backend's own
    `synchronize`); that adds one synchronisation per stage, which the pipeline would not do.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.clock = StageClock(inner.num_steps)
        cupy = getattr(inner, "cp", None)
        device = getattr(inner.options, "device_id", 0)
        if cupy is not None:
            self.sync = lambda: cupy.cuda.Device(device).synchronize()
        else:
            self.sync = getattr(inner, "synchronize", lambda: None)

    @contextlib.contextmanager
    def loop(self, batch):
        with self.inner.loop(batch) as loop:
            yield TimedLoop(loop, self)

    def decode(self, bits):
        t = time.perf_counter()
        out = self.inner.decode(bits)
        self.sync()
        self.clock.decode += time.perf_counter() - t
        return out

    def __getattr__(self, name):  # encode, step_probs, session, ...: untimed
        return getattr(self.inner, name)


class RuntimeBackend(BenchBackend):
    kind = "runtime"

    def __init__(
        self,
        name: str,
        bundle_dir,
        threads: int,
        precision: str = "fp32",
        thread_pool: str = "session",
        pin_threads: bool = False,
    ):
        from bld_runtime.pipeline import Pipeline

        self.name, self.threads = name, threads
        self.pipeline = Pipeline.load(
            bundle_dir,
            backend=name,
            precision=precision,
            options=BackendOptions(
                intra_op_threads=threads, thread_pool=thread_pool, pin_threads=pin_threads
            ),
        )
        self.timed = TimedBackend(self.pipeline.backend)
        self.pipeline.backend = self.timed
        self._device_peak = 0

    def generate(self, request, clock):
        self.timed.clock = clock
        out = self.pipeline.generate(
            seeds=request.seeds,
            classes=request.classes,
            guidance=request.guidance,
            temperature=request.temperature,
        )
        self._note_device_memory()
        return out.images

    def _note_device_memory(self):
        inner = self.timed.inner
        cupy = getattr(inner, "cp", None)
        if cupy is not None:  # onnxruntime's arena keeps its peak, so "in use now" ~ the peak
            free, total = cupy.cuda.runtime.memGetInfo()
            self._device_peak = max(self._device_peak, total - free)
        elif hasattr(inner, "memory_in_use"):  # native TensorRT: buffers allocated once
            self._device_peak = max(self._device_peak, inner.memory_in_use())

    def reset_device_peak(self):
        self._device_peak = 0

    def device_peak_bytes(self):
        inner = self.timed.inner
        on_device = getattr(inner, "cp", None) is not None or hasattr(inner, "memory_in_use")
        return self._device_peak if on_device else None


def plugin_backends() -> dict:
    """name -> entry point of the backends other packages add (group "bld.bench_backends")."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def parse_contender(spec: str, default_precision: str) -> tuple[str, str]:
    """ "NAME[:PRECISION]" -> (name, precision): a contender may run another precision than the
    run's default, so fp32 and bf16 rows are timed in the same alternating run."""
    name, sep, precision = spec.partition(":")
    if not sep:
        return name, default_precision
    if precision not in ALL_PRECISIONS:
        raise InvalidRequestError(
            f"backend {spec!r}: the precision after ':' must be one of "
            f"{', '.join(ALL_PRECISIONS)}, got {precision!r}"
        )
    return name, precision


def open_backend(
    name: str,
    bundle_dir,
    run_dir,
    threads: int,
    num_steps: int,
    precision: str,
    thread_pool: str = "session",
    pin_threads: bool = False,
) -> BenchBackend:
    """The named contender, loaded; BackendUnavailableError says why one cannot run here."""
    if name in runtime_backends():  # the runtime's own and those registered in bld.backends
        return RuntimeBackend(name, bundle_dir, threads, precision, thread_pool, pin_threads)
    if name == "cpp":  # the C++ runtime's library, through its C ABI
        from .cpp_contender import CppBackend

        return CppBackend(bundle_dir, threads, precision, thread_pool, pin_threads)
    plugins = plugin_backends()
    if name not in plugins:
        known = ", ".join(list(runtime_backends()) + ["cpp"] + sorted(plugins))
        hint = (
            ""
            if plugins
            else "; the PyTorch backends come with bld's train extra (pip install -e '.[train]')"
        )
        raise BackendUnavailableError(f"unknown benchmark backend {name!r}; known: {known}{hint}")
    try:
        factory = plugins[name].load()
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} cannot be imported: {e}") from None
    return factory(run_dir=run_dir, threads=threads, num_steps=num_steps, precision=precision)


# --- running: interleaved rounds ----------------------------------------------------------------


@dataclass
class Run:
    clock: StageClock
    peak_rss: int | None
    device_bytes: int | None


@dataclass
class Contender:
    name: str
    kind: str
    backend: BenchBackend | None
    reason: str | None = None
    load_seconds: float | None = None
    load_rss_bytes: int | None = None
    precision: str = "fp32"
    runs: dict[int, list[Run]] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.backend is not None


def make_request(
    batch: int, seed: int, num_classes: int, guidance: float, temperature: float
) -> Request:
    """Seeds seed.., classes cycling through the bundle's (the null class if it has none)."""
    classes = (np.arange(batch) % num_classes if num_classes else np.zeros(batch)).astype(np.int64)
    return Request(philox.seed_range(seed, batch), classes, float(guidance), float(temperature))


def run_rounds(
    contenders: list[Contender],
    requests: dict[int, Request],
    num_steps: int,
    warmup: int,
    iters: int,
    log=lambda message: None,
    idle: float = IDLE_SECONDS,
) -> list[dict]:
    """For each batch: warmup + iters rounds, each running every available contender once, in
    the same order (A B A B ...). Returns the order of the runs; timings go into contenders.

    Before each run we sleep `idle` seconds: thread pools (onnxruntime's, OpenMP's) may spin
    for a while after a run, and on few cores that would slow whoever runs next. The price:
    each run starts on an idle machine, whose caches (and, in a VM, whose cores) its first
    operations refill; 0 runs them back to back, as on a busy server.
    """
    order = []
    track_rss = reset_peak_rss()
    for batch, request in requests.items():
        for c in contenders:
            if c.available:
                c.runs[batch] = []
        for round_ in range(warmup + iters):
            is_warmup = round_ < warmup
            for c in contenders:
                if not c.available:
                    continue
                clock = StageClock(num_steps)
                time.sleep(idle)
                if track_rss:
                    reset_peak_rss()
                c.backend.reset_device_peak()
                start = time.perf_counter()
                try:
                    c.backend.generate(request, clock)
                except Exception as e:  # only "fragile" backends get here
                    if not c.backend.fragile:
                        raise
                    c.backend, c.reason = None, f"failed at batch {batch}: {_first_line(e)}"
                    c.runs.clear()
                    log(f"{c.name}: unavailable ({c.reason})")
                    continue
                clock.total = time.perf_counter() - start
                order.append(
                    {"backend": c.name, "batch": batch, "round": round_, "warmup": is_warmup}
                )
                log(
                    f"batch {batch:>3}  {'warmup' if is_warmup else 'round '} "
                    f"{round_ - warmup if not is_warmup else round_:>2}  {c.name:<14} "
                    f"{clock.total * 1e3:10.1f} ms"
                )
                if not is_warmup:
                    c.runs[batch].append(
                        Run(clock, peak_rss_bytes(), c.backend.device_peak_bytes())
                    )
    return order


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --- summary ------------------------------------------------------------------------------------


def stats(values) -> dict:
    """min, mean, p50, p90, p99, max (numpy's linear interpolation, so they are ordered)."""
    v = np.asarray(values, np.float64)
    p = np.percentile(v, PERCENTILES)
    return {
        "min": float(v.min()),
        "mean": float(v.mean()),
        "p50": float(p[0]),
        "p90": float(p[1]),
        "p99": float(p[2]),
        "max": float(v.max()),
    }


def summarize_cell(
    name: str, batch: int, runs: list[Run], step_flops: int | None, peak_gflops: float | None
) -> dict:
    clocks = [r.clock for r in runs]
    total = sum(c.total for c in clocks)
    sums = {
        "initial": sum(c.initial for c in clocks),
        "step_model": sum(sum(c.model) for c in clocks),
        "step_sampling": sum(sum(c.sampling) for c in clocks),
        "decode": sum(c.decode for c in clocks),
    }
    samples = {
        "initial": [c.initial for c in clocks],
        "step_model": [t for c in clocks for t in c.model],
        "step_sampling": [t for c in clocks for t in c.sampling],
        "decode": [c.decode for c in clocks],
    }
    stages = {k: {**stats(samples[k]), "total_share": sums[k] / total} for k in samples}
    model_p50 = stages["step_model"]["p50"]
    gflops = step_flops * batch / model_p50 / 1e9 if step_flops and model_p50 > 0 else None
    num_steps = clocks[0].num_steps
    rss = [r.peak_rss for r in runs if r.peak_rss is not None]
    device = [r.device_bytes for r in runs if r.device_bytes is not None]
    return {
        "backend": name,
        "batch": batch,
        "runs": len(runs),
        "latency": stats([c.total for c in clocks]),
        "images_per_second": batch * len(runs) / total,
        "stages": stages,
        "per_step": [
            {
                "step": i,
                "model_p50": float(np.median([c.model[i] for c in clocks])),
                "sampling_p50": float(np.median([c.sampling[i] for c in clocks])),
            }
            for i in range(num_steps)
        ],
        "overhead_share": 1.0 - (sums["step_model"] + sums["decode"]) / total,
        "step_gflops_per_second": gflops,
        "gemm_peak_share": gflops / peak_gflops if gflops and peak_gflops else None,
        "peak_rss_bytes": max(rss) if rss else None,
        "device_memory_bytes": max(device) if device else None,
        "speedup": None,
        "step_speedup": None,
    }


def add_speedups(results: list[dict], baseline: str | None) -> None:
    """speedup = baseline p50 latency / this p50 latency, per batch (and the same per step)."""
    if baseline is None:
        return
    base = {r["batch"]: r for r in results if r["backend"] == baseline}
    for r in results:
        b = base.get(r["batch"])
        if b is not None:
            r["speedup"] = b["latency"]["p50"] / r["latency"]["p50"]
            r["step_speedup"] = b["stages"]["step_model"]["p50"] / r["stages"]["step_model"]["p50"]


# CPU flags that decide which kernels run (/proc/cpuinfo names): a machine's figures are read
# with these, since the same model name comes with and without AVX-512 or AMX.
ISA_FLAGS = (
    *("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni"),
    *("amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm", "sve"),
)


def machine_info(rss_scope: str) -> dict:
    flags = cpu_flags() or set()
    processor = cpu_model() or platform.processor() or None
    return {
        "platform": platform.platform(),
        "processor": processor,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "rss_scope": rss_scope,
        "draws": draws.implementation(),
    }


def benchmark(
    bundle_dir,
    backends: list[str],
    batches: list[int],
    run_dir=None,
    steps: int | None = None,
    warmup: int = 1,
    iters: int = 5,
    threads: int | None = None,
    guidance: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    precision: str = "fp32",
    thread_pool: str = "session",
    pin_threads: bool = False,
    idle: float = IDLE_SECONDS,
    measure_peak: bool = True,
    log=lambda message: None,
) -> dict:
    """Run the whole benchmark and return the JSON-ready report (schema "bld-bench/1")."""
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    K = m.schedule.sampling_steps
    if steps is not None and steps != K:
        raise InvalidRequestError(
            f"this bundle samples {K} steps (its step graphs hold the schedule); to benchmark "
            f"{steps} steps, export a run whose prior has sampling_steps={steps}"
        )
    if not backends:
        raise InvalidRequestError("name at least one backend")
    if len(set(backends)) != len(backends):
        raise InvalidRequestError(f"each backend may be named once, got {', '.join(backends)}")
    if not batches or min(batches) < 1:
        raise InvalidRequestError(f"batch sizes must be >= 1, got {batches}")
    if warmup < 0 or iters < 1:
        raise InvalidRequestError(f"need warmup >= 0 and iters >= 1, got {warmup} and {iters}")
    threads = threads or usable_cores()
    guidance = m.defaults.guidance if guidance is None else guidance
    temperature = m.defaults.temperature if temperature is None else temperature
    suffix = "" if precision in ("fp32", "bf16") else f"_{precision}"  # bf16: the fp32 graphs
    step_graph = ("step_guided" if guidance > 0 else "step") + suffix
    step_flops = m.graphs[step_graph].flops if step_graph in m.graphs else None
    decoder = m.graphs.get("decoder" + suffix, m.graphs.get("decoder"))  # int8: the fp32 one

    specs = [parse_contender(spec, precision) for spec in backends]  # refuse bad ones first
    contenders = []
    for label, (name, own_precision) in zip(backends, specs, strict=True):
        rss0, t0 = current_rss_bytes(), time.perf_counter()
        try:
            backend = open_backend(
                name,
                bundle.directory,
                run_dir,
                threads,
                K,
                own_precision,
                thread_pool,
                pin_threads,
            )
        except BackendUnavailableError as e:
            log(f"{label}: unavailable ({e})")
            contenders.append(
                Contender(label, _kind(name), None, reason=str(e), precision=own_precision)
            )
            continue
        rss1 = current_rss_bytes()
        contenders.append(
            Contender(
                label,
                backend.kind,
                backend,
                load_seconds=time.perf_counter() - t0,
                load_rss_bytes=rss1 - rss0 if rss0 and rss1 else None,
                precision=own_precision,
            )
        )
    if not any(c.available for c in contenders):
        raise BackendUnavailableError(
            "none of the backends can run here: "
            + "; ".join(f"{c.name}: {c.reason}" for c in contenders)
        )

    peak = None
    if measure_peak:
        log(f"measuring the GEMM peak ({threads} threads)")
        peak = gemm_peak(threads, thread_pool=thread_pool, pin_threads=pin_threads)
    requests = {b: make_request(b, seed, m.classes.count, guidance, temperature) for b in batches}
    rss_scope = "run" if reset_peak_rss() else "process"
    order = run_rounds(contenders, requests, K, warmup, iters, log, idle)
    if measure_peak:  # again after the runs: on a shared machine one measurement may be low
        again = gemm_peak(threads, thread_pool=thread_pool, pin_threads=pin_threads)
        peak = again if again["gflops"] > peak["gflops"] else peak

    results = [
        summarize_cell(c.name, b, c.runs[b], step_flops, peak and peak["gflops"])
        for b in batches
        for c in contenders
        if c.available and b in c.runs
    ]
    baseline = next((c.name for c in contenders if c.available and c.kind == "torch"), None)
    add_speedups(results, baseline)
    return {
        "schema": SCHEMA,
        "bundle": {
            "path": str(bundle.directory),
            "image": list(m.image.shape),
            "latent": list(m.latent.shape),
            "steps": K,
            "classes": m.classes.count,
            "step_graph": step_graph,
            "step_flops": step_flops,
            "decoder_flops": decoder.flops if decoder else None,
        },
        "settings": {
            "backends": list(backends),
            "batches": list(batches),
            "warmup": warmup,
            "iters": iters,
            "threads": threads,
            "guidance": float(guidance),
            "temperature": float(temperature),
            "seed": seed,
            "precision": precision,
            "thread_pool": thread_pool,
            "pin_threads": pin_threads,
            "idle": idle,
        },
        "machine": machine_info(rss_scope),
        "gemm_peak": peak,
        "backends": [
            {
                "name": c.name,
                "kind": c.kind,
                "precision": c.precision,
                "available": c.available,
                "reason": c.reason,
                "threads": c.backend.threads if c.available else None,
                "load_seconds": c.load_seconds,
                "load_rss_bytes": c.load_rss_bytes,
            }
            for c in contenders
        ],
        "order": order,
        "baseline": baseline,
        "results": results,
    }


def _kind(name: str) -> str:
    return "runtime" if name in runtime_backends() or name == "cpp" else "torch"
