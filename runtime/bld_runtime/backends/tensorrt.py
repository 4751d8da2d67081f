"""The native TensorRT backend: engines from the engine cache, the K-step loop as a CUDA graph.

No torch, no CuPy, no onnxruntime on the hot path: cuda-python (backends/cudart.py) for
memory, one stream and graphs; the contract's draw is the NVRTC-compiled KERNELS
(backends/kernels.py, built from csrc/bld_philox.h like every other native sampler).

Per batch size a loop owns device buffers allocated once (state bits, probabilities, the
request's seeds/classes/temperatures/guidance, the inpainting mask, and a K x batch table of
step indices so that every step's `step` input has its own fixed address), and one execution
context per step graph with the profile that covers the batch. The K steps (enqueue, then the
draw or the last step's threshold) are captured once per (batch size, guided, masked) into a
CUDA graph and replayed: trtexec's recipe, i.e. profile and shapes set and one warm-up enqueue
outside the capture, the capture in thread-local mode, and if execute_async_v3 fails inside it
the capture is ended and the loop runs without a graph. The host uploads the request, launches,
and reads back the final bits; the decoder runs on the same stream.

Engines are loaded only through EngineCache.find/load_plan: manifest, plan sha256 and header
are checked before deserialising, and an engine built for another graph, TensorRT version, GPU,
precision or batch range is refused with the command that rebuilds it. The facts its graph
recorded (bld.graph, checked against bld.json by the builder and kept in the engine's
manifest) are checked against this bundle's bld.json. The ONNX files are not read: the
engine's key names the graph by the sha256 that bld.json lists. Each graph kind's engine (the
one covering the largest batch) is loaded with the backend, so a missing or stale engine fails
Pipeline.load; a batch size outside its profiles finds its own engine on first use, or is
refused then with the command that builds one. A TensorRT Runtime is constructed only after
cudart.probe() found a device (without one it crashes the process).

Device: everything (allocations, streams, launches, deserialising) happens on
options.device_id, from any thread: cudaSetDevice is per thread, so every entry point binds
the device first (`use_device`), not only the thread that loaded the backend.

Scratch memory: execution contexts are created with user-managed device memory, never
TensorRT's own per context (each sized for the largest profile: 1-2 GB for the 256px decoder
in fp32). A loop's contexts (step, step_guided) share one buffer sized for its batch's
profiles, since a loop runs one step at a time on its own stream; the encoder, decoder and
single-step contexts share one buffer of the backend, since they run under its lock and
synchronise before returning. TensorRT-RTX engines are built with REQUIRE_USER_ALLOCATION
(needed to capture them), which this satisfies.

Version-compatible plans carry their own lean runtime, which TensorRT runs only when the
Runtime allows engine host code (trtexec opts in the same way): allowed only for plans whose
checked manifest says VERSION_COMPATIBLE. Hardware-compatible plans are refused on a Jetson,
where TensorRT does not support them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from importlib import metadata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..engine_cache import CachedEngine, EngineCache, RuntimeTarget
from ..errors import BackendError, BackendUnavailableError, ManifestError, StaleEngineError
from ..manifest import GRAPH_METADATA_KEY, GraphSpec, check_graph_facts
from ..request import RequestChunk
from ..trt_flavours import import_flavour, on_jetson
from . import cudart
from .base import Backend, Graph, Loop
from .cudart import I32, I64, PTR, U64, DeviceBuffer, copy_to_device, copy_to_host
from .kernels import KERNELS

THREADS = 256
#: Every TensorRT name this backend uses (dotted from the module). A test resolves them in the
#: real lean runtimes of TensorRT 10.16 and 11.4 and in TensorRT-RTX.
TRT_NAMES = (
    "Logger",
    "Logger.ERROR",
    "Runtime",
    "Runtime.DLA_core",
    "Runtime.num_DLA_cores",
    "TensorIOMode.INPUT",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_profile_shape",
    "Runtime.engine_host_code_allowed",
    "ICudaEngine.device_memory_size_v2",
    "ICudaEngine.get_device_memory_size_for_profile_v2",
    "ICudaEngine.num_optimization_profiles",
    "ICudaEngine.create_execution_context",
    "ExecutionContextAllocationStrategy.USER_MANAGED",
    "IExecutionContext.set_device_memory",
    "IExecutionContext.set_optimization_profile_async",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "DataType.FLOAT",
    "DataType.HALF",
    "DataType.INT64",
    "DataType.INT32",
    "DataType.UINT8",
    "DataType.BOOL",
)
_TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT64": "int64",
    "INT32": "int32",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class TrtEngine:
    """One deserialised engine, its I/O checked against the bundle's manifest."""

    def __init__(self, backend: TensorRTBackend, kind: str, entry: CachedEngine, spec: GraphSpec):
        self.backend, self.kind, self.entry, self.spec = backend, kind, entry, spec
        if entry.key.hardware_compat != "none" and on_jetson():
            raise StaleEngineError(
                f"{entry.plan_path} was built hardware-compatible ({entry.key.hardware_compat}), "
                f"which TensorRT does not support on Jetson; rebuild it on the device without "
                f"--hardware-compat: {backend.rebuild_hint()}"
            )
        plan = backend.cache.load_plan(entry)  # manifest, sha256 and header: before TensorRT
        if "VERSION_COMPATIBLE" in entry.key.flags:
            # Its embedded lean runtime is host code: without this TensorRT refuses the plan.
            backend.runtime.engine_host_code_allowed = True
        backend.use_device()  # deserialising puts the engine's weights on the current device
        engine = backend.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise StaleEngineError(
                f"TensorRT {backend.flavour.version} refused to deserialise "
                f"{entry.plan_path}; rebuild it with {backend.rebuild_hint()}"
            )
        self.engine = engine
        trt = backend.trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        outputs = set(names) - inputs
        want_in, want_out = {t.name for t in spec.inputs}, {t.name for t in spec.outputs}
        if inputs != want_in or outputs != want_out:
            raise StaleEngineError(
                f"{entry.plan_path} has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}; the bundle's {entry.key.graph} has "
                f"{sorted(want_in)} and {sorted(want_out)}"
            )
        for t in (*spec.inputs, *spec.outputs):
            dtype = _TRT_DTYPES.get(engine.get_tensor_dtype(t.name).name)
            if dtype != t.dtype:
                raise StaleEngineError(
                    f"{entry.plan_path}: tensor {t.name} is {dtype} in the "
                    f"engine, {t.dtype} in the bundle"
                )
        # Scratch memory each execution context takes (TensorRT 11 has only the _v2 form).
        self.device_memory = int(
            engine.device_memory_size_v2
            if hasattr(engine, "device_memory_size_v2")
            else engine.device_memory_size
        )
        first = spec.inputs[0].name
        self.batch_ranges: list[tuple[int, int]] = []
        for p in range(engine.num_optimization_profiles):
            lo, _, hi = engine.get_tensor_profile_shape(first, p)
            self.batch_ranges.append((lo[0], hi[0]))

    def profile_for(self, batch: int) -> int:
        for index, (lo, hi) in enumerate(self.batch_ranges):
            if lo <= batch <= hi:
                return index
        raise StaleEngineError(
            f"{self.entry.plan_path} has no profile for batch {batch} (its "
            f"batch ranges are {self.batch_ranges}); rebuild with "
            f"{self.backend.rebuild_hint()}"
        )

    def scratch_bytes(self, batch: int) -> int:
        """Device memory a context needs for the profile covering `batch`."""
        engine, profile = self.engine, self.profile_for(batch)
        for name in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
            if hasattr(engine, name):  # TensorRT 10.3 may have only the older form
                return int(getattr(engine, name)(profile))
        return self.device_memory

    def context(self, batch: int, stream: Any, scratch: DeviceBuffer) -> Any:
        """An execution context with the profile and every input shape set for `batch`,
        running in `scratch` (user-managed: at least scratch_bytes(batch))."""
        strategy = self.backend.trt.ExecutionContextAllocationStrategy.USER_MANAGED
        profile = self.profile_for(batch)
        with self.backend._lock:  # the engine is shared by every thread's loops
            ctx = self.engine.create_execution_context(strategy)
        if ctx is None:
            raise BackendUnavailableError(
                f"TensorRT could not create an execution context for "
                f"{self.entry.key.graph} (out of GPU memory?)"
            )
        # Both return False (and only log) when TensorRT refuses: raise instead of running a
        # context with the wrong profile or shapes.
        if not ctx.set_optimization_profile_async(profile, int(stream)):
            raise StaleEngineError(
                f"{self.entry.plan_path}: TensorRT refused optimization profile {profile} for "
                f"batch {batch} (batch ranges {self.batch_ranges}); rebuild with "
                f"{self.backend.rebuild_hint()}"
            )
        for t in self.spec.inputs:
            shape = tuple(batch if isinstance(d, str) else d for d in t.shape)
            if not ctx.set_input_shape(t.name, shape):
                raise StaleEngineError(
                    f"{self.entry.plan_path}: TensorRT refused input {t.name} of shape "
                    f"{shape} (profile {profile}); rebuild with {self.backend.rebuild_hint()}"
                )
        set_scratch(ctx, scratch)
        return ctx


def set_scratch(ctx: Any, scratch: DeviceBuffer) -> None:
    """Point a user-managed context at its scratch memory."""
    if hasattr(ctx, "set_device_memory"):
        ctx.set_device_memory(scratch.ptr, scratch.nbytes)
    else:  # TensorRT 10.0: the property form only
        ctx.device_memory = scratch.ptr


class _GraphIO:
    """Device buffers for one (kind, batch) run of the encoder, decoder or a single step."""

    def __init__(self, backend: TensorRTBackend, kind: str, batch: int):
        engine = backend.engine(kind, batch)
        self.context = engine.context(batch, backend.stream, backend.scratch(engine, batch))
        # name -> (host staging array, device buffer)
        self.inputs: dict[str, tuple[NDArray[Any], DeviceBuffer]] = {}
        self.outputs: dict[str, tuple[NDArray[Any], DeviceBuffer]] = {}
        spec = engine.spec
        for group, specs in ((self.inputs, spec.inputs), (self.outputs, spec.outputs)):
            for t in specs:
                shape = tuple(batch if isinstance(d, str) else d for d in t.shape)
                host = np.zeros(shape, np.dtype(t.dtype))
                device = DeviceBuffer(backend.cuda, host.nbytes)
                self.context.set_tensor_address(t.name, device.ptr)
                group[t.name] = (host, device)


class TensorRTLoop(Loop):
    def __init__(self, backend: TensorRTBackend, batch: int):
        backend.use_device()  # the caller's thread may have another device current
        cuda = backend.cuda
        L, C = backend.latent
        K = backend.num_steps
        self.backend, self.batch, self.num_steps, self.n = backend, batch, K, L * C
        self.shape = (batch, L, C)
        self.host: dict[str, NDArray[Any]] = {  # staging, allocated once
            "bits": np.zeros(self.shape, np.float32),
            "probs": np.zeros(self.shape, np.float32),
            "keep": np.zeros(self.shape, np.uint8),
            "known": np.zeros(self.shape, np.float32),
            "seeds": np.zeros(batch, np.uint64),
            "class_label": np.zeros(batch, np.int64),
            "temperature": np.ones(batch, np.float32),
            "guidance": np.zeros(batch, np.float32),
        }
        self.host_bits = np.zeros(self.shape, np.uint8)
        self.dev = {name: DeviceBuffer(cuda, a.nbytes) for name, a in self.host.items()}
        self.dev["half"] = DeviceBuffer(cuda, self.host["bits"].nbytes)
        self.dev["steps"] = DeviceBuffer(cuda, K * batch * 8)
        # Each loop has its own stream: loops of different batch sizes may run (and capture)
        # on different threads at once.
        rt = cuda.rt
        self.stream = cudart.check(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        copy_to_device(cuda, self.dev["half"], np.full(self.shape, 0.5, np.float32), self.stream)
        steps = np.repeat(np.arange(K, dtype=np.int64), batch)
        copy_to_device(cuda, self.dev["steps"], steps, self.stream)
        self.synchronize()
        # One scratch buffer for both step kinds' contexts (see the module doc), sized by the
        # first context and grown once if the other kind's engine needs more.
        self.dev["scratch"] = DeviceBuffer(cuda, 0)
        self.blocks = -(-self.n // 4)
        self.role, self.masked = "step", 0
        self.contexts: dict[str, Any] = {}  # TensorRT execution contexts by step kind
        self.cuda_graphs: dict[tuple[str, int], Any] = {}  # (role, masked) -> exec | None

    def synchronize(self) -> None:
        self.backend.use_device()
        cudart.check(
            self.backend.cuda.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize"
        )

    # --- set-up --------------------------------------------------------------------------

    def _context(self, role: str) -> Any:
        if role not in self.contexts:
            engine = self.backend.engine(role, self.batch)
            need = engine.scratch_bytes(self.batch)
            if need > self.dev["scratch"].nbytes:
                self._grow_scratch(need)
            ctx = engine.context(self.batch, self.stream, self.dev["scratch"])
            for name in ("bits", "class_label", "temperature", "guidance"):
                if any(t.name == name for t in engine.spec.inputs):
                    ctx.set_tensor_address(name, self.dev[name].ptr)
            ctx.set_tensor_address(engine.spec.outputs[0].name, self.dev["probs"].ptr)
            self.contexts[role] = ctx
        return self.contexts[role]

    def _grow_scratch(self, nbytes: int) -> None:
        """A larger scratch buffer: every context re-pointed, every captured graph (which
        holds the old address) dropped, to be captured again."""
        self.synchronize()
        old, self.dev["scratch"] = self.dev["scratch"], DeviceBuffer(self.backend.cuda, nbytes)
        for ctx in self.contexts.values():
            set_scratch(ctx, self.dev["scratch"])
        rt = self.backend.cuda.rt
        for graph in self.cuda_graphs.values():
            if graph is not None:
                rt.cudaGraphExecDestroy(graph)
        self.cuda_graphs.clear()
        old.free()

    def start(self, chunk: RequestChunk) -> None:
        self.backend.use_device()  # a loop is lent to one thread at a time, any thread
        h = self.host
        np.copyto(h["seeds"], chunk.seeds)
        np.copyto(h["class_label"], chunk.classes)
        np.copyto(h["temperature"], chunk.temperature)
        np.copyto(h["guidance"], chunk.guidance)
        names = ["seeds", "class_label", "temperature", "guidance"]
        masked = chunk.inpainting()
        self.masked = int(masked is not None)
        if masked is not None:
            np.copyto(h["keep"], masked[0])
            np.copyto(h["known"], masked[1])
            names += ["keep", "known"]
        for name in names:
            copy_to_device(self.backend.cuda, self.dev[name], h[name], self.stream)
        self.role = "step_guided" if chunk.guided else "step"
        self._context(self.role)
        self._draw(self.dev["half"], 0)

    # --- the steps -----------------------------------------------------------------------

    def _enqueue(self, i: int) -> bool:
        ctx = self._context(self.role)
        ctx.set_tensor_address("step", self.dev["steps"].ptr + i * self.batch * 8)
        return bool(ctx.execute_async_v3(int(self.stream)))

    def _draw(self, p: DeviceBuffer, subsequence: int) -> None:
        d = self.dev
        grid = -(-(self.batch * self.blocks) // THREADS)
        self.backend.kernels.launch(
            "bld_draw",
            grid,
            THREADS,
            self.stream,
            (
                (p.ptr, PTR),
                (d["seeds"].ptr, PTR),
                (subsequence, U64),
                (self.n, I64),
                (self.blocks, I64),
                (self.batch, I32),
                (d["bits"].ptr, PTR),
                (d["keep"].ptr, PTR),
                (d["known"].ptr, PTR),
                (self.masked, I32),
            ),
        )

    def _threshold(self) -> None:
        d, total = self.dev, self.batch * self.n
        self.backend.kernels.launch(
            "bld_threshold",
            -(-total // THREADS),
            THREADS,
            self.stream,
            (
                (d["probs"].ptr, PTR),
                (total, I64),
                (d["bits"].ptr, PTR),
                (d["keep"].ptr, PTR),
                (d["known"].ptr, PTR),
                (self.masked, I32),
            ),
        )

    def run_step(self, i: int) -> None:
        self.backend.use_device()
        if not self._enqueue(i):
            raise BackendError(f"TensorRT failed to run graph {self._graph_name()!r} (step {i})")

    def advance(self, i: int) -> None:
        self.backend.use_device()
        if i < self.num_steps - 1:
            self._draw(self.dev["probs"], i + 1)
        else:
            self._threshold()

    def _steps(self) -> bool:
        for i in range(self.num_steps):
            if not self._enqueue(i):
                return False
            self.advance(i)
        return True

    def run_all(self) -> bool:
        """All K steps on the device: a CUDA graph per (role, masked), replayed."""
        self.backend.use_device()
        key = (self.role, self.masked)
        if key not in self.cuda_graphs:
            self.cuda_graphs[key] = self._capture()
        graph = self.cuda_graphs[key]
        rt = self.backend.cuda.rt
        if graph is not None:
            cudart.check(rt.cudaGraphLaunch(graph, self.stream), "cudaGraphLaunch")
        elif not self._steps():
            raise BackendError(f"TensorRT failed to run graph {self._graph_name()!r}")
        return True

    def _graph_name(self) -> str:
        return self.backend.graphs[self.role].name

    def _capture(self) -> Any:
        """trtexec's recipe; None when this engine cannot be captured (then: eager)."""
        rt = self.backend.cuda.rt
        ctx = self._context(self.role)
        if hasattr(ctx, "is_stream_capturable") and not ctx.is_stream_capturable(int(self.stream)):
            return None
        # Warm-up enqueue outside the capture (it may allocate or set up lazily). It only
        # writes the probabilities, which the captured steps overwrite before reading.
        if not self._enqueue(0):
            raise BackendError(f"TensorRT failed to run graph {self._graph_name()!r}")
        self.synchronize()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cudart.check(rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        try:
            ok = self._steps()
        except BackendUnavailableError:  # a CUDA call refused inside the capture
            ok = False
        err, graph = rt.cudaStreamEndCapture(self.stream)
        if not ok or int(err) != 0 or graph is None:
            if graph is not None and int(err) == 0:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the capture's error state
            return None
        try:
            return cudart.check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            rt.cudaGraphDestroy(graph)

    # --- host side ------------------------------------------------------------------------

    def set_bits(self, bits: NDArray[np.uint8]) -> None:
        self.backend.use_device()
        np.copyto(self.host["bits"], bits)
        copy_to_device(self.backend.cuda, self.dev["bits"], self.host["bits"], self.stream)

    def read_bits(self, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
        self.backend.use_device()
        copy_to_host(self.backend.cuda, self.host["bits"], self.dev["bits"], self.stream)
        self.synchronize()
        np.copyto(out, self.host["bits"], casting="unsafe")  # exact: 0.0 and 1.0
        return out

    def read_probs(self, out: NDArray[np.float32]) -> NDArray[np.float32]:
        self.backend.use_device()
        copy_to_host(self.backend.cuda, self.host["probs"], self.dev["probs"], self.stream)
        self.synchronize()
        np.copyto(out, self.host["probs"])
        return out

    def bits_view(self) -> NDArray[np.uint8]:
        return self.read_bits(self.host_bits)

    def close(self) -> None:
        """Free the graphs, contexts, buffers and stream (also when the backend drops the loop)."""
        self.backend.use_device()
        rt = self.backend.cuda.rt
        for graph in self.cuda_graphs.values():
            if graph is not None:
                rt.cudaGraphExecDestroy(graph)
        self.cuda_graphs.clear()
        self.contexts.clear()
        for buffer in self.dev.values():
            buffer.free()
        if self.stream is not None:
            rt.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown cuda-python may be gone
            self.close()


class TensorRTBackend(Backend):
    """Engines from an engine cache, run natively (see the module docstring)."""

    name = "tensorrt"
    # int8: engines of the *_int8 Q/DQ step graphs (bld-export engine --precision int8); the
    # GPU computes them, so no CPU check
    precisions = ("fp32", "fp16", "int8")

    def _prepare(self) -> None:
        o = self.options
        # bld-export engine's default cache is BUNDLE/engines
        self.cache_dir = (
            o.trt_cache_dir if o.trt_cache_dir else str(self.bundle.directory / "engines")
        )
        info = cudart.probe(o.device_id)
        capability = info.require(o.device_id)  # before anything constructs a TensorRT Runtime
        self.cuda = cudart.import_cuda()
        rt = self.cuda.rt
        cudart.check(rt.cudaSetDevice(o.device_id), "cudaSetDevice")
        cudart.check(rt.cudaFree(0), "cudaFree(0)")  # creates the primary context
        self.flavour = import_flavour(o.trt_flavour)
        self.trt = self.flavour.module
        self.target = RuntimeTarget(
            self.flavour.name, self.flavour.version, capability, o.trt_dla_core
        )
        self.cache = EngineCache(self.cache_dir)
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)
        self.runtime = self.trt.Runtime(self.logger)
        if o.trt_dla_core is not None:
            if self.runtime.num_DLA_cores <= o.trt_dla_core:
                raise BackendUnavailableError(
                    f"DLA core {o.trt_dla_core} does not exist here "
                    f"(this device has {self.runtime.num_DLA_cores})"
                )
            self.runtime.DLA_core = o.trt_dla_core
        self.stream = cudart.check(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self.kernels = cudart.Kernels(self.cuda, KERNELS, ("bld_draw", "bld_threshold"), capability)
        self._engines: dict[str, TrtEngine] = {}  # by key digest: one engine serves many batches
        self._io: dict[tuple[str, int], _GraphIO] = {}
        self._scratch: DeviceBuffer | None = None  # shared by every _GraphIO context
        self._lock = threading.RLock()  # engines and the encoder/decoder I/O are shared
        self._rebuilt = False

    def use_device(self) -> None:
        """Make options.device_id current on the calling thread (cudaSetDevice is per thread
        and cheap; it also makes its primary context current for the driver-API launches)."""
        cudart.check(self.cuda.rt.cudaSetDevice(self.options.device_id), "cudaSetDevice")

    def scratch(self, engine: TrtEngine, batch: int) -> DeviceBuffer:
        """The shared scratch memory of the encoder/decoder/single-step contexts, grown (and
        every such context re-pointed) when `engine` needs more. Caller holds self._lock."""
        need = engine.scratch_bytes(batch)
        if self._scratch is None or self._scratch.nbytes < need:
            old, self._scratch = self._scratch, DeviceBuffer(self.cuda, need)
            for io in self._io.values():  # idle: each _run synchronises before returning
                set_scratch(io.context, self._scratch)
            if old is not None:
                old.free()
        return self._scratch

    def pinned_caller(self) -> contextlib.AbstractContextManager[None]:
        """Never pinned (as the C++ runtime's): the engines run on the GPU, not in onnxruntime's
        shared pool."""
        return contextlib.nullcontext()

    def _load_session(self, graph: Graph) -> TrtEngine:
        """The kind's engine covering the largest batch, in place of an onnxruntime session."""
        return self.engine(graph.kind, None)

    def providers(self) -> list[Any]:
        return []  # no onnxruntime sessions

    def synchronize(self) -> None:
        """Wait for everything queued on the device: the loops' streams and the backend's
        (for timing: the calls return before their kernels finish)."""
        self.use_device()
        cudart.check(self.cuda.rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    def memory_in_use(self) -> int:
        """Bytes of device memory in use (by every process), from cudaMemGetInfo."""
        self.use_device()
        free, total = cudart.check(self.cuda.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total) - int(free)

    def device_memory(self) -> dict[str, int]:
        """Scratch memory per execution context of each loaded engine (graph name -> bytes)."""
        with self._lock:
            return {e.entry.key.graph: e.device_memory for e in self._engines.values()}

    def rebuild_hint(self) -> str:
        return (
            f"`bld-export engine {self.bundle.directory} -o {self.cache_dir} --precision "
            f"{self.precision} --flavour {self.flavour.name}` (or --rebuild-if-stale)"
        )

    def _candidates(self, kind: str) -> dict[str, str]:
        """Graph names (-> sha256) whose engines can serve `kind` at this precision."""
        graphs = self.manifest.graphs
        name = self.graphs[kind].name
        out = {name: graphs[name].sha256}
        if name != kind and self.precision == "fp16":  # an FP16-flag engine of the fp32 graph
            out[kind] = graphs[kind].sha256
        return out

    def engine(self, kind: str, batch: int | None) -> TrtEngine:
        """The kind's engine whose profiles cover `batch` (None: the largest), loaded once."""
        with self._lock:
            return self._engine(kind, batch)

    def _engine(self, kind: str, batch: int | None) -> TrtEngine:
        # engines are keyed with their graph's precision (the builder's graph_names): the
        # encoder is fp32, and so is the decoder with int8
        precision = self.manifest.graphs[self.graphs[kind].name].precision
        try:
            entry = self.cache.find(
                self._candidates(kind), precision, self.target, batch, self.rebuild_hint()
            )
        except StaleEngineError:
            if not self.options.trt_rebuild_if_stale or self._rebuilt:
                raise
            _rebuild(self.bundle.directory, self.cache_dir, self.precision, self.flavour.name)
            self._rebuilt = True  # once per backend: a second refusal is not a stale cache
            entry = self.cache.find(
                self._candidates(kind), precision, self.target, batch, self.rebuild_hint()
            )
        digest = entry.manifest.key_digest
        if digest not in self._engines:
            name = entry.key.graph
            try:
                check_graph_facts(
                    self.manifest, name, {GRAPH_METADATA_KEY: entry.manifest.graph_facts}
                )
            except ManifestError as e:
                raise ManifestError(f"engine {entry.plan_path}: {e}") from None
            self._engines[digest] = TrtEngine(self, kind, entry, self.manifest.graphs[name])
        return self._engines[digest]

    def _make_loop(self, batch: int) -> TensorRTLoop:
        return TensorRTLoop(self, batch)

    # --- encoder, decoder and single steps --------------------------------------------------

    def _run(self, kind: str, *values: NDArray[Any]) -> NDArray[np.float32]:
        """One call of the kind's engine on host arrays (the encoder, the decoder, and steps
        outside the loop), on the backend's stream."""
        feeds = dict(zip(self.graphs[kind].inputs, values, strict=True))
        with self._lock:
            self.use_device()
            return self._run_locked(kind, feeds)

    def _run_locked(self, kind: str, feeds: dict[str, NDArray[Any]]) -> NDArray[np.float32]:
        batch = len(next(iter(feeds.values())))
        key = (kind, batch)
        if key not in self._io:
            if len(self._io) >= 8:
                self._io.pop(next(iter(self._io)))
            self._io[key] = _GraphIO(self, kind, batch)
        io = self._io[key]
        for name, (host, device) in io.inputs.items():
            np.copyto(host, feeds[name], casting="same_kind")
            copy_to_device(self.cuda, device, host, self.stream)
        if not io.context.execute_async_v3(int(self.stream)):
            raise BackendError(f"TensorRT failed to run graph {self.graphs[kind].name!r}")
        ((host, device),) = io.outputs.values()
        copy_to_host(self.cuda, host, device, self.stream)
        cudart.check(self.cuda.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        result: NDArray[np.float32] = host.copy()  # every graph's output is float32
        return result


def _rebuild(
    bundle_dir: str | os.PathLike[str], cache_dir: str, precision: str, flavour: str
) -> None:
    """Rebuild through bld_engines (entry point "bld.engine_builder"), which the runtime does
    not import: without it, say what to install."""
    builders = [
        ep for ep in metadata.entry_points(group="bld.engine_builder") if ep.name == "build"
    ]
    if not builders:
        raise BackendUnavailableError(
            "--rebuild-if-stale needs bld_engines (pip install bld "
            "with its TensorRT extra), which is not installed"
        )
    builders[0].load()(bundle_dir, cache_dir, precision=precision, flavour=flavour)
