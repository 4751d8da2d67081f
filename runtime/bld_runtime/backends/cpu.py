"""The default backend: onnxruntime's CPU execution provider with I/O binding.

Per batch size, every array of the loop is allocated once: the uint8 state the Philox drawer
writes, its float32 copy that the step graph reads, the probabilities the graph writes, and the
per-image inputs. The step graphs are bound to these arrays once (OrtValues that share numpy's
memory), so a step is: fill the step index, run, draw in place, mask in place, convert in place.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..philox import BernoulliDrawer
from .base import GRAPH_IO, Backend, Loop


class CpuLoop(Loop):
    def __init__(self, backend: "CpuBackend", batch: int):
        L, C = backend.graphs.latent
        shape = (batch, L, C)
        self.backend, self.batch, self.num_steps = backend, batch, backend.graphs.num_steps
        self.bits = np.zeros(shape, np.uint8)  # the state z, as the contract's 0/1 bytes
        self.graph_bits = np.zeros(shape, np.float32)  # z as the step graph reads it
        self.probs = np.zeros(shape, np.float32)  # what the step graph writes
        self.half = np.full(shape, 0.5, np.float32)  # p of the initial state
        self.keep = np.zeros(shape, np.bool_)  # inpainting: True where the known bit stays
        self.known = np.zeros(shape, np.uint8)
        self.masked = False
        self.inputs = {
            "bits": self.graph_bits,
            "step": np.zeros(batch, np.int64),
            "class_label": np.zeros(batch, np.int64),
            "temperature": np.ones(batch, np.float32),
            "guidance": np.zeros(batch, np.float32),
        }
        self.seeds = np.zeros(batch, np.uint64)
        self.drawer = BernoulliDrawer(batch, L * C)
        self.role = "step"
        self._bindings: dict[str, tuple] = {}

    def _binding(self, role):
        """Bind the role's graph to our arrays once; OrtValues share the numpy memory."""
        if role not in self._bindings:
            sess = self.backend.session(role)
            binding = sess.io_binding()
            names, output = GRAPH_IO[role]
            values = [ort.OrtValue.ortvalue_from_numpy(self.inputs[n]) for n in names]
            for name, value in zip(names, values):
                binding.bind_ortvalue_input(name, value)
            values.append(ort.OrtValue.ortvalue_from_numpy(self.probs))
            binding.bind_ortvalue_output(output, values[-1])
            self._bindings[role] = (sess, binding, values)  # values: keep the OrtValues alive
        return self._bindings[role]

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
        self.drawer.draw(self.half, self.seeds, 0, out=self.bits)
        self._finish_state()

    def run_step(self, i):
        sess, binding, _ = self._binding(self.role)
        self.inputs["step"].fill(i)
        sess.run_with_iobinding(binding)

    def advance(self, i):
        if i < self.num_steps - 1:
            self.drawer.draw(self.probs, self.seeds, i + 1, out=self.bits)
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
