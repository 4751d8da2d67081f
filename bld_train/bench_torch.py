"""The PyTorch side of `bld bench`: the run's checkpoint sampled by the reference sampler.

"torch" runs bld_train.sampler.ReferenceSampler eagerly (the contract loop around
DenoiserStep, the module the step graph is exported from) and decodes with the autoencoder;
"torch-compile" is the same with the denoiser and the decoder under torch.compile. Stage times
come from forward hooks on the sampler's step modules, so what is timed is the reference
sampler's own loop, not a copy of it:

    initial draw   from the call until the first step module starts
    step i model   the step module's forward (denoiser, sigmoid, posterior), as in the graph
    step i sample  from the end of step i until step i + 1 starts (for the last step: until
                   sample() returns): the Philox draw and the tensor <-> array conversions
    decode         the autoencoder's decoder; the uint8 conversion after it is overhead

The benchmark core (bld_bench.core) finds these backends through the entry-point group
"bld.bench_backends", so the runtime never imports torch.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bld_bench.core import BenchBackend, Request, StageClock
from bld_runtime.errors import BackendUnavailableError
from bld_runtime.images import from_float, nchw_to_nhwc

from .checkpoint import load_autoencoder, load_prior
from .sampler import ReferenceSampler


class TorchBackend(BenchBackend):
    """Eager PyTorch on the CPU, same checkpoint, steps, batch and guidance. (CPU only: the
    reference sampler keeps its state in numpy and feeds the step module host tensors.)"""

    name = "torch"
    kind = "torch"
    compiled = False

    def __init__(self, run_dir, threads: int, num_steps: int):
        if run_dir is None:
            raise BackendUnavailableError(
                f"backend {self.name!r} needs the run directory the bundle was exported from "
                "(--run RUN_DIR)")
        # torch's thread count is process-global: set it only while this backend runs.
        self.threads = threads if threads > 0 else torch.get_num_threads()
        denoiser, cfg = load_prior(run_dir)
        if cfg.sampling_steps != num_steps:
            raise BackendUnavailableError(
                f"run {str(run_dir)!r} samples {cfg.sampling_steps} steps but the bundle "
                f"{num_steps}: is it the run the bundle was exported from?")
        self.autoencoder = load_autoencoder(run_dir)
        self.sampler = ReferenceSampler(denoiser)
        self.decoder = self.autoencoder.decode
        if self.compiled:
            self._compile()
        for module in (self.sampler.step, self.sampler.guided_step):
            module.register_forward_pre_hook(self._step_starts)
            module.register_forward_hook(self._step_ends)
        self._clock: StageClock | None = None
        self._mark = 0.0
        self._step = 0

    def _compile(self):
        compiled = torch.compile(self.sampler.step.denoiser, dynamic=False)
        self.sampler.step.denoiser = compiled  # both step modules share the one denoiser
        self.sampler.guided_step.denoiser = compiled
        self.decoder = torch.compile(self.autoencoder.decode, dynamic=False)

    # --- hooks: the reference sampler calls its step module once per step --------------------

    def _step_starts(self, module, args):
        now = time.perf_counter()
        if self._step == 0:
            self._clock.initial = now - self._mark
        else:
            self._clock.sampling[self._step - 1] = now - self._mark
        self._mark = now

    def _step_ends(self, module, args, output):
        now = time.perf_counter()
        self._clock.model[self._step] = now - self._mark
        self._mark = now
        self._step += 1

    # --- BenchBackend -------------------------------------------------------------------------

    def generate(self, request: Request, clock: StageClock) -> np.ndarray:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._generate(request, clock)
        finally:
            torch.set_num_threads(previous)

    def _generate(self, request: Request, clock: StageClock) -> np.ndarray:
        self._clock, self._step = clock, 0
        self._mark = time.perf_counter()
        bits = self.sampler.sample(request.seeds, request.classes, guidance=request.guidance,
                                   temperature=request.temperature)
        clock.sampling[self._step - 1] = time.perf_counter() - self._mark
        with torch.no_grad():
            start = time.perf_counter()
            images = self.decoder(torch.from_numpy(bits).float())
            clock.decode = time.perf_counter() - start
        return from_float(nchw_to_nhwc(images.clamp(-1.0, 1.0).numpy()))


class CompiledTorchBackend(TorchBackend):
    """TorchBackend with torch.compile (Inductor). Compilation happens in the warm-up runs;
    where it fails (no compiler, an unsupported op) the benchmark reports it as unavailable."""

    name = "torch-compile"
    compiled = True
    fragile = True  # errors in its runs mean "unavailable here", not a bug of ours
