"""GPU backends: onnxruntime's CUDA and TensorRT execution providers, with the loop on device.

The bits and probabilities never leave the GPU during the K steps: they are CuPy arrays that
the step graph is bound to through I/O binding (raw device pointers), and the contract's draw
runs as a small CUDA kernel (kernels.py) on the same arrays. The host sees the bits only when
asked (previews, traces, the final result). CuPy is optional; without it, or without the
provider, these backends raise BackendUnavailableError saying what is missing.

Device: CuPy launches on, and `get_current_stream()` answers for, the device current on the
calling thread (CuPy's is per thread, default 0), so every launch, copy and stream wait runs
inside `cp.cuda.Device(options.device_id)`, whichever thread holds the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import BackendUnavailableError
from ..manifest import GraphSpec
from ..request import RequestChunk
from .base import Backend, BackendOptions, Graph, Loop, require_provider, run_guarded
from .kernels import KERNELS

THREADS = 256  # per CUDA block; the kernels are memory-bound, any multiple of 32 does
#: CuPy 14 loads NVRTC from the CUDA toolkit wheels its [ctk] extra installs (or a toolkit).
CUPY_HINT = "pip install 'bld[cupy-cuda12]' or 'bld[cupy-cuda13]' (CuPy with its [ctk] extra)"


def _cupy() -> Any:
    """CuPy with at least one visible device, or a clear BackendUnavailableError."""
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            f"the GPU backends draw the bits on the device with CuPy, which is not installed "
            f"({CUPY_HINT})"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no or broken CUDA driver: CuPy raises its own types
        raise BackendUnavailableError(f"CuPy cannot reach a CUDA device: {e}") from None
    if count < 1:
        raise BackendUnavailableError("CuPy sees no CUDA device")
    require_nvrtc(cupy)
    return cupy


def require_nvrtc(cupy: Any) -> None:
    """CuPy compiles the draw kernels with NVRTC, which a driver-only host lacks (CuPy 14
    brings it only through its [ctk] extra): refuse in one sentence instead of CuPy's error."""
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 - CuPy's loader raises its own types
        raise BackendUnavailableError(
            f"CuPy cannot load NVRTC ({' '.join(str(e).split())[:120]}), which compiles the "
            f"draw kernels: {CUPY_HINT}"
        ) from None


class CupyLoop(Loop):
    def __init__(self, backend: CudaBackend, batch: int):
        cp = backend.cp
        L, C = backend.latent
        self.backend, self.batch, self.num_steps = backend, batch, backend.num_steps
        self.n, self.shape = L * C, (batch, L, C)
        with cp.cuda.Device(backend.options.device_id):
            self.bits = cp.zeros(self.shape, cp.float32)  # the state z, as the graph reads it
            self.probs = cp.zeros(self.shape, cp.float32)
            self.half = cp.full(self.shape, 0.5, cp.float32)
            self.keep = cp.zeros(self.shape, cp.uint8)
            self.known = cp.zeros(self.shape, cp.float32)
            self.seeds = cp.zeros(batch, cp.uint64)
            self.inputs = {  # the graphs' inputs, bound to ORT by pointer
                "bits": self.bits,
                "step": cp.zeros(batch, cp.int64),
                "class_label": cp.zeros(batch, cp.int64),
                "temperature": cp.ones(batch, cp.float32),
                "guidance": cp.zeros(batch, cp.float32),
            }
        # Host staging, allocated once: reads go device float -> host float -> host uint8.
        self.host_f32 = np.zeros(self.shape, np.float32)
        self.host_bits = np.zeros(self.shape, np.uint8)
        self.step_host = {i: np.full(batch, i, np.int64) for i in range(self.num_steps)}
        self.blocks = -(-self.n // 4)
        self.masked = np.int32(0)
        self.role = "step"
        self._bindings: dict[str, tuple[Graph, Any, Any]] = {}  # graph, session, I/O binding

    def _binding(self, kind: str) -> tuple[Graph, Any, Any]:
        if kind not in self._bindings:
            graph = self.backend.graphs[kind]
            sess = self.backend.session(kind)
            binding = sess.io_binding()
            dev = self.backend.options.device_id
            for name in graph.inputs:
                arr = self.inputs[name]
                binding.bind_input(name, "cuda", dev, arr.dtype.type, list(arr.shape), arr.data.ptr)
            binding.bind_output(
                graph.output, "cuda", dev, np.float32, list(self.shape), self.probs.data.ptr
            )
            self._bindings[kind] = (graph, sess, binding)
        return self._bindings[kind]

    def _device(self) -> Any:
        """The backend's device as the current one (launches, copies, the current stream)."""
        return self.backend.cp.cuda.Device(self.backend.options.device_id)

    def _launch_draw(self, p: Any, subsequence: int) -> None:
        k = self.backend.kernels["bld_draw"]
        grid = -(-(self.batch * self.blocks) // THREADS)
        k(
            (grid,),
            (THREADS,),
            (
                p,
                self.seeds,
                np.uint64(subsequence),
                np.int64(self.n),
                np.int64(self.blocks),
                np.int32(self.batch),
                self.bits,
                self.keep,
                self.known,
                self.masked,
            ),
        )

    def start(self, chunk: RequestChunk) -> None:
        with self._device():
            self.seeds.set(np.ascontiguousarray(chunk.seeds, np.uint64))
            self.inputs["class_label"].set(np.ascontiguousarray(chunk.classes, np.int64))
            self.inputs["temperature"].set(np.ascontiguousarray(chunk.temperature, np.float32))
            self.inputs["guidance"].set(np.ascontiguousarray(chunk.guidance, np.float32))
            masked = chunk.inpainting()
            self.masked = np.int32(masked is not None)
            if masked is not None:
                self.keep.set(np.ascontiguousarray(masked[0], np.uint8))
                self.known.set(np.ascontiguousarray(masked[1], np.float32))
            self.role = "step_guided" if chunk.guided else "step"
            self._binding(self.role)
            self._launch_draw(self.half, 0)

    def run_step(self, i: int) -> None:
        graph, sess, binding = self._binding(self.role)
        with self._device():
            self.inputs["step"].set(self.step_host[i])
            # onnxruntime runs on its own stream: our kernel's writes must be done before it
            # reads (the stream CuPy launched on: the device's current one on this thread).
            self.backend.cp.cuda.get_current_stream().synchronize()
        # returns once its stream is done (ORT's default)
        run_guarded(graph, sess.run_with_iobinding, binding)

    def advance(self, i: int) -> None:
        with self._device():
            self._advance(i)

    def _advance(self, i: int) -> None:
        if i < self.num_steps - 1:
            self._launch_draw(self.probs, i + 1)
        else:
            k = self.backend.kernels["bld_threshold"]
            total = self.batch * self.n
            k(
                (-(-total // THREADS),),
                (THREADS,),
                (self.probs, np.int64(total), self.bits, self.keep, self.known, self.masked),
            )

    def set_bits(self, bits: NDArray[np.uint8]) -> None:
        np.copyto(self.host_f32, bits)
        with self._device():
            self.bits.set(self.host_f32)

    def read_bits(self, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
        with self._device():  # get() waits on the current stream, where the kernels ran
            self.bits.get(out=self.host_f32)
        np.copyto(out, self.host_f32, casting="unsafe")  # exact: the values are 0.0 and 1.0
        return out

    def read_probs(self, out: NDArray[np.float32]) -> NDArray[np.float32]:
        with self._device():
            self.probs.get(out=self.host_f32)
        np.copyto(out, self.host_f32)
        return out

    def bits_view(self) -> NDArray[np.uint8]:
        return self.read_bits(self.host_bits)


class CudaBackend(Backend):
    name = "cuda"
    provider = "CUDAExecutionProvider"
    hint = (
        "pip install 'onnxruntime-gpu>=1.20,<1.27' (CUDA 12) or 'onnxruntime-gpu>=1.27' (CUDA 13) "
        "in place of onnxruntime"
    )

    def _prepare(self) -> None:
        require_provider(self.name, self.provider, self.hint)
        self.cp = _cupy()
        with self.cp.cuda.Device(self.options.device_id):
            module = self.cp.RawModule(code=KERNELS, options=("--std=c++11",))
            # get_function compiles (NVRTC) and loads the module on this device now, at load.
            self.kernels = {n: module.get_function(n) for n in ("bld_draw", "bld_threshold")}

    def providers(self) -> list[Any]:
        return [(self.provider, cuda_provider_options(self.options))]

    def _make_loop(self, batch: int) -> CupyLoop:
        return CupyLoop(self, batch)


class TensorRTBackend(CudaBackend):
    """TensorRT EP first, CUDA EP for whatever TensorRT does not take; same device loop."""

    name = "tensorrt-ep"
    provider = "TensorrtExecutionProvider"
    hint = "onnxruntime-gpu built with TensorRT, and the TensorRT libraries"

    def providers(self) -> list[Any]:
        return [
            (self.provider, tensorrt_provider_options(self.options)),
            ("CUDAExecutionProvider", cuda_provider_options(self.options)),
        ]

    def providers_for(self, kind: str) -> list[Any]:
        return tensorrt_ep_providers(self.graphs[kind].spec, self.manifest.max_batch, self.options)


def cuda_provider_options(options: BackendOptions) -> dict[str, str]:
    return {"device_id": str(options.device_id)}


#: onnxruntime's TensorRT EP keeps its engines (its own file names, no manifests) here, inside
#: the engine-cache folder that `bld-export engine` and the native backend use.
ORT_ENGINE_SUBDIR = "onnxruntime-trt-ep"


def tensorrt_provider_options(options: BackendOptions) -> dict[str, str]:
    """TensorRT EP options: the engine cache avoids rebuilding engines at every start, and the
    timing cache is the directory of the builder's timing-cache file (the EP names its file)."""
    opts = {"device_id": str(options.device_id), "trt_fp16_enable": str(options.trt_fp16)}
    if options.trt_cache_dir:
        opts.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=str(Path(options.trt_cache_dir) / ORT_ENGINE_SUBDIR),
        )
    if options.trt_timing_cache:
        opts.update(
            trt_timing_cache_enable="True",
            trt_timing_cache_path=str(Path(options.trt_timing_cache).parent),
        )
    return opts


def tensorrt_ep_providers(
    spec: GraphSpec, max_batch: int, options: BackendOptions
) -> list[tuple[str, dict[str, str]]]:
    """The TensorRT EP (then CUDA) for one graph, with its batch profile 1..max_batch tuned for
    max_batch (what `bld-export engine` builds by default), read from the graph's spec."""
    opts = {**tensorrt_provider_options(options), **profile_options(spec, 1, max_batch, max_batch)}
    return [
        ("TensorrtExecutionProvider", opts),
        ("CUDAExecutionProvider", cuda_provider_options(options)),
    ]


def profile_options(spec: GraphSpec, lo: int, opt: int, hi: int) -> dict[str, str]:
    """trt_profile_{min,opt,max}_shapes for one graph: "bits:1x64x8,step:1,..."."""

    def shapes(batch: int) -> str:
        return ",".join(
            f"{t.name}:" + "x".join(str(batch if isinstance(d, str) else d) for d in t.shape)
            for t in spec.inputs
        )

    return {
        "trt_profile_min_shapes": shapes(lo),
        "trt_profile_opt_shapes": shapes(opt),
        "trt_profile_max_shapes": shapes(hi),
    }
