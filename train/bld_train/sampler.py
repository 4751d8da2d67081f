"""The PyTorch reference sampler: the contract's K-step loop around DenoiserStep.

Probabilities come from the torch step (the same module that is exported as the step graph);
every random bit comes from bld_runtime.philox, so given the same denoiser outputs this
sampler, the runtime and any GPU kernel produce the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bld_runtime import contract, philox
from bld_runtime.errors import InvalidRequestError

from .denoiser import Denoiser
from .step import DenoiserStep


@dataclass
class Trace:
    """Per-step record: the state fed to step i and the probabilities it returned."""

    states: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)


class ReferenceSampler:
    def __init__(self, denoiser: Denoiser):
        self.cfg = denoiser.cfg
        self.step = DenoiserStep(denoiser, guided=False).eval()
        self.guided_step = DenoiserStep(denoiser, guided=True).eval()
        self.latent_shape = (self.cfg.latent_size**2, self.cfg.bits)

    @torch.no_grad()
    def sample(
        self,
        seeds,
        classes,
        guidance: float = 0.0,
        temperature: float = 1.0,
        mask: np.ndarray | None = None,
        known: np.ndarray | None = None,
        trace: Trace | None = None,
        teacher_states: list[np.ndarray] | None = None,
    ):
        """Bits (B, L, C) uint8 for one seed per image.

        classes: (B,) ints (num_classes = unconditional). mask/known: (B, L, C) 0/1 for
        inpainting. teacher_states: feed these states to each step instead of our own draws
        (teacher forcing, for parity tests against other implementations).
        """
        seeds = philox.as_seeds(seeds)
        batch = len(seeds)
        labels = torch.as_tensor(np.asarray(classes, dtype=np.int64).reshape(batch))
        if temperature <= 0 or not np.isfinite(temperature):
            raise InvalidRequestError(f"temperature must be finite and > 0, got {temperature}")
        if guidance < 0 or not np.isfinite(guidance):
            raise InvalidRequestError(f"guidance must be finite and >= 0, got {guidance}")
        step_module = self.guided_step if guidance > 0 else self.step
        tau = torch.full((batch,), float(temperature))
        g = torch.full((batch,), float(guidance))

        shape = (batch,) + self.latent_shape
        z = philox.bernoulli(np.full(shape, 0.5, np.float32), seeds, 0)
        contract.apply_mask(z, mask, known)
        for i in range(self.step.num_steps):
            if teacher_states is not None:
                z = teacher_states[i]
            step = torch.full((batch,), i, dtype=torch.int64)
            probs = step_module(torch.from_numpy(z).float(), step, labels, tau, g).numpy()
            if trace is not None:
                trace.states.append(z.copy())
                trace.probs.append(probs)
            if i < self.step.num_steps - 1:
                z = philox.bernoulli(probs, seeds, i + 1)
            else:
                z = (probs > 0.5).astype(np.uint8)
            contract.apply_mask(z, mask, known)
        return z
