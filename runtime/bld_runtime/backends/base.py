"""The interface every backend implements, and what they share.

A backend owns one onnxruntime session per graph kind of a bundle (the chosen precision's
graphs), created at load from the very bytes whose sha256 was checked, and checked against the
manifest: the I/O the session reports and the facts the graph records (manifest.check_graph_facts).
A `Loop` is the preallocated state of one batch going through the K denoising steps; the pipeline
drives it (`start`, then `run_step` + `advance` K times, then `read_bits`), the backend decides
where bits and probabilities live (host numpy arrays for "cpu", device memory for "cuda") and how
the contract's draws are made there. Nothing in a loop allocates after it is made.

Threads: one backend may serve several threads at once. Sessions are shared (onnxruntime's
run is thread-safe); loops are not, so `Backend.loop(batch)` lends each caller a loop of its own
from a pool and takes it back when the caller is done.
"""

from __future__ import annotations

import contextlib
import operator
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from numpy.typing import NDArray

from ..errors import BackendError, BackendUnavailableError, InvalidRequestError, ManifestError
from ..manifest import (
    BATCH,
    FP16_SUFFIX,
    INT8_SUFFIX,
    KINDS,
    Bundle,
    GraphSpec,
    Manifest,
    check_graph_facts,
)
from ..request import RequestChunk
from ..trt_flavours import FLAVOURS
from . import ALL_PRECISIONS, ENGINE_PRECISIONS, PRECISIONS, THREAD_POOLS  # noqa: F401 (re-export)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Precisions that only some backends run, and which: "int8" (the bundle's *_int8 step graphs, QDQ)
# on "cpu", "openvino" and "tensorrt" (engines of those graphs), "bf16" (below) on "openvino".
# Every other backend refuses them in one sentence.
ONLY_ON = {"int8": ("cpu", "openvino", "tensorrt"), "bf16": ("openvino",)}
ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "uint8": "tensor(uint8)",
    "bool": "tensor(bool)",
}
# Where onnxruntime looks for external-data files of a graph loaded from bytes: an empty folder,
# so that such a graph fails to load instead of reading files from the working directory.
_EXTERNAL_DATA_KEY = "session.model_external_initializers_file_folder_path"
T = TypeVar("T")


# The process's shared onnxruntime pool, once made: (intra-op, inter-op threads). onnxruntime has
# one per process, and once it exists it refuses sessions with pools of their own.
_shared_pool: tuple[int, int] | None = None
# pin_threads: the CPU the pinned pool leaves to the thread that generates (caller_pin), and
# the CPUs its own threads are made on (pool_cpus).
_pinned_caller_cpu: int | None = None
_pinned_pool_cpus: list[int] | None = None
_shared_pool_lock = threading.Lock()  # pipelines may be loaded from several threads
# Held by the one generation that has the pinned core: concurrent ones run unpinned rather than
# queue up on one core.
_caller_pin_lock = threading.Lock()


def use_shared_pool(intra: int, inter: int, pin: bool = False) -> None:
    """Make (once) or join this process's shared onnxruntime thread pool of `intra` threads;
    `pin`: its threads on the usable CPUs after the first (BackendOptions.pin_threads)."""
    with _shared_pool_lock:
        _use_shared_pool(intra or usable_cores(), inter or 1, pin)


def _use_shared_pool(intra: int, inter: int, pin: bool) -> None:
    global _shared_pool, _pinned_caller_cpu, _pinned_pool_cpus
    if _shared_pool is None:
        if pin:
            # onnxruntime's Python API sets no affinity for this pool, but its threads inherit
            # the mask of the thread that makes them: onnxruntime 1.32 makes them here, builds
            # that make their environment lazily with the first session (pool_cpus).
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < intra:
                raise InvalidRequestError(
                    f"pin_threads needs a usable core for each of the {intra} intra-op threads, "
                    f"and this process may use {len(cpus)}"
                )
            pool = cpus[1:intra] or cpus[:1]
            with _affinity(pool):
                ort.set_global_thread_pool_sizes(intra, inter)
            _pinned_caller_cpu, _pinned_pool_cpus = cpus[0], pool
        else:
            ort.set_global_thread_pool_sizes(intra, inter)
        _shared_pool = (intra, inter)
    elif _shared_pool != (intra, inter):
        raise InvalidRequestError(
            f"this process's shared onnxruntime thread pool has {_shared_pool[0]} intra-op and "
            f"{_shared_pool[1]} inter-op threads, and onnxruntime has one per process: ask for "
            f"the same, not {intra} and {inter}"
        )
    elif pin != (_pinned_caller_cpu is not None):
        raise InvalidRequestError(
            "this process's shared onnxruntime thread pool is "
            + ("" if _pinned_caller_cpu is not None else "not ")
            + "pinned, and onnxruntime has one per process: ask for the same pin_threads"
        )


@contextlib.contextmanager
def _affinity(cpus: list[int]) -> Iterator[None]:
    """The calling thread on `cpus` inside the block, on the CPUs it had after it."""
    try:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    except OSError as e:  # a cpuset changed under us
        raise InvalidRequestError(f"pin_threads cannot set this thread's CPUs: {e}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, saved)


def pool_cpus(options: BackendOptions) -> contextlib.AbstractContextManager[None]:
    """For making a session: with pin_threads, on the pinned pool's CPUs (a build of
    onnxruntime that makes its environment, and so the pool's threads, with the first session
    makes them there)."""
    if options.pin_threads and _pinned_pool_cpus is not None:
        return _affinity(_pinned_pool_cpus)
    return contextlib.nullcontext()


@contextlib.contextmanager
def caller_pin(options: BackendOptions) -> Iterator[None]:
    """For a generation: with pin_threads, the calling thread on the CPU the pinned shared pool
    leaves it (the pool's spinning threads never share its core), given back its CPUs after. One
    generation at a time holds that core; concurrent ones run where the system puts them. The
    callback runs pinned too, and threads it starts keep that one-core mask."""
    if not options.pin_threads or _pinned_caller_cpu is None:
        yield
        return
    if not _caller_pin_lock.acquire(blocking=False):
        yield
        return
    try:
        try:
            saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, [_pinned_caller_cpu])
        except OSError:  # a cpuset changed under us: run unpinned, as the C++ runtime does
            saved = None
        try:
            yield
        finally:
            if saved is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, saved)
    finally:
        _caller_pin_lock.release()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BackendOptions:
    """Session and device settings. 0 threads means onnxruntime's default (one per core)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"  # disable | basic | extended | all
    device_id: int = 0  # CUDA device, for the GPU backends
    # The engine cache: bld-export engine's (native "tensorrt" backend; default BUNDLE/engines)
    # and onnxruntime's own engines in a subfolder of it ("tensorrt-ep").
    trt_cache_dir: str | None = None
    trt_fp16: bool = False  # let TensorRT pick fp16 kernels ("tensorrt-ep")
    trt_timing_cache: str | None = None  # timing cache file, shared by builds ("tensorrt-ep")
    trt_flavour: str | None = None  # "tensorrt" | "tensorrt_rtx" | None: the first importable
    trt_rebuild_if_stale: bool = False  # "tensorrt": rebuild refused engines (bld_engines)
    trt_dla_core: int | None = None  # "tensorrt": run the engines built for this DLA core
    # Park onnxruntime's intra-op threads when a graph call ends instead of letting them spin:
    # between step calls the loop samples on the calling thread, and after the loop the decoder
    # runs in another session, and threads still spinning would take the cores from both. The
    # price: every call wakes its threads, and on a busy VM a parked thread may wake late (the
    # step graph's mean measured 2.5x its median at batch 1); thread_pool="shared" avoids both,
    # where the process allows it. Applies to pools per session only.
    stop_spinning: bool = True
    # "session": each session its own intra-op pool. "shared": one pool for the whole process
    # (onnxruntime's global pool), so the step graphs and the decoder run on the same threads,
    # which may then spin between the K step calls without taking the cores from another pool:
    # measured 1.5-2x faster at batches 1 and 4 on the digits model (README, Speed). onnxruntime
    # allows one such pool per process and then refuses sessions with pools of their own, so it
    # is for processes whose onnxruntime sessions all use it: the CLIs' default (--thread-pool,
    # $BLD_THREAD_POOL), not the library's, which may share its process with other sessions.
    thread_pool: str = "session"
    # thread_pool="shared" only (Linux): the shared pool's threads on the usable CPUs after the
    # first, and the thread that generates on the first, for the call (caller_pin: one
    # generation at a time; its callback runs pinned too). On the README's 2-core VM, without
    # it, batch-1 generations of the digits model often took twice their median: the pool's
    # spinning thread had landed on the caller's core. The openvino and tensorrt backends never
    # pin the caller.
    pin_threads: bool = False

    def __post_init__(self) -> None:
        cores = usable_cores()
        for name in ("intra_op_threads", "inter_op_threads", "device_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequestError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) > cores:
                raise InvalidRequestError(
                    f"{name} is {getattr(self, name)}, more than the {cores} cores this process "
                    "may use (more threads than cores only slows onnxruntime down)"
                )
        if self.trt_dla_core is not None and (
            not isinstance(self.trt_dla_core, int)
            or isinstance(self.trt_dla_core, bool)
            or self.trt_dla_core < 0
        ):
            raise InvalidRequestError(
                f"trt_dla_core must be None or an integer >= 0, got {self.trt_dla_core!r}"
            )
        if self.trt_flavour is not None and self.trt_flavour not in FLAVOURS:
            raise InvalidRequestError(
                f"trt_flavour must be None or one of {', '.join(FLAVOURS)}, "
                f"got {self.trt_flavour!r}"
            )
        for name in ("trt_cache_dir", "trt_timing_cache"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InvalidRequestError(
                    f"{name} must be None or a path (str), got {getattr(self, name)!r}"
                )
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise InvalidRequestError(
                f"graph_optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                f"got {self.graph_optimization!r}"
            )
        if self.thread_pool not in THREAD_POOLS:
            raise InvalidRequestError(
                f"thread_pool must be one of {', '.join(THREAD_POOLS)}, got {self.thread_pool!r}"
            )
        for name in ("trt_fp16", "stop_spinning", "trt_rebuild_if_stale", "pin_threads"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(
                    f"{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.pin_threads and self.thread_pool != "shared":
            raise InvalidRequestError(
                "pin_threads needs thread_pool 'shared': it pins the shared pool's threads"
            )
        if self.pin_threads and not hasattr(os, "sched_setaffinity"):
            raise InvalidRequestError("pin_threads needs Linux (os.sched_setaffinity)")

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = OPTIMIZATION_LEVELS[self.graph_optimization]
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Fatal only: a failed call raises (and we report it once); ORT's own error log would
        # print it a second time, and its warnings are not the user's business.
        so.log_severity_level = 4
        if self.thread_pool == "shared":  # the pool's sizes are the process's, set once
            use_shared_pool(self.intra_op_threads, self.inter_op_threads, self.pin_threads)
            so.use_per_session_threads = False
            return so
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        if _shared_pool is not None:
            raise InvalidRequestError(
                "this process has a shared onnxruntime thread pool (thread_pool='shared'), and "
                "onnxruntime then refuses sessions with pools of their own: use "
                "thread_pool='shared' here too"
            )
        if self.stop_spinning:
            so.add_session_config_entry("session.force_spinning_stop", "1")
        return so


@dataclass(frozen=True)
class Graph:
    """One graph a backend runs: its kind ("step"), manifest name ("step_fp16") and spec."""

    kind: str
    name: str
    spec: GraphSpec

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.spec.input_names

    @property
    def output(self) -> str:
        return self.spec.outputs[0].name


def graph_names(bundle: Bundle, precision: str) -> dict[str, str]:
    """Graph names by kind for a precision. fp16 swaps in the *_fp16 graphs, except the encoder,
    which is always fp32; int8 swaps in the *_int8 step graphs (encoder and decoder fp32); an
    engine precision (bf16) runs the fp32 graphs."""
    if precision not in ALL_PRECISIONS:
        raise InvalidRequestError(
            f"precision must be one of {', '.join(ALL_PRECISIONS)}, got {precision!r}"
        )
    names = {}
    for kind in KINDS:
        name = kind
        if precision == "fp16" and kind != "encoder":
            name = kind + FP16_SUFFIX
        elif precision == "int8" and kind in ("step", "step_guided"):
            name = kind + INT8_SUFFIX
        if name not in bundle.manifest.graphs:
            raise ManifestError(
                f"bundle {bundle.directory} has no {name!r} graph, which "
                f"precision {precision!r} needs (export with --{precision})"
            )
        names[kind] = name
    return names


class Loop(ABC):
    """One batch size's preallocated state for the K-step loop.

    The pipeline calls `start` once per batch, then for i = 0..K-1 `run_step(i)` (the step graph
    on the current bits) and `advance(i)` (the contract's draw, or the threshold at i = K-1,
    then the inpainting mask). Bits are uint8 0/1 on the host side of the interface.
    A loop serves one caller at a time (Backend.loop lends it out).
    """

    batch: int

    @abstractmethod
    def start(self, chunk: RequestChunk) -> None:
        """Load one batch's request and draw the initial state (Philox subsequence 0, p = 0.5),
        masked.

        Args:
            chunk: The batch's rows (`Request.chunk`): exactly `batch` of them; its mask and
                known bits are (batch, L, C) 0/1, or None without inpainting.
        """

    @abstractmethod
    def run_step(self, i: int) -> None:
        """Run the step graph for step i on the current bits; the probabilities stay inside."""

    @abstractmethod
    def advance(self, i: int) -> None:
        """Replace the bits: draw from the probabilities with subsequence i + 1 for i < K - 1,
        threshold p > 0.5 at i = K - 1; then write the known bits back where the mask is 1."""

    @abstractmethod
    def set_bits(self, bits: NDArray[np.uint8]) -> None:
        """Overwrite the current state (teacher forcing in parity tests)."""

    @abstractmethod
    def read_bits(self, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Copy the current bits into `out` (uint8, (batch, L, C)) and return it."""

    @abstractmethod
    def read_probs(self, out: NDArray[np.float32]) -> NDArray[np.float32]:
        """Copy the last step's probabilities into `out` (float32, (batch, L, C))."""

    @abstractmethod
    def bits_view(self) -> NDArray[np.uint8]:
        """The current bits as a host uint8 array, valid until the next call (for previews)."""

    def run_all(self) -> bool:
        """Run steps 0..K-1 (run_step + advance each) in one go after `start`, or return False
        when this loop only runs step by step. The native TensorRT loop replays all K steps as
        one CUDA graph."""
        return False


class Backend(ABC):
    """onnxruntime sessions for one bundle's graphs plus a pool of loops per batch size."""

    name: str = ""
    max_idle_loops = 4  # kept for reuse; a full chunk and a remainder are the common case
    precisions: tuple[str, ...] = ("fp32", "fp16")  # what this backend runs (see ONLY_ON)

    def __init__(
        self, bundle: Bundle, precision: str = "fp32", options: BackendOptions | None = None
    ):
        if options is not None and not isinstance(options, BackendOptions):
            raise InvalidRequestError("options must be a bld_runtime.backends.BackendOptions")
        if precision in ONLY_ON and precision not in self.precisions:
            names = ONLY_ON[precision]
            where = (
                f"backend {names[0]!r}"
                if len(names) == 1
                else "backends " + ", ".join(repr(n) for n in names[:-1]) + f" and {names[-1]!r}"
            )
            raise BackendUnavailableError(
                f"precision {precision!r} runs on {where} only; backend "
                f"{self.name!r} runs {', '.join(self.precisions)}"
            )
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.precision = precision
        self.options = options or BackendOptions()
        self.latent: tuple[int, int] = self.manifest.latent.shape
        self.num_steps = self.manifest.schedule.sampling_steps
        self.graphs = {
            kind: Graph(kind, name, self.manifest.graphs[name])
            for kind, name in graph_names(bundle, precision).items()
        }
        self._pool_lock = threading.Lock()
        self._idle: list[Loop] = []  # loops not lent out, oldest first
        self._prepare()
        self._sessions = {kind: self._load_session(graph) for kind, graph in self.graphs.items()}

    def _prepare(self) -> None:  # noqa: B027 - optional: the CPU backend has nothing to check
        """Check that this backend can run here, before any graph is read (override)."""

    # --- sessions ------------------------------------------------------------------------

    @abstractmethod
    def providers(self) -> list[Any]:
        """The execution providers (with options) of this backend's sessions."""

    def providers_for(self, kind: str) -> list[Any]:
        """The providers of one graph kind's session (the TensorRT EP adds the graph's batch
        profile); by default `providers()`."""
        return self.providers()

    def _load_session(self, graph: Graph) -> ort.InferenceSession:
        """A session made from the graph's verified bytes, checked against the manifest."""
        providers = self.providers_for(graph.kind)
        data, options = self.bundle.read_graph(graph.name), self.options.session_options()
        with pool_cpus(self.options):
            session = checked_session(self.manifest, graph, data, options, providers)
        self._check_providers(session, providers)
        return session

    def session(self, kind: str) -> ort.InferenceSession:
        return self._sessions[kind]

    def pinned_caller(self) -> contextlib.AbstractContextManager[None]:
        """For a generation: `caller_pin` with this backend's options (a backend whose threads
        are not onnxruntime's shared pool's overrides it)."""
        return caller_pin(self.options)

    def _check_providers(self, sess: ort.InferenceSession, providers: list[Any]) -> None:
        """onnxruntime silently falls back to the CPU when a provider cannot start: refuse."""
        wanted = [p[0] if isinstance(p, tuple) else p for p in providers]
        if wanted[0] not in sess.get_providers():
            raise BackendUnavailableError(
                f"backend {self.name!r}: onnxruntime could not start {wanted[0]} (it fell back to "
                f"{', '.join(sess.get_providers())}); check the CUDA/TensorRT installation"
            )

    # --- the loop ------------------------------------------------------------------------

    @contextlib.contextmanager
    def loop(self, batch: int) -> Iterator[Loop]:
        """Lend the caller a loop for `batch` images: an idle one of that size, else a new one.

        While lent, no other caller gets it; afterwards it goes back to the pool (which keeps
        at most `max_idle_loops`, dropping the oldest).
        """
        batch = operator.index(batch)
        if batch < 1:
            raise InvalidRequestError(f"batch size must be at least 1, got {batch}")
        with self._pool_lock:
            found = next((i for i, lp in enumerate(self._idle) if lp.batch == batch), None)
            loop = self._idle.pop(found) if found is not None else None
        if loop is None:
            loop = self._make_loop(batch)
        try:
            yield loop
        finally:
            with self._pool_lock:
                self._idle.append(loop)
                del self._idle[: -self.max_idle_loops]

    @abstractmethod
    def _make_loop(self, batch: int) -> Loop: ...

    # --- encoder and decoder: once per request, not per step, so plain run() is enough ----

    def encode(self, images: npt.ArrayLike) -> NDArray[np.float32]:
        """float32 NCHW images in [-1, 1] -> float32 (B, L, C) bit probabilities."""
        return self._run("encoder", np.ascontiguousarray(images, np.float32))

    def decode(self, bits: npt.ArrayLike) -> NDArray[np.float32]:
        """(B, L, C) 0/1 bits -> float32 NCHW images, roughly in [-1, 1]."""
        return self._run("decoder", np.ascontiguousarray(bits, np.float32))

    def step_probs(
        self,
        bits: npt.ArrayLike,
        step: npt.ArrayLike,
        classes: npt.ArrayLike,
        temperature: npt.ArrayLike,
        guidance: npt.ArrayLike | None = None,
    ) -> NDArray[np.float32]:
        """One step graph call on given arrays (outside the loop: for tests and tools)."""
        values: list[NDArray[Any]] = [
            np.ascontiguousarray(bits, np.float32),
            np.ascontiguousarray(step, np.int64),
            np.ascontiguousarray(classes, np.int64),
            np.ascontiguousarray(temperature, np.float32),
        ]
        if guidance is None:
            return self._run("step", *values)
        return self._run("step_guided", *values, np.ascontiguousarray(guidance, np.float32))

    def _run(self, kind: str, *values: NDArray[Any]) -> NDArray[np.float32]:
        graph = self.graphs[kind]
        feeds = dict(zip(graph.inputs, values, strict=True))
        session = self._sessions[kind]
        outputs: list[NDArray[np.float32]] = run_guarded(graph, session.run, [graph.output], feeds)
        return outputs[0]


def checked_session(
    manifest: Manifest, graph: Graph, data: bytes, options: ort.SessionOptions, providers: list[Any]
) -> ort.InferenceSession:
    """A session made from `data` (the graph's bytes, already checked against its sha256), with
    external data refused, its I/O and its recorded facts (bld.graph) checked against the
    manifest. The backends load their graphs through it; bld_engines checks a graph with it
    before handing the same bytes to TensorRT."""
    empty = tempfile.mkdtemp(prefix="bld-no-external-data-")
    options.add_session_config_entry(_EXTERNAL_DATA_KEY, empty)
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
        raise _load_error(graph, e) from None
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    check_session_io(graph, session)
    check_graph_facts(manifest, graph.name, session.get_modelmeta().custom_metadata_map)
    return session


def _load_error(graph: Graph, error: Exception) -> ManifestError:
    text = _first_line(error)
    where = f"graph {graph.name!r} ({graph.spec.file})"
    if "external data" in text.lower():
        return ManifestError(
            f"{where} keeps tensors in external data files, which bundles "
            "do not allow (every graph must be one self-contained .onnx "
            "file covered by its sha256)"
        )
    return ManifestError(f"onnxruntime cannot load {where}: {text}")


def run_guarded(graph: Graph, call: Callable[..., T], *args: Any, engine: str = "onnxruntime") -> T:
    """call(*args), one graph call of `engine` (onnxruntime, openvino); its failures become
    one-line BackendErrors."""
    try:
        return call(*args)
    except MemoryError:
        raise BackendError(
            f"out of memory running graph {graph.name!r}; send a smaller batch "
            "(the bundle's max_batch bounds each call)"
        ) from None
    except Exception as e:  # noqa: BLE001 - onnxruntime and OpenVINO raise their own types
        raise BackendError(
            f"{engine} failed running graph {graph.name!r}: {_first_line(e)}"
        ) from None


def check_session_io(graph: Graph, session: ort.InferenceSession) -> None:
    """Refuse a graph whose real inputs/outputs differ from what the manifest lists for it."""
    where = f"graph {graph.name!r} ({graph.spec.file})"
    for direction, listed, actual in (
        ("input", graph.spec.inputs, session.get_inputs()),
        ("output", graph.spec.outputs, session.get_outputs()),
    ):
        names = [a.name for a in actual]
        if names != [s.name for s in listed]:
            raise ManifestError(
                f"{where} has {direction}s {names}, but the manifest lists "
                f"{[s.name for s in listed]}"
            )
        for spec, arg in zip(listed, actual, strict=True):
            if arg.type != ORT_TYPES[spec.dtype]:
                raise ManifestError(
                    f"{where}: {direction} {spec.name!r} has type {arg.type}, but "
                    f"the manifest says {spec.dtype}"
                )
            shape = [BATCH if isinstance(d, str) or d is None else d for d in arg.shape]
            if shape != list(spec.shape):
                raise ManifestError(
                    f"{where}: {direction} {spec.name!r} has shape {arg.shape}, "
                    f"but the manifest says {list(spec.shape)}"
                )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line.removeprefix("[ONNXRuntimeError] : ").strip()


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def require_provider(backend: str, provider: str, hint: str) -> None:
    if provider not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"backend {backend!r} needs onnxruntime's {provider} ({hint}); this onnxruntime "
            f"{ort.__version__} has {', '.join(available_providers())}"
        )
