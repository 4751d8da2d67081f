"""The default backend: onnxruntime's CPU execution provider with I/O binding.

Per batch size, every array of the loop is allocated once: the uint8 state the Philox drawer
writes, its float32 copy that the step graph reads, the probabilities the graph writes, and the
per-image inputs. The step graphs are bound to these arrays once (OrtValues that share numpy's
memory), so a step is: fill the step index, run, draw in place, mask in place, convert in place.
The draws are compiled where the package built them (bld_runtime.draws): one call per step
draws, masks and writes the float32 state, and the uint8 bits are made from it when read. With
numpy, the Philox uniforms of several steps are computed in one pass (as many subsequences as
fit in LANE_BUDGET Philox blocks): for small latents numpy's per-call cost, paid once per pass,
is most of the sampling time. Same bits either way.

`HostLoop` is all of such a loop but the graph call (the arrays, the Philox draws, the mask):
the "openvino" backend's loop shares it and only binds and runs its graphs its own way.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from .. import draws
from ..philox import BernoulliDrawer
from ..request import RequestChunk
from .base import Backend, Graph, Loop, run_guarded
from .int8 import check_int8_cpu

LANE_BUDGET = 1 << 15  # Philox blocks per pass: ~3 MB of scratch, whatever the model size


class HostLoop(Loop):
    """A loop whose state lives in host numpy arrays, drawn and masked on the calling thread.

    Subclasses make a step graph kind ready to run on the arrays (`_bind`, called by `start`
    with the batch's role) and run it (`run_step`): it reads `inputs` (the step inputs by name;
    `inputs["bits"]` is the float32 state) and writes `probs`.
    """

    def __init__(self, backend: Backend, batch: int):
        L, C = backend.latent
        shape = (batch, L, C)
        self.backend, self.batch, self.num_steps = backend, batch, backend.num_steps
        self.bits = np.zeros(shape, np.uint8)  # the state z, as the contract's 0/1 bytes
        self.graph_bits = np.zeros(shape, np.float32)  # z as the step graph reads it
        # Compiled draws write graph_bits only; bits is made from it when read (_bits_stale).
        self._compiled = draws.compiled()
        self._bits_stale = False
        self.probs = np.zeros(shape, np.float32)  # what the step graph writes
        self.half = np.full(shape, 0.5, np.float32)  # p of the initial state
        self.keep = np.zeros(shape, np.bool_)  # inpainting: True where the known bit stays
        self.known = np.zeros(shape, np.uint8)
        # known as the compiled draws read it (float32, as they write the state)
        self.known_f32 = np.zeros(shape if self._compiled else (0,), np.float32)
        self.masked = False
        self.inputs: dict[str, NDArray[Any]] = {  # the names format v1 gives the step inputs
            "bits": self.graph_bits,
            "step": np.zeros(batch, np.int64),
            "class_label": np.zeros(batch, np.int64),
            "temperature": np.ones(batch, np.float32),
            "guidance": np.zeros(batch, np.float32),
        }
        self.seeds = np.zeros(batch, np.uint64)
        self.elements = L * C
        self.drawer = None if self._compiled else self._numpy_drawer(batch, L * C)
        # The current pass: the uniforms of subsequences first, first + 1, ...
        self._uniforms: NDArray[np.float32] | None = None
        self._first = 0
        self.role = "step"  # the step graph kind this batch runs: "step" or "step_guided"

    def _numpy_drawer(self, batch: int, elements: int) -> BernoulliDrawer:
        """The numpy draws' drawer (~3 MB of scratch): as many subsequences per pass as fit in
        LANE_BUDGET Philox blocks."""
        blocks = -(-elements // 4)
        span = min(self.num_steps, max(1, LANE_BUDGET // (batch * blocks)))
        return BernoulliDrawer(batch, elements, span)

    @abstractmethod
    def _bind(self, kind: str) -> None:
        """Make graph kind `kind` ready to run on this loop's arrays (cheap after the first)."""

    def start(self, chunk: RequestChunk) -> None:
        np.copyto(self.seeds, chunk.seeds)
        np.copyto(self.inputs["class_label"], chunk.classes)
        np.copyto(self.inputs["temperature"], chunk.temperature)
        np.copyto(self.inputs["guidance"], chunk.guidance)
        self.role = "step_guided" if chunk.guided else "step"
        masked = chunk.inpainting()
        self.masked = masked is not None
        if masked is not None:
            np.not_equal(masked[0], 0, out=self.keep)
            np.copyto(self.known, masked[1])
            if self._compiled:
                np.copyto(self.known_f32, self.known)
        self._bind(self.role)
        self._uniforms = None
        self._draw(self.half, 0)
        self._finish_state()

    def _draw(self, p: NDArray[np.float32], subsequence: int) -> None:
        """bits = u <= p with the uniforms of `subsequence` (0 initial state, i + 1 step i)."""
        if self._compiled:
            self._compiled.draw(p, self.seeds, subsequence, self.elements, *self._state())
            self._bits_stale = True
            return
        assert self.drawer is not None
        k = subsequence - self._first
        if self._uniforms is None or not 0 <= k < len(self._uniforms):
            count = min(self.drawer.span, self.num_steps - subsequence)
            self._uniforms = self.drawer.uniforms_span(self.seeds, subsequence, count)
            self._first, k = subsequence, 0
        np.less_equal(
            self._uniforms[k],
            p.reshape(self.batch, -1),
            out=self.bits.reshape(self.batch, -1).view(np.bool_),
        )

    def _state(self) -> tuple[NDArray[Any], Any, Any]:
        """The compiled draws' output and mask: graph_bits, keep and known (None unmasked)."""
        if self.masked:
            return self.graph_bits, self.keep, self.known_f32
        return self.graph_bits, None, None

    def advance(self, i: int) -> None:
        if i < self.num_steps - 1:
            self._draw(self.probs, i + 1)
        elif self._compiled:
            self._compiled.threshold(self.probs, self.batch, self.elements, *self._state())
            self._bits_stale = True
            return
        else:
            np.greater(self.probs, np.float32(0.5), out=self.bits.view(np.bool_))
        self._finish_state()

    def _finish_state(self) -> None:
        if self._compiled:  # the draw masked and wrote graph_bits
            return
        if self.masked:
            np.copyto(self.bits, self.known, where=self.keep)
        np.copyto(self.graph_bits, self.bits)

    def _fresh_bits(self) -> NDArray[np.uint8]:
        """bits, made from graph_bits after compiled draws."""
        if self._bits_stale:
            np.copyto(self.bits, self.graph_bits, casting="unsafe")
            self._bits_stale = False
        return self.bits

    def set_bits(self, bits: NDArray[np.uint8]) -> None:
        np.copyto(self.bits, bits)
        np.copyto(self.graph_bits, self.bits)
        self._bits_stale = False

    def read_bits(self, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
        np.copyto(out, self._fresh_bits())
        return out

    def read_probs(self, out: NDArray[np.float32]) -> NDArray[np.float32]:
        np.copyto(out, self.probs)
        return out

    def bits_view(self) -> NDArray[np.uint8]:
        return self._fresh_bits()


class CpuLoop(HostLoop):
    """The host loop on onnxruntime: each step graph bound once to the loop's arrays."""

    def __init__(self, backend: CpuBackend, batch: int):
        super().__init__(backend, batch)
        # Per graph kind: the graph, its session, its I/O binding and the OrtValues it binds
        self._bindings: dict[str, tuple[Graph, Any, Any, list[Any]]] = {}

    def _binding(self, kind: str) -> tuple[Graph, Any, Any, list[Any]]:
        """Bind the kind's graph to our arrays once; OrtValues share the numpy memory."""
        if kind not in self._bindings:
            graph = self.backend.graphs[kind]
            sess = self.backend.session(kind)
            binding = sess.io_binding()
            values = [ort.OrtValue.ortvalue_from_numpy(self.inputs[n]) for n in graph.inputs]
            for name, value in zip(graph.inputs, values, strict=True):
                binding.bind_ortvalue_input(name, value)
            values.append(ort.OrtValue.ortvalue_from_numpy(self.probs))
            binding.bind_ortvalue_output(graph.output, values[-1])
            # values: keep the OrtValues alive as long as the binding
            self._bindings[kind] = (graph, sess, binding, values)
        return self._bindings[kind]

    def _bind(self, kind: str) -> None:
        self._binding(kind)

    def run_step(self, i: int) -> None:
        graph, sess, binding, _ = self._binding(self.role)
        self.inputs["step"].fill(i)
        run_guarded(graph, sess.run_with_iobinding, binding)


class CpuBackend(Backend):
    name = "cpu"
    precisions = ("fp32", "fp16", "int8")  # int8: the *_int8 QDQ step graphs (int8.py)

    def _prepare(self) -> None:
        if self.precision == "int8":
            check_int8_cpu()  # one line without int8 dot products, before any graph is read

    def providers(self) -> list[Any]:
        return ["CPUExecutionProvider"]

    def _make_loop(self, batch: int) -> CpuLoop:
        return CpuLoop(self, batch)
