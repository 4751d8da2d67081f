"""The "openvino" backend: Intel's OpenVINO runs the bundle's ONNX graphs on the CPU.

Optional (`pip install 'bld[openvino]'`): OpenVINO is imported when this backend is created,
never before. Every graph is first loaded and checked as every backend checks it (base's
`checked_session`: I/O and recorded facts against the manifest, no external data), then read by
OpenVINO from the same verified bytes and compiled for the CPU with
`PERFORMANCE_HINT=LATENCY`, `INFERENCE_NUM_THREADS` = BackendOptions.intra_op_threads (0:
OpenVINO's default) and `INFERENCE_PRECISION_HINT=f32`: OpenVINO would otherwise pick bf16 on a
CPU that has it and change the probabilities silently. Precision "bf16" asks for exactly that:
the fp32 step graphs computed in bfloat16, refused on a CPU without
AVX512_BF16 or AMX (no emulation); its bits are its own, not fp32's. Precision "int8" runs
the bundle's *_int8 step graphs (QDQ; OpenVINO computes their MatMuls in int8), on the CPUs
the cpu backend runs int8 on (backends/int8.py); its bits are its own too, neither fp32's nor
the cpu backend's int8 ones.

The loop is the cpu backend's HostLoop (the same arrays, Philox draws and mask); only the step
graph call differs. Each loop compiles the step graph kinds it runs for its own batch size
(static shapes: measured faster than OpenVINO's dynamic-shape kernels at every batch), with
input and output tensors over the loop's numpy arrays (shared memory, no copies). The encoder
and decoder run once per request in onnxruntime, as in the cpu backend: its decoder measured
1.7-2.4x faster than OpenVINO's here, and the pixels of given bits are then the cpu backend's
exactly. Precision "bf16" therefore applies to the step graphs only.

Bits: the probabilities come from another engine than onnxruntime's, so a bit may differ from
the cpu backend's where a probability lies within float rounding of its Philox uniform;
everything after the graph call is the sampling contract's, exactly as in every backend.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..cpuinfo import cpu_flags
from ..errors import BackendError, BackendUnavailableError
from .base import Backend, Graph, checked_session, run_guarded
from .cpu import HostLoop
from .int8 import check_int8_cpu

INSTALL_HINT = "pip install 'bld[openvino]'"
ONNXRUNTIME_KINDS = ("encoder", "decoder")  # once per request: onnxruntime's session, as "cpu"


def import_openvino() -> Any:
    """The openvino module, or BackendUnavailableError in one sentence naming the install."""
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'openvino' needs OpenVINO, which cannot be imported here ({e}); "
            f"install it with {INSTALL_HINT}"
        ) from None
    return openvino


@dataclass
class OvGraph:
    """One graph kind in OpenVINO: the model read from the verified bytes (reshaped copies of it
    serve the loops' batch sizes) and its dynamic-batch compilation (step_probs)."""

    graph: Graph
    model: Any  # openvino.Model
    compiled: Any  # openvino.CompiledModel


class OpenVinoLoop(HostLoop):
    """The host loop with the step graphs compiled by OpenVINO for this batch size."""

    def __init__(self, backend: OpenVinoBackend, batch: int):
        super().__init__(backend, batch)
        self.ov_backend = backend
        # Per graph kind: the graph, the compiled model, its infer request and the tensors
        # over our arrays (kept alive as long as the request)
        self._requests: dict[str, tuple[Graph, Any, Any, list[Any]]] = {}

    def _bind(self, kind: str) -> None:
        if kind in self._requests:
            return
        ov = self.ov_backend.ov
        graph = self.backend.graphs[kind]
        compiled = self.ov_backend.compile_static(kind, self.batch)
        request = compiled.create_infer_request()
        tensors = [ov.Tensor(self.inputs[name], shared_memory=True) for name in graph.inputs]
        for name, tensor in zip(graph.inputs, tensors, strict=True):
            request.set_tensor(name, tensor)
        tensors.append(ov.Tensor(self.probs, shared_memory=True))
        request.set_tensor(graph.output, tensors[-1])
        self._requests[kind] = (graph, compiled, request, tensors)

    def run_step(self, i: int) -> None:
        self._bind(self.role)
        graph, _, request, _ = self._requests[self.role]
        self.inputs["step"].fill(i)
        run_guarded(graph, request.infer, engine="openvino")


class OpenVinoBackend(Backend):
    name = "openvino"
    precisions = ("fp32", "fp16", "int8", "bf16")

    def _prepare(self) -> None:
        if self.precision == "int8":
            check_int8_cpu()
        self.ov = import_openvino()
        self._ov_lock = threading.Lock()
        self.core = self.ov.Core()
        if self.precision == "bf16":
            self._check_bf16()
        self.config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
        }
        if self.options.intra_op_threads:
            self.config["INFERENCE_NUM_THREADS"] = self.options.intra_op_threads

    def pinned_caller(self) -> contextlib.AbstractContextManager[None]:
        """Never pinned: OpenVINO makes its inference threads when a loop first compiles the
        step graph, inside a generation, and they inherit the caller's CPUs; pinned to one core
        they shared it (the demo at batch 16: 346 images/s against 516)."""
        return contextlib.nullcontext()

    def _check_bf16(self) -> None:
        """bf16 only where the CPU computes it natively (AVX512_BF16 or AMX), never emulated."""
        capabilities = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        flags = cpu_flags()
        native = flags is None or bool({"avx512_bf16", "amx_bf16"} & flags)
        if "BF16" not in capabilities or not native:
            raise BackendUnavailableError(
                "precision 'bf16' needs a CPU with AVX512_BF16 or AMX, which this one lacks; "
                "use --precision fp32"
            )

    def config_for(self, kind: str) -> dict[str, Any]:
        """The compile settings of a graph kind (the step graphs; see ONNXRUNTIME_KINDS)."""
        return self.config

    def providers(self) -> list[Any]:
        return ["CPUExecutionProvider"]  # the encoder and decoder (ONNXRUNTIME_KINDS)

    def _load_session(self, graph: Graph) -> Any:
        """The encoder and decoder: base's onnxruntime session. A step graph: checked as every
        backend checks it (an onnxruntime session, unoptimised and dropped at once), then read
        and compiled by OpenVINO from the same bytes."""
        if graph.kind in ONNXRUNTIME_KINDS:
            return super()._load_session(graph)
        data = self.bundle.read_graph(graph.name)
        # Our threads settings (a shared pool must be joined, not refused), unoptimised: the
        # session only answers what the graph's I/O and facts are.
        options = replace(self.options, graph_optimization="disable").session_options()
        checked_session(self.manifest, graph, data, options, ["CPUExecutionProvider"])
        try:
            model = self.core.read_model(data)
            compiled = self.core.compile_model(model, "CPU", self.config_for(graph.kind))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            text = str(e).strip().splitlines()
            raise BackendUnavailableError(
                f"openvino cannot compile graph {graph.name!r} ({graph.spec.file}): "
                f"{text[0] if text else type(e).__name__}"
            ) from None
        return OvGraph(graph, model, compiled)

    def ov_graph(self, kind: str) -> OvGraph:
        found: OvGraph = self._sessions[kind]
        return found

    def compile_static(self, kind: str, batch: int) -> Any:
        """The kind's graph compiled for exactly `batch` images (a reshaped copy of the model)."""
        source = self.ov_graph(kind)
        with self._ov_lock:  # the model is cloned, never changed; the lock keeps clones serial
            model = source.model.clone()
        shapes = {
            port.get_any_name(): [batch, *spec.shape[1:]]
            for port, spec in zip(model.inputs, source.graph.spec.inputs, strict=True)
        }
        try:
            model.reshape(shapes)
            return self.core.compile_model(model, "CPU", self.config_for(kind))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            text = str(e).strip().splitlines()
            raise BackendError(
                f"openvino cannot compile graph {source.graph.name!r} for batch {batch}: "
                f"{text[0] if text else type(e).__name__}"
            ) from None

    def _make_loop(self, batch: int) -> OpenVinoLoop:
        return OpenVinoLoop(self, batch)

    def _run(self, kind: str, *values: NDArray[Any]) -> NDArray[np.float32]:
        """The encoder and decoder in onnxruntime (base); a step graph (step_probs) in one call
        of its dynamic-batch model, with a request of its own (requests are not shared between
        threads)."""
        if kind in ONNXRUNTIME_KINDS:
            return super()._run(kind, *values)
        source = self.ov_graph(kind)
        request = source.compiled.create_infer_request()
        inputs = dict(zip(source.graph.inputs, values, strict=True))
        run_guarded(source.graph, request.infer, inputs, engine="openvino")
        output = request.get_tensor(source.graph.output)
        out: NDArray[np.float32] = np.array(output.data, np.float32)
        return out
