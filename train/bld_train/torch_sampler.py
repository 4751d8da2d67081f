"""The contract's K-step loop as a careful PyTorch user writes it: `bld bench`'s torch contender.

ReferenceSampler (bld_train.sampler) is written to be read and to teacher-force other
implementations; this one is written to be fast, with the same outputs:

- attention through scaled_dot_product_attention (the exported graphs keep MatMul + Softmax);
- torch.inference_mode;
- the state, the draw flags and the conditioning tensors allocated once per batch size and
  reused by every request and step;
- the Philox uniforms of all K draws computed in torch (bld_train.philox_torch, bit-identical
  to the runtime's), in one vectorised pass before the loop: they depend only on the seeds;
- with compile=True, the step modules, the uniforms and the decoder go through torch.compile;
- with precision="bf16", the step modules and the decoder run under torch.autocast(bfloat16)
  (what a PyTorch user would do for bf16 on a CPU), the probabilities cast back to float32.
  That is another precision: its bits are not the fp32 contract's;
- with precision="int8" (CPU), the denoiser's Linear layers are PyTorch's dynamic int8
  (quantize_dynamic, `_dynamic_int8`), the decoder fp32: another precision too.

Probabilities come from DenoiserStep, the module the step graph is exported from, so the step
and posterior math have one implementation; the bits follow docs/SAMPLING_CONTRACT.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bld_runtime.errors import InvalidRequestError

from . import philox_torch
from .denoiser import Denoiser, use_fused_attention
from .step import DenoiserStep

MAX_UNIFORM_LANES = 1 << 21  # Philox blocks per uniforms call: bounds its int64 temporaries
RECOMPILE_LIMIT = 64  # compiled graphs per code object, for many samplers and batch sizes
PRECISIONS = ("fp32", "bf16", "int8")


def _autocast_bf16(fn, device: torch.device):
    """`fn` run under torch.autocast(bfloat16), its tensor result cast back to float32.

    A plain function, so torch.compile traces the autocast region with the module inside."""

    def run(*args):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fn(*args).float()

    return run


def _dynamic_int8(denoiser: Denoiser) -> Denoiser:
    """A copy of `denoiser` with PyTorch's own int8 path (torch.ao.quantization.quantize_dynamic):
    every Linear but `bit_proj` (whose weight's dtype the forward reads) with int8 weights per
    output channel and activations quantized on the fly, per call, from their range in that
    call. What a PyTorch user would do for int8 on a CPU; the decoder stays fp32, as in the int8
    bundles. Its activation scales depend on the whole batch, so its bits depend on the batch's
    composition (the runtime's int8 graphs use calibrated, fixed scales). torch 2.13 warns that
    torch.ao.quantization is deprecated (its successor, torchao, is not a dependency here); it
    still runs (quantized engine "x86")."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in denoiser.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "bit_proj"
        }
        return quantize_dynamic(denoiser, spec, dtype=torch.qint8)


@dataclass
class _Buffers:
    """What one batch size needs, made once and reused by every request and step."""

    bits: torch.Tensor  # float32 (B, L, C): the state z
    flags: torch.Tensor  # bool (B, L, C): u <= p of a draw
    steps: list[torch.Tensor]  # int64 (B,) filled with i, one per step
    labels: torch.Tensor  # int64 (B,)
    temperature: torch.Tensor  # float32 (B,)
    guidance: torch.Tensor  # float32 (B,)


class TorchSampler:
    """Generates bits (and, with an autoencoder, images) for one seed per image.

    The denoiser is switched to fused attention in place, so pass one this sampler owns.
    `clock`, where given, is filled like bld_bench.core.StageClock: initial (uniforms and
    the initial state), model[i] (step module i), sampling[i] (the draw after step i), decode.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        autoencoder=None,
        compile: bool = False,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise InvalidRequestError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.device = torch.device(device)
        if precision == "int8" and self.device.type != "cpu":
            raise InvalidRequestError(
                "precision 'int8' (PyTorch's dynamic int8) runs on the CPU only"
            )
        denoiser = use_fused_attention(denoiser).eval().to(self.device)
        if precision == "int8":
            denoiser = _dynamic_int8(denoiser)
        self.cfg = denoiser.cfg
        self.latent_shape = (self.cfg.latent_size**2, self.cfg.bits)
        self.num_elements = self.latent_shape[0] * self.latent_shape[1]
        plain = DenoiserStep(denoiser, guided=False).eval().to(self.device)
        guided = DenoiserStep(denoiser, guided=True).eval().to(self.device)
        self.num_steps = plain.num_steps
        self.autoencoder = autoencoder.eval().to(self.device) if autoencoder is not None else None
        decode = self.autoencoder.decode if autoencoder is not None else None
        uniforms = philox_torch.uniforms
        if precision == "bf16":
            plain, guided = _autocast_bf16(plain, self.device), _autocast_bf16(guided, self.device)
            decode = _autocast_bf16(decode, self.device) if decode is not None else None
        if compile:
            # One graph per batch size and sampler, and samplers in one process (bld bench's
            # fp32, bf16 and int8 contenders) share the modules' code: past dynamo's recompile
            # limit (8 per code object) it would run them eagerly without a word.
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
            plain, guided = (torch.compile(m, dynamic=False) for m in (plain, guided))
            uniforms = torch.compile(uniforms, dynamic=False)
            decode = torch.compile(decode, dynamic=False) if decode is not None else None
        self._step_modules = {False: plain, True: guided}
        self._uniforms, self._decode = uniforms, decode
        self._buffers: dict[int, _Buffers] = {}
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def _bind(self, batch: int) -> _Buffers:
        buffers = self._buffers.get(batch)
        if buffers is None:
            shape, dev = (batch,) + self.latent_shape, self.device
            buffers = _Buffers(
                bits=torch.empty(shape, dtype=torch.float32, device=dev),
                flags=torch.empty(shape, dtype=torch.bool, device=dev),
                steps=[
                    torch.full((batch,), i, dtype=torch.int64, device=dev)
                    for i in range(self.num_steps)
                ],
                labels=torch.empty(batch, dtype=torch.int64, device=dev),
                temperature=torch.empty(batch, dtype=torch.float32, device=dev),
                guidance=torch.empty(batch, dtype=torch.float32, device=dev),
            )
            self._buffers[batch] = buffers
        return buffers

    def uniforms(self, seeds: torch.Tensor) -> torch.Tensor:
        """float32 (K, B, n): subsequence 0 (the initial state) and the K - 1 draws."""
        K, n = self.num_steps, self.num_elements
        blocks = -(-n // 4)
        span = max(1, MAX_UNIFORM_LANES // (blocks * len(seeds)))
        parts = [
            self._uniforms(seeds, first, min(span, K - first), n) for first in range(0, K, span)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.inference_mode()
    def sample(
        self, seeds, classes, guidance: float = 0.0, temperature: float = 1.0, clock=None
    ) -> torch.Tensor:
        """Bits uint8 (B, L, C) on the sampler's device."""
        if temperature <= 0 or not np.isfinite(temperature):
            raise InvalidRequestError(f"temperature must be finite and > 0, got {temperature}")
        if guidance < 0 or not np.isfinite(guidance):
            raise InvalidRequestError(f"guidance must be finite and >= 0, got {guidance}")
        timed = clock is not None
        mark = time.perf_counter() if timed else 0.0
        seeds = philox_torch.seeds_tensor(seeds, self.device)
        batch = seeds.shape[0]
        buf = self._bind(batch)
        buf.labels.copy_(torch.as_tensor(np.asarray(classes, np.int64).reshape(batch)))
        buf.temperature.fill_(float(temperature))
        buf.guidance.fill_(float(guidance))
        step_module = self._step_modules[guidance > 0]
        u = self.uniforms(seeds).view((self.num_steps, batch) + self.latent_shape)
        z, flags = buf.bits, buf.flags
        torch.le(u[0], 0.5, out=flags)
        z.copy_(flags)
        if timed:
            self._sync()
            now = time.perf_counter()
            clock.initial, mark = now - mark, now
        last = self.num_steps - 1
        for i in range(self.num_steps):
            probs = step_module(z, buf.steps[i], buf.labels, buf.temperature, buf.guidance)
            if timed:
                self._sync()
                now = time.perf_counter()
                clock.model[i], mark = now - mark, now
            if i < last:
                torch.le(u[i + 1], probs, out=flags)
            else:
                torch.gt(probs, 0.5, out=flags)
            z.copy_(flags)
            if timed:
                self._sync()
                now = time.perf_counter()
                clock.sampling[i], mark = now - mark, now
        return flags.to(torch.uint8)

    @torch.inference_mode()
    def decode(self, bits: torch.Tensor, clock=None) -> np.ndarray:
        """uint8 images (N, H, W, ch), rounded as bld_runtime.images.from_float rounds."""
        if self._decode is None:
            raise InvalidRequestError("this sampler has no autoencoder to decode with")
        start = time.perf_counter()
        image = self._decode(bits.to(torch.float32))
        if clock is not None:
            self._sync()
            clock.decode = time.perf_counter() - start
        levels = ((image.clamp(-1.0, 1.0) + 1.0) * 127.5).round_().clamp_(0, 255)
        return levels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def generate(
        self, seeds, classes, guidance: float = 0.0, temperature: float = 1.0, clock=None
    ) -> np.ndarray:
        return self.decode(self.sample(seeds, classes, guidance, temperature, clock), clock)


__all__ = ["TorchSampler"]
