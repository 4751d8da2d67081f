"""The default backend: onnxruntime's CPU execution provider with I/O binding.

Per batch size, every array of the loop is allocated once: the uint8 state the Philox drawer
writes, its float32 copy that the step graph reads, the probabilities the graph writes, and the
per-image inputs. The step graphs are bound to these arrays once (OrtValues that share numpy's
memory), so a step is: fill the step index, run, draw in place, mask in place, convert in place.
The Philox uniforms of several steps are computed in one pass (as many subsequences as fit in
LANE_BUDGET Philox blocks): for small latents numpy's per-call cost, paid once per pass, is
most of the sampling time.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..philox import BernoulliDrawer
from .base import Backend, Loop, run_guarded

LANE_BUDGET = 1 << 15  # Philox blocks per pass: ~3 MB of scratch, whatever the model size


class CpuLoop(Loop):
    def __init__(self, backend: CpuBackend, batch: int):
        L, C = backend.latent
        shape = (batch, L, C)
        self.backend, self.batch, self.num_steps = backend, batch, backend.num_steps
        self.bits = np.zeros(shape, np.uint8)  # the state z, as the contract's 0/1 bytes
        self.graph_bits = np.zeros(shape, np.float32)  # z as the step graph reads it
        self.probs = np.zeros(shape, np.float32)  # what the step graph writes
        self.half = np.full(shape, 0.5, np.float32)  # p of the initial state
        self.keep = np.zeros(shape, np.bool_)  # inpainting: True where the known bit stays
        self.known = np.zeros(shape, np.uint8)
        self.masked = False
        self.inputs = {  # by the names bundle format v1 gives the step graphs' inputs
            "bits": self.graph_bits,
            "step": np.zeros(batch, np.int64),
            "class_label": np.zeros(batch, np.int64),
            "temperature": np.ones(batch, np.float32),
            "guidance": np.zeros(batch, np.float32),
        }
        self.seeds = np.zeros(batch, np.uint64)
        blocks = -(-L * C // 4)
        span = min(self.num_steps, max(1, LANE_BUDGET // (batch * blocks)))
        self.drawer = BernoulliDrawer(batch, L * C, subsequences=span)
        self._uniforms, self._first = None, 0  # the current pass: subsequences first, first+1..
        self.role = "step"  # the step graph kind this batch runs: "step" or "step_guided"
        self._bindings: dict[str, tuple] = {}

    def _binding(self, kind):
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

    def start(self, seeds, classes, temperature, guidance, guided, mask, known):
        np.copyto(self.seeds, seeds)
        np.copyto(self.inputs["class_label"], classes)
        np.copyto(self.inputs["temperature"], temperature)
        np.copyto(self.inputs["guidance"], guidance)
        self.role = "step_guided" if guided else "step"
        self.masked = mask is not None
        if self.masked:
            np.not_equal(mask, 0, out=self.keep)
            np.copyto(self.known, known)
        self._binding(self.role)
        self._uniforms = None
        self._draw(self.half, 0)
        self._finish_state()

    def _draw(self, p, subsequence):
        """bits = u <= p with the uniforms of `subsequence` (0 initial state, i + 1 step i)."""
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

    def run_step(self, i):
        graph, sess, binding, _ = self._binding(self.role)
        self.inputs["step"].fill(i)
        run_guarded(graph, sess.run_with_iobinding, binding)

    def advance(self, i):
        if i < self.num_steps - 1:
            self._draw(self.probs, i + 1)
        else:
            np.greater(self.probs, np.float32(0.5), out=self.bits.view(np.bool_))
        self._finish_state()

    def _finish_state(self):
        if self.masked:
            np.copyto(self.bits, self.known, where=self.keep)
        np.copyto(self.graph_bits, self.bits)

    def set_bits(self, bits):
        np.copyto(self.bits, bits)
        np.copyto(self.graph_bits, self.bits)

    def read_bits(self, out):
        np.copyto(out, self.bits)
        return out

    def read_probs(self, out):
        np.copyto(out, self.probs)
        return out

    def bits_view(self):
        return self.bits


class CpuBackend(Backend):
    name = "cpu"

    def providers(self):
        return ["CPUExecutionProvider"]

    def _make_loop(self, batch):
        return CpuLoop(self, batch)
