"""`bld bench`: the runtime's sampling loop timed stage by stage, side by side with PyTorch.

Every backend generates the same request (batch, seeds, classes, guidance, temperature, K
steps) in turns, A B A B ..., so that drift of a shared machine hits all of them alike. A
runtime backend is timed through its own Pipeline.generate: the pipeline runs on a thin
wrapper of its backend (TimedBackend) that times each call of the backend interface, so the
code path is the pipeline's, not a copy. Other backends ("torch", "torch-compile") come from
the entry-point group "bld.bench_backends" (bld_train.bench_torch), so this module never
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
                   precision}
    machine       {platform, processor, logical_cores, usable_cores, python, numpy,
                   onnxruntime, rss_scope ("run": peak RSS per run; "process": since start)}
    gemm_peak     {gflops (the best engine), size, threads,
                   engines: [{engine ("numpy" | "onnxruntime"), gflops, threads}]}: the better
                  of two measurements, before and after the runs
    backends      [{name, kind ("runtime" | "torch"), available, reason, threads,
                    load_seconds, load_rss_bytes}]
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

import math
import os
import platform
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort

from . import philox
from .backends import BACKENDS, Backend, BackendOptions, Loop
from .errors import BackendUnavailableError, BldError, InvalidRequestError
from .manifest import load_bundle

SCHEMA = "bld-bench/1"
PLUGIN_GROUP = "bld.bench_backends"
PERCENTILES = (50, 90, 99)
SETTLE_SECONDS = 0.1  # idle time before each run, so that one contender's threads go quiet


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

    def reset_device_peak(self) -> None:
        """Start a new peak-device-memory window (GPU backends)."""

    def device_peak_bytes(self) -> int | None:
        return None


# --- the runtime, timed through its own Pipeline -----------------------------------------------

class TimedLoop(Loop):
    """A backend's Loop whose start/run_step/advance calls are timed into the current clock."""

    def __init__(self, inner: Loop, timed: "TimedBackend"):
        self.inner, self.timed, self.batch = inner, timed, inner.batch

    def start(self, *args):
        t = time.perf_counter()
        self.inner.start(*args)
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

    GPU loops return before their kernels finish, so after each timed call we wait for the
    device; that adds one synchronisation per stage, which the pipeline would not do.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.clock = StageClock(inner.graphs.num_steps)
        self._loops: dict[int, TimedLoop] = {}
        cupy = getattr(inner, "cp", None)
        device = getattr(inner.options, "device_id", 0)
        self.sync = (lambda: cupy.cuda.Device(device).synchronize()) if cupy else (lambda: None)

    def bind(self, batch):
        loop = self.inner.bind(batch)
        if self._loops.get(batch) is None or self._loops[batch].inner is not loop:
            self._loops[batch] = TimedLoop(loop, self)
        return self._loops[batch]

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

    def __init__(self, name: str, bundle_dir, threads: int, precision: str = "fp32"):
        from .pipeline import Pipeline  # the pipeline imports the backends; keep ours light

        self.name, self.threads = name, threads
        self.pipeline = Pipeline.load(bundle_dir, backend=name, precision=precision,
                                      options=BackendOptions(intra_op_threads=threads))
        self.timed = TimedBackend(self.pipeline.backend)
        self.pipeline.backend = self.timed
        self._device_peak = 0

    def generate(self, request, clock):
        self.timed.clock = clock
        out = self.pipeline.generate(seeds=request.seeds, classes=request.classes,
                                     guidance=request.guidance, temperature=request.temperature)
        self._note_device_memory()
        return out.images

    def _note_device_memory(self):
        cupy = getattr(self.timed.inner, "cp", None)
        if cupy is not None:  # onnxruntime's arena keeps its peak, so "in use now" ~ the peak
            free, total = cupy.cuda.runtime.memGetInfo()
            self._device_peak = max(self._device_peak, total - free)

    def reset_device_peak(self):
        self._device_peak = 0

    def device_peak_bytes(self):
        return self._device_peak if getattr(self.timed.inner, "cp", None) else None


def plugin_backends() -> dict:
    """name -> entry point of the backends other packages add (group "bld.bench_backends")."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def open_backend(name: str, bundle_dir, run_dir, threads: int, num_steps: int,
                 precision: str) -> BenchBackend:
    """The named contender, loaded; BackendUnavailableError says why one cannot run here."""
    if name in BACKENDS:
        return RuntimeBackend(name, bundle_dir, threads, precision)
    plugins = plugin_backends()
    if name not in plugins:
        known = ", ".join(list(BACKENDS) + sorted(plugins))
        hint = ("" if plugins else "; the PyTorch backends come with bld's train extra "
                "(pip install -e '.[train]')")
        raise BackendUnavailableError(f"unknown benchmark backend {name!r}; known: {known}{hint}")
    try:
        factory = plugins[name].load()
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} cannot be imported: {e}") from None
    return factory(run_dir=run_dir, threads=threads, num_steps=num_steps)


# --- memory -------------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Restart the kernel's resident-set high-water mark (Linux >= 4.0); False if we cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int | None:
    """Peak resident set size: since the last reset on Linux, else since the process began."""
    value = _proc_status_bytes("VmHWM")
    if value is not None:
        return value
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; else kB
    except ImportError:  # Windows
        try:
            import psutil

            return int(psutil.Process().memory_info().peak_wset)
        except (ImportError, AttributeError):
            return None


def current_rss_bytes() -> int | None:
    value = _proc_status_bytes("VmRSS")
    if value is not None:
        return value
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


# --- the machine's GEMM peak --------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _pb(number: int, value) -> bytes:
    """One protobuf field: an int (varint) or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def matmul_model(n: int) -> bytes:
    """An ONNX model computing C = A @ B on float32 [n, n] inputs, serialised by hand (field
    numbers from onnx.proto) because the runtime does not depend on the onnx package."""
    def value_info(name):  # ValueInfoProto{name, type: TypeProto{tensor_type{elem_type, shape}}}
        dim = _pb(1, _pb(1, n))  # TensorShapeProto.dim{dim_value}
        tensor = _pb(1, 1) + _pb(2, dim + dim)  # elem_type FLOAT = 1
        return _pb(1, name) + _pb(2, _pb(1, tensor))

    node = _pb(1, "A") + _pb(1, "B") + _pb(2, "C") + _pb(4, "MatMul")
    graph = (_pb(1, node) + _pb(2, "gemm") + _pb(11, value_info("A")) + _pb(11, value_info("B"))
             + _pb(12, value_info("C")))
    return _pb(1, 8) + _pb(7, graph) + _pb(8, _pb(2, 17))  # ir_version 8, opset 17


def _best_seconds(run, repeats: int) -> float:
    run()  # warm up: thread pools, page faults, packing buffers
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_peak(threads: int, size: int = 2048, repeats: int = 5) -> dict:
    """fp32 GFLOP/s of a large square matmul, with numpy's BLAS and onnxruntime's MLAS at
    `threads` threads; the best of them is the machine's peak for the roofline figure."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size ** 3
    engines = []

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(matmul_model(size), sess_options=so,
                                providers=["CPUExecutionProvider"])
    seconds = _best_seconds(lambda: sess.run(["C"], {"A": a, "B": b}), repeats)
    engines.append({"engine": "onnxruntime", "gflops": flops / seconds / 1e9, "threads": threads})

    try:  # numpy's BLAS follows a thread limit only through threadpoolctl
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads, user_api="blas"):
            seconds = _best_seconds(lambda: np.matmul(a, b), repeats)
        engines.append({"engine": "numpy", "gflops": flops / seconds / 1e9, "threads": threads})
    return {"gflops": max(e["gflops"] for e in engines), "size": size, "threads": threads,
            "engines": engines}


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
    runs: dict[int, list[Run]] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.backend is not None


def make_request(batch: int, seed: int, num_classes: int, guidance: float,
                 temperature: float) -> Request:
    """Seeds seed.., classes cycling through the bundle's (the null class if it has none)."""
    classes = (np.arange(batch) % num_classes if num_classes else np.zeros(batch)).astype(np.int64)
    return Request(philox.seed_range(seed, batch), classes, float(guidance), float(temperature))


def run_rounds(contenders: list[Contender], requests: dict[int, Request], num_steps: int,
               warmup: int, iters: int, log=lambda message: None,
               settle: float = SETTLE_SECONDS) -> list[dict]:
    """For each batch: warmup + iters rounds, each running every available contender once, in
    the same order (A B A B ...). Returns the order of the runs; timings go into contenders.

    Before each run we sleep `settle` seconds: thread pools (onnxruntime's, OpenMP's) may spin
    for a while after a run, and on few cores that would slow whoever runs next.
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
                time.sleep(settle)
                if track_rss:
                    reset_peak_rss()
                c.backend.reset_device_peak()
                start = time.perf_counter()
                try:
                    c.backend.generate(request, clock)
                except Exception as e:  # noqa: BLE001 - only "fragile" backends get here
                    if not c.backend.fragile:
                        raise
                    c.backend, c.reason = None, f"failed at batch {batch}: {_first_line(e)}"
                    c.runs.clear()
                    log(f"{c.name}: unavailable ({c.reason})")
                    continue
                clock.total = time.perf_counter() - start
                order.append({"backend": c.name, "batch": batch, "round": round_,
                              "warmup": is_warmup})
                log(f"batch {batch:>3}  {'warmup' if is_warmup else 'round '} "
                    f"{round_ - warmup if not is_warmup else round_:>2}  {c.name:<14} "
                    f"{clock.total * 1e3:10.1f} ms")
                if not is_warmup:
                    c.runs[batch].append(Run(clock, peak_rss_bytes(),
                                             c.backend.device_peak_bytes()))
    return order


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --- summary ------------------------------------------------------------------------------------

def stats(values) -> dict:
    """min, mean, p50, p90, p99, max (numpy's linear interpolation, so they are ordered)."""
    v = np.asarray(values, np.float64)
    p = np.percentile(v, PERCENTILES)
    return {"min": float(v.min()), "mean": float(v.mean()), "p50": float(p[0]),
            "p90": float(p[1]), "p99": float(p[2]), "max": float(v.max())}


def summarize_cell(name: str, batch: int, runs: list[Run], step_flops: int | None,
                   peak_gflops: float | None) -> dict:
    clocks = [r.clock for r in runs]
    total = sum(c.total for c in clocks)
    sums = {"initial": sum(c.initial for c in clocks),
            "step_model": sum(sum(c.model) for c in clocks),
            "step_sampling": sum(sum(c.sampling) for c in clocks),
            "decode": sum(c.decode for c in clocks)}
    samples = {"initial": [c.initial for c in clocks],
               "step_model": [t for c in clocks for t in c.model],
               "step_sampling": [t for c in clocks for t in c.sampling],
               "decode": [c.decode for c in clocks]}
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
        "per_step": [{"step": i,
                      "model_p50": float(np.median([c.model[i] for c in clocks])),
                      "sampling_p50": float(np.median([c.sampling[i] for c in clocks]))}
                     for i in range(num_steps)],
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
            r["step_speedup"] = (b["stages"]["step_model"]["p50"]
                                 / r["stages"]["step_model"]["p50"])


def machine_info(rss_scope: str) -> dict:
    processor = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            processor = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), processor)
    except OSError:
        pass
    return {"platform": platform.platform(), "processor": processor,
            "logical_cores": os.cpu_count(), "usable_cores": usable_cores(),
            "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": ort.__version__, "rss_scope": rss_scope}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def benchmark(bundle_dir, backends: list[str], batches: list[int], run_dir=None,
              steps: int | None = None, warmup: int = 1, iters: int = 5,
              threads: int | None = None, guidance: float | None = None,
              temperature: float | None = None, seed: int = 0, precision: str = "fp32",
              measure_peak: bool = True, log=lambda message: None) -> dict:
    """Run the whole benchmark and return the JSON-ready report (schema "bld-bench/1")."""
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    K = m.schedule.sampling_steps
    if steps is not None and steps != K:
        raise InvalidRequestError(
            f"this bundle samples {K} steps (its step graphs hold the schedule); to benchmark "
            f"{steps} steps, export a run whose prior has sampling_steps={steps}")
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
    suffix = "" if precision == "fp32" else f"_{precision}"
    step_graph = ("step_guided" if guidance > 0 else "step") + suffix
    step_flops = m.graphs[step_graph].flops if step_graph in m.graphs else None
    decoder = m.graphs.get("decoder" + suffix)

    contenders = []
    for name in backends:
        rss0, t0 = current_rss_bytes(), time.perf_counter()
        try:
            backend = open_backend(name, bundle.directory, run_dir, threads, K, precision)
        except BackendUnavailableError as e:
            log(f"{name}: unavailable ({e})")
            contenders.append(Contender(name, _kind(name), None, reason=str(e)))
            continue
        rss1 = current_rss_bytes()
        contenders.append(Contender(name, backend.kind, backend,
                                    load_seconds=time.perf_counter() - t0,
                                    load_rss_bytes=rss1 - rss0 if rss0 and rss1 else None))
    if not any(c.available for c in contenders):
        raise BackendUnavailableError("none of the backends can run here: " + "; ".join(
            f"{c.name}: {c.reason}" for c in contenders))

    peak = None
    if measure_peak:
        log(f"measuring the GEMM peak ({threads} threads)")
        peak = gemm_peak(threads)
    requests = {b: make_request(b, seed, m.classes.count, guidance, temperature)
                for b in batches}
    rss_scope = "run" if reset_peak_rss() else "process"
    order = run_rounds(contenders, requests, K, warmup, iters, log)
    if measure_peak:  # again after the runs: on a shared machine one measurement may be low
        again = gemm_peak(threads)
        peak = again if again["gflops"] > peak["gflops"] else peak

    results = [summarize_cell(c.name, b, c.runs[b], step_flops, peak and peak["gflops"])
               for b in batches for c in contenders if c.available and b in c.runs]
    baseline = next((c.name for c in contenders if c.available and c.kind == "torch"), None)
    add_speedups(results, baseline)
    return {
        "schema": SCHEMA,
        "bundle": {"path": str(bundle.directory), "image": list(m.image.shape),
                   "latent": list(m.latent.shape), "steps": K, "classes": m.classes.count,
                   "step_graph": step_graph, "step_flops": step_flops,
                   "decoder_flops": decoder.flops if decoder else None},
        "settings": {"backends": list(backends), "batches": list(batches), "warmup": warmup,
                     "iters": iters, "threads": threads, "guidance": float(guidance),
                     "temperature": float(temperature), "seed": seed, "precision": precision},
        "machine": machine_info(rss_scope),
        "gemm_peak": peak,
        "backends": [{"name": c.name, "kind": c.kind, "available": c.available,
                      "reason": c.reason,
                      "threads": c.backend.threads if c.available else None,
                      "load_seconds": c.load_seconds, "load_rss_bytes": c.load_rss_bytes}
                     for c in contenders],
        "order": order,
        "baseline": baseline,
        "results": results,
    }


def _kind(name: str) -> str:
    return "runtime" if name in BACKENDS else "torch"


# --- output: table and plot ---------------------------------------------------------------------

def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}" if seconds < 1 else \
        f"{seconds * 1e3:.0f}"


def render_table(report: dict, console) -> None:
    from rich.table import Table

    b = report["bundle"]
    peak = report["gemm_peak"]
    title = (f"{b['path']}: {b['image'][0]}x{b['image'][1]}x{b['image'][2]}, "
             f"{b['latent'][0]}x{b['latent'][1]} bits, {b['steps']} steps, "
             f"{report['settings']['threads']} threads")
    table = Table(title=title, title_justify="left")
    for col in ("batch", "backend", "p50 ms", "p90 ms", "p99 ms", "max ms", "img/s",
                "step ms", "sample ms", "decode ms", "overhead", "GFLOP/s", "% peak",
                "peak RSS", f"vs {report['baseline'] or '-'}"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in report["results"]:
        lat, st = r["latency"], r["stages"]
        table.add_row(
            str(r["batch"]), r["backend"], _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]),
            _ms(lat["max"]), f"{r['images_per_second']:.2f}", _ms(st["step_model"]["p50"]),
            _ms(st["step_sampling"]["p50"]), _ms(st["decode"]["p50"]),
            f"{r['overhead_share']:.1%}",
            "-" if r["step_gflops_per_second"] is None else f"{r['step_gflops_per_second']:.1f}",
            "-" if r["gemm_peak_share"] is None else f"{r['gemm_peak_share']:.0%}",
            "-" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**20:.0f} MB",
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x")
    console.print(table)
    if peak:
        engines = ", ".join(f"{e['engine']} {e['gflops']:.1f}" for e in peak["engines"])
        console.print(f"GEMM peak (fp32 {peak['size']}^3, {peak['threads']} threads): "
                      f"{peak['gflops']:.1f} GFLOP/s ({engines}). step ms / sample ms: median "
                      "model and sampling time of one denoising step; overhead: everything but "
                      "the model calls.")
    for c in report["backends"]:
        if not c["available"]:
            console.print(f"[yellow]{c['name']}: unavailable[/yellow] ({c['reason']})")


def write_plot(report: dict, path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BldError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["backend"] for r in report["results"]):
        rows = sorted((r for r in report["results"] if r["backend"] == name),
                      key=lambda r: r["batch"])
        x = [r["batch"] for r in rows]
        p50 = [r["latency"]["p50"] * 1e3 for r in rows]
        p90 = [r["latency"]["p90"] * 1e3 for r in rows]
        line, = left.plot(x, p50, marker="o", label=name)
        left.fill_between(x, p50, p90, color=line.get_color(), alpha=0.2)
        right.plot(x, [r["images_per_second"] for r in rows], marker="o", label=name)
    for ax, label in ((left, "latency per generation, ms (p50, band to p90)"),
                      (right, "images per second")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    b = report["bundle"]
    fig.suptitle(f"{Path(b['path']).name}: {b['image'][0]}x{b['image'][1]}, {b['steps']} steps, "
                 f"{report['settings']['threads']} threads")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the command --------------------------------------------------------------------------------

def _int_list(ctx, param, value):
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"batch sizes must be integers >= 1, got {value!r}")
    return out


def _names(ctx, param, value):
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@click.command(help="Time the sampling loop stage by stage, side by side with PyTorch.")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--backend", "backend_names", multiple=True, callback=_names,
              help="cpu, cuda, tensorrt-ep, torch, torch-compile; repeat or comma-separate "
                   "(default: cpu, plus torch with --run). They run in turns, A B A B.")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="The run directory the bundle was exported from (for torch backends).")
@click.option("--batch", "batches", default="1,4,16", callback=_int_list, show_default=True,
              help="Batch sizes, comma-separated.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Denoising steps; must match the bundle's (default: the bundle's).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed rounds per batch size (torch.compile compiles in these).")
@click.option("--iters", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed rounds per batch size.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for every backend and the GEMM peak (default: usable cores).")
@click.option("--guidance", type=click.FloatRange(min=0), default=None,
              help="Guidance scale (default: the bundle's).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Temperature (default: the bundle's).")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=0, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True, help="Which graphs the runtime backends run.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (schema bld-bench/1) instead of the table.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write latency and throughput vs batch size per backend to this PNG.")
@click.option("--no-peak", is_flag=True, help="Skip measuring the GEMM peak.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(bundle, backend_names, run_dir, batches, steps, warmup, iters, threads, guidance,
          temperature, seed, precision, as_json, plot, no_peak, quiet):
    import json

    from rich.console import Console

    err = Console(stderr=True)
    names = backend_names or (["cpu", "torch"] if run_dir else ["cpu"])
    try:
        if plot is not None:  # fail before minutes of measuring, not after
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise BldError("--plot needs matplotlib (pip install matplotlib)") from None
        report = benchmark(bundle, names, batches, run_dir=run_dir, steps=steps, warmup=warmup,
                           iters=iters, threads=threads, guidance=guidance,
                           temperature=temperature, seed=seed, precision=precision,
                           measure_peak=not no_peak,
                           log=(lambda s: None) if quiet else (lambda s: err.print(s)))
        if plot is not None:
            write_plot(report, plot)
    except BldError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: do not squeeze the table into 80 columns
            console = Console(width=160)
        render_table(report, console)


def main():  # python -m bld_runtime.bench, before the `bld` entry point exists
    bench(prog_name="bld bench")


if __name__ == "__main__":
    main()
