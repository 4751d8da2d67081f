"""The denoiser of the Bernoulli diffusion prior: a transformer over binary latent tokens.

Each token's C bits enter through a linear map of (2 * bits - 1), not a codebook lookup, plus
a fixed 2-D sin-cos position embedding. A time token and a class token are appended to the
sequence; the null class (index num_classes) is the unconditional input for guidance. The
output is, per bit, the logit of the probability that the bit flips between z_t and z_0.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

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


def timestep_features(t: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (DDPM/DiT style), (B, width)."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        # Plain MatMul + Softmax: exports to ops that ONNX Runtime and TensorRT both accept.
        att = torch.softmax(q @ k.transpose(-2, -1) * (w // self.heads) ** -0.5, dim=-1)
        out = (self.dropout(att) @ v).transpose(1, 2).reshape(b, n, w)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Denoiser(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_tokens = cfg.latent_size ** 2
        self.bit_proj = nn.Linear(cfg.bits, cfg.width, bias=False)
        self.register_buffer("pos", torch.from_numpy(sincos_2d(cfg.width, cfg.latent_size))[None],
                             persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.SiLU(),
                                      nn.Linear(cfg.width, cfg.width))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.width)  # last row: null class
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.bits)
        self.apply(self._init)

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
        time_token = self.time_mlp(timestep_features(t, self.cfg.width).to(dtype))[:, None]
        class_token = self.class_emb(y)[:, None]
        x = torch.cat([x, time_token, class_token], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, : self.num_tokens]))
