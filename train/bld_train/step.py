"""One denoising step of the sampling contract (section 4) in torch, around a Denoiser.

This module is both the PyTorch reference sampler's step and what bld_export exports as the
step graph. The schedule tables come from bld_runtime.contract (the single source of truth)
and are buffers here, so they become constants of the graph, gathered by step index.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from bld_runtime import contract

from .denoiser import Denoiser
from .diffusion import posterior


class DenoiserStep(nn.Module):
    """(bits, step, class_label, temperature[, guidance]) -> per-bit probability of a 1.

    For inner steps that is the posterior p of z_{t'}; for the last step it is p0. `guided`
    runs the conditional and the null-class pass in one batched call. The sigmoid and the
    posterior always run in float32, whatever precision the denoiser runs in: for an fp16
    step, convert the denoiser (`denoiser.half()`) before wrapping it, never this module.
    """

    def __init__(self, denoiser: Denoiser, guided: bool):
        super().__init__()
        cfg = denoiser.cfg
        self.denoiser = denoiser
        self.guided = guided
        self.null_class = cfg.num_classes
        tables = contract.step_tables(cfg.schedule, cfg.train_steps, cfg.sampling_steps)
        self.num_steps = tables.num_steps
        self.register_buffer("t_model", torch.from_numpy(tables.t_model), persistent=False)
        for name in ("k_next", "b_next", "beta_prod"):
            self.register_buffer(name, torch.from_numpy(getattr(tables, name)), persistent=False)
        self.register_buffer(
            "is_last", torch.from_numpy(tables.is_last.astype("float32")), persistent=False
        )

    def logits(self, bits, step, class_label, temperature, guidance=None):
        """Step 4.1: temperature-scaled, guidance-mixed flip logits in float32."""
        t = self.t_model[step]
        tau = temperature.float()[:, None, None]
        if not self.guided:
            return self.denoiser(bits, t, class_label).float() / tau
        null = torch.full_like(class_label, self.null_class)
        both = self.denoiser(
            torch.cat([bits, bits]), torch.cat([t, t]), torch.cat([class_label, null])
        ).float()
        # Slice, not chunk(2): chunk puts a guard on the batch size in torch.export.
        n = bits.shape[0]
        l_cond, l_uncond = both[:n], both[n:]
        g = guidance.float()[:, None, None]
        return (1.0 + g) * (l_cond / tau) - g * (l_uncond / tau)

    def forward(self, bits, step, class_label, temperature, guidance=None):
        z = bits.float()
        f = torch.sigmoid(self.logits(bits, step, class_label, temperature, guidance))
        p0 = z * (1.0 - f) + (1.0 - z) * f
        k_next, b_next, beta_prod, is_last = (
            x[step][:, None, None] for x in (self.k_next, self.b_next, self.beta_prod, self.is_last)
        )
        return torch.where(is_last > 0.5, p0, posterior(z, p0, k_next, b_next, beta_prod))
