"""The PyTorch side of `bld bench`: the run's checkpoint sampled in PyTorch, three ways.

    torch            TorchSampler (bld_train.torch_sampler), eager: what a careful PyTorch user
                     writes (scaled_dot_product_attention, inference_mode, buffers reused across
                     steps, Philox uniforms in torch in one pass)
    torch-compile    the same with torch.compile on the step modules, uniforms and decoder
    torch-reference  ReferenceSampler (bld_train.sampler), eager: the readable reference loop
                     (explicit attention, numpy state and Philox draws), for comparison

All three decode with the run's autoencoder and produce the same bits as the runtime
(tests/test_torch_sampler.py). Stages:

    initial        torch/torch-compile: the uniforms of all K draws and the initial state;
                   torch-reference: until its first step module starts (its initial draw)
    step i model   the step module's forward (denoiser, sigmoid, posterior), as in the graph
    step i sample  the draw after step i (torch-reference: also the tensor <-> array
                   conversions, until step i + 1 starts)
    decode         the autoencoder's decoder; the uint8 conversion after it is overhead

The benchmark core (bld_bench.core) finds these backends through the entry-point group
"bld.bench_backends" and imports this module only when one of them is named, so neither the
runtime nor `bld bench` of the runtime's own backends imports torch; bld_train, which this
module samples with, never imports the bench. CPU only: torch's thread count is
set to the benchmark's for the duration of each generation. Precisions: fp32, and bf16
(torch.autocast, e.g. `--backend torch-compile:bf16`) for torch and torch-compile, and int8
(PyTorch's dynamic int8 on the denoiser's Linear layers, `--backend torch:int8`) for torch.
"""

from __future__ import annotations

import time
from abc import abstractmethod

import numpy as np
import torch

from bld_bench.core import BenchBackend, Request, StageClock
from bld_runtime.errors import BackendUnavailableError
from bld_runtime.images import from_float, nchw_to_nhwc
from bld_train.checkpoint import load_autoencoder, load_prior
from bld_train.sampler import ReferenceSampler
from bld_train.torch_sampler import TorchSampler


class _RunBackend(BenchBackend):
    """Loads the run the bundle was exported from and runs generations at a fixed thread count."""

    kind = "torch"

    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, run_dir, threads: int, num_steps: int, precision: str = "fp32"):
        if precision not in self.precisions:
            raise BackendUnavailableError(
                f"backend {self.name!r} runs {', '.join(self.precisions)}, not {precision!r}"
            )
        self.precision = precision
        if run_dir is None:
            raise BackendUnavailableError(
                f"backend {self.name!r} needs the run directory the bundle was exported from "
                "(--run RUN_DIR)"
            )
        self.threads = threads if threads > 0 else torch.get_num_threads()
        self.denoiser, cfg = load_prior(run_dir)
        if cfg.sampling_steps != num_steps:
            raise BackendUnavailableError(
                f"run {str(run_dir)!r} samples {cfg.sampling_steps} steps but the bundle "
                f"{num_steps}: is it the run the bundle was exported from?"
            )
        self.autoencoder = load_autoencoder(run_dir)

    def generate(self, request: Request, clock: StageClock) -> np.ndarray:
        previous = torch.get_num_threads()  # process-global: set only while this backend runs
        torch.set_num_threads(self.threads)
        try:
            return self._generate(request, clock)
        finally:
            torch.set_num_threads(previous)

    @abstractmethod
    def _generate(self, request: Request, clock: StageClock) -> np.ndarray:
        """One generation at this backend's thread count (generate sets and restores it)."""


class TorchBackend(_RunBackend):
    """TorchSampler, eager."""

    name = "torch"
    compiled = False
    precisions = ("fp32", "bf16", "int8")

    def __init__(self, run_dir, threads: int, num_steps: int, precision: str = "fp32"):
        super().__init__(run_dir, threads, num_steps, precision)
        self.sampler = TorchSampler(
            self.denoiser, self.autoencoder, compile=self.compiled, precision=precision
        )

    def _generate(self, request, clock):
        return self.sampler.generate(
            request.seeds, request.classes, request.guidance, request.temperature, clock
        )


class CompiledTorchBackend(TorchBackend):
    """TorchSampler with torch.compile (Inductor). Compilation happens in the warm-up runs
    (one graph per batch size); where it fails (no C++ compiler, an unsupported op) the
    benchmark reports it as unavailable."""

    name = "torch-compile"
    compiled = True
    fragile = True  # errors in its runs mean "unavailable here", not a bug of ours


class ReferenceTorchBackend(_RunBackend):
    """bld_train.sampler.ReferenceSampler, eager. Stage times come from forward hooks on its
    step modules, so what is timed is the reference sampler's own loop, not a copy of it."""

    name = "torch-reference"

    def __init__(self, run_dir, threads: int, num_steps: int, precision: str = "fp32"):
        super().__init__(run_dir, threads, num_steps, precision)
        self.sampler = ReferenceSampler(self.denoiser)
        for module in (self.sampler.step, self.sampler.guided_step):
            module.register_forward_pre_hook(self._step_starts)
            module.register_forward_hook(self._step_ends)
        self._clock: StageClock | None = None
        self._mark = 0.0
        self._step = 0

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

    def _generate(self, request, clock):
        self._clock, self._step = clock, 0
        self._mark = time.perf_counter()
        bits = self.sampler.sample(
            request.seeds,
            request.classes,
            guidance=request.guidance,
            temperature=request.temperature,
        )
        clock.sampling[self._step - 1] = time.perf_counter() - self._mark
        with torch.no_grad():
            start = time.perf_counter()
            images = self.autoencoder.decode(torch.from_numpy(bits).float())
            clock.decode = time.perf_counter() - start
        return from_float(nchw_to_nhwc(images.clamp(-1.0, 1.0).numpy()))
