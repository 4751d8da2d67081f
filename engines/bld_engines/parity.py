"""Parity of a GPU pipeline with the CPU runtime, as the sampling contract defines it.

Floating-point kernels differ between TensorRT and onnxruntime's CPU provider, so whole
generations can drift apart after a close call; what must hold exactly is the contract:
given the same step outputs, the same bits. So the GPU pipeline runs with a trace, and

  * every draw it made is re-made on the host: states[i + 1] == (u(seed, i + 1) <= probs[i])
    for inner steps, and states[K] == probs[K-1] > 0.5 for the last (bit for bit);
  * every step's probabilities are compared with the CPU runtime's step graph on the very
    same input bits (max |difference| within the precision's tolerance);
  * the decoded images agree within a few grey levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bld_runtime import philox

TOLERANCE = {"fp32": 2e-3, "fp16": 2e-2}  # step probabilities, absolute


@dataclass
class ParityReport:
    draws_checked: int
    draws_equal: bool
    max_prob_diff: float
    max_image_diff: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.draws_equal and self.max_prob_diff <= self.tolerance

    def describe(self) -> str:
        return (
            f"{self.draws_checked} draws {'bit-exact' if self.draws_equal else 'DIFFER'}; "
            f"step probabilities max |diff| {self.max_prob_diff:.2e} (tolerance "
            f"{self.tolerance:g}); images max |diff| {self.max_image_diff} grey levels"
        )


def check_parity(gpu, cpu, n: int = 4, seed: int = 0, guidance: float = 0.0) -> ParityReport:
    """Compare Pipeline `gpu` with Pipeline `cpu` (same bundle and precision)."""
    classes = None if gpu.num_classes == 0 else np.arange(n) % gpu.num_classes
    out = gpu.generate(n=n, seeds=seed, classes=classes, guidance=guidance, trace=True)
    states, probs = out.trace.states, out.trace.probs
    K = len(states)
    finals = np.concatenate([states[1:], out.bits[None]])  # what each step produced
    equal, checked = True, 0
    for i in range(K):
        if i < K - 1:
            expected = philox.bernoulli(probs[i], out.seeds, i + 1)
        else:
            expected = (probs[i] > np.float32(0.5)).astype(np.uint8)
        equal &= bool(np.array_equal(expected, finals[i]))
        checked += expected.size
    worst = 0.0
    for i in range(K):
        ref = cpu.step_probs(states[i], i, classes=classes, guidance=guidance)
        worst = max(worst, float(np.max(np.abs(ref - probs[i]))))
    images = cpu.decode(out.bits)
    image_diff = int(np.max(np.abs(images.astype(np.int16) - out.images.astype(np.int16))))
    return ParityReport(checked, equal, worst, image_diff, TOLERANCE[gpu.precision])


__all__ = ["ParityReport", "check_parity", "TOLERANCE"]
