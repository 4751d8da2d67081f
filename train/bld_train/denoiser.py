"""The denoiser of the Bernoulli diffusion prior: a transformer over binary latent tokens.

Each token's C bits enter through a linear map of (2 * bits - 1), not a codebook lookup, plus
a 2-D sin-cos position embedding (fixed, or a parameter it initialises, as upstream). A time
token and a class token are appended to the sequence; the null class (index num_classes) is
the unconditional input for guidance. The output is, per bit, the logit of the probability
that the bit flips between z_t and z_0. PriorConfig chooses the official model's details
(LayerScale, learnable positions, time features of t * 4000 / T, PyTorch's default init).

Attention is written out as MatMul + Softmax, which is what gets exported (every ONNX consumer,
TensorRT included, accepts it). `use_fused_attention(model)` switches a model used in PyTorch
itself to scaled_dot_product_attention, the same function computed by a fused kernel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import PriorConfig


def sincos_2d(width: int, size: int) -> np.ndarray:
    """MAE-style fixed 2-D sin-cos embedding, (size * size, width), row-major tokens."""
    if width % 4:
        raise ValueError(f"the denoiser width must be a multiple of 4, got {width}")
    omega = 1.0 / 10000 ** (np.arange(width // 4, dtype=np.float64) / (width / 4))
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")

    def embed(pos):
        angles = pos.reshape(-1, 1) * omega[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed(rows), embed(cols)], axis=1).astype(np.float32)


TIME_RESCALE = 4000.0  # upstream's SinusoidalPosEmb(rescale_steps=4000)


def timestep_features(
    t: torch.Tensor, width: int, kind: str = "raw", train_steps: int = 1
) -> torch.Tensor:
    """Sinusoidal features of the denoiser's time input t = 0..T-1, (B, width).

    raw: DDPM/DiT's, [cos, sin] of t * 10000^(-i / half). rescaled: upstream's SinusoidalPosEmb,
    [sin, cos] of (t * 4000 / T) * 10000^(-i / (half - 1)): whatever T is, t spans 0..4000, so
    the features use the whole frequency range. (Upstream divides by its sample_steps, which
    equals T in its released commands; T is what the model is trained with, so it is used here.)
    """
    half = width // 2
    if kind == "raw":
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / (half - 1))
    angles = (t.float() * (TIME_RESCALE / train_steps))[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.fused = False  # True: F.scaled_dot_product_attention (see use_fused_attention)

    def forward(self, x):
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # Plain MatMul + Softmax: exports to ops that ONNX Runtime and TensorRT both accept.
            att = torch.softmax(q @ k.transpose(-2, -1) * (w // self.heads) ** -0.5, dim=-1)
            out = self.dropout(att) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-norm transformer block; with `layer_scale` (an initial value), LayerScale as upstream:
    x + gamma_1 * attn(ln1(x)), then x + gamma_2 * mlp(ln2(x)), gammas learnable per channel."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        layer_scale: float | None = None,
    ):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout)
        )
        for name in ("gamma_1", "gamma_2"):
            self.register_parameter(
                name,
                None
                if layer_scale is None
                else nn.Parameter(torch.full((width,), float(layer_scale))),
            )

    def forward(self, x):
        h = self.attn(self.ln1(x))
        x = x + (h if self.gamma_1 is None else self.gamma_1 * h)
        h = self.mlp(self.ln2(x))
        return x + (h if self.gamma_2 is None else self.gamma_2 * h)


class Denoiser(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_tokens = cfg.latent_size**2
        self.bit_proj = nn.Linear(cfg.bits, cfg.width, bias=False)
        pos = torch.from_numpy(sincos_2d(cfg.width, cfg.latent_size))[None]
        if cfg.learned_pos:
            self.pos = nn.Parameter(pos)
        else:
            self.register_buffer("pos", pos, persistent=False)
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.width, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
        )
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.width)  # last row: null class
        scale = cfg.layer_scale_init if cfg.layer_scale else None
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, scale) for _ in range(cfg.depth)
        )
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.bits)
        if cfg.init == "normal":
            self.apply(self._init)
        else:  # upstream's TransformerBD: PyTorch's defaults but for these two
            nn.init.normal_(self.bit_proj.weight, std=0.02)  # its tok_emb
            for block in self.blocks:
                nn.init.zeros_(block.attn.qkv.bias)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, bits: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """bits (B, L, C) in {0, 1}; t (B,) = contract timestep - 1; y (B,) class or null class."""
        dtype = self.bit_proj.weight.dtype  # fp16 exports run the whole transformer in fp16
        x = self.bit_proj(bits.to(dtype) * 2.0 - 1.0) + self.pos
        features = timestep_features(
            t, self.cfg.width, self.cfg.time_features, self.cfg.train_steps
        )
        time_token = self.time_mlp(features.to(dtype))[:, None]
        class_token = self.class_emb(y)[:, None]
        x = torch.cat([x, time_token, class_token], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, : self.num_tokens]))


def use_fused_attention(model: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every SelfAttention in `model` to (or back from) scaled_dot_product_attention.

    For running in PyTorch only: exported graphs must keep the explicit MatMul + Softmax.
    """
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.fused = fused
    return model
