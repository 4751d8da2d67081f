"""The binary autoencoder: a VQGAN-style conv encoder/decoder with a Bernoulli bottleneck.

The encoder outputs, per latent token, C Bernoulli probabilities (sigmoid). Training samples
bits from them with a straight-through gradient; inference thresholds at 0.5 or samples with
a seed. The decoder maps the bits to an embedding with a learned linear map, then upsamples.
Latents are laid out (B, L, C) with L = h * w tokens in row-major order (the contract's layout).

AutoencoderConfig.heads = "binaryae" builds the official BinaryAutoEncoder's ends instead of
VQGAN's: the encoder's last conv makes emb_dim channels and a 1x1 conv projects them to the bit
logits (upstream's BinaryQuantizer.proj), and neither end has a SiLU after its last GroupNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import AutoencoderConfig


def group_norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map (VQGAN's AttnBlock).

    Written with plain MatMul/Softmax so that it exports to ops every ONNX consumer accepts.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).chunk(3, dim=1)  # (B, C, HW) each
        att = torch.softmax(q.transpose(1, 2) @ k * (c**-0.5), dim=-1)  # (B, HW, HW)
        out = (v @ att.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as in VQGAN


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _stage(cin: int, cout: int, blocks: int, attn: bool, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers.append(ResBlock(cin if i == 0 else cout, cout, dropout))
        if attn:
            layers.append(SpatialAttention(cout))
    return layers


def _middle(channels: int, dropout: float) -> list[nn.Module]:
    return [
        ResBlock(channels, channels, dropout),
        SpatialAttention(channels),
        ResBlock(channels, channels, dropout),
    ]


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)]
        res, cin = cfg.image_size, widths[0]
        for level, cout in enumerate(widths):
            layers += _stage(
                cin, cout, cfg.num_res_blocks, res in cfg.attn_resolutions, cfg.dropout
            )
            cin = cout
            if level < len(widths) - 1:
                layers.append(Downsample(cout))
                res //= 2
        layers += _middle(cin, cfg.dropout)
        if cfg.heads == "binaryae":
            layers += [
                group_norm(cin),
                nn.Conv2d(cin, cfg.emb_dim, 3, padding=1),
                nn.Conv2d(cfg.emb_dim, cfg.bits, 1),
            ]
        else:
            layers += [group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cfg.bits, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # (B, bits, h, w) logits


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        # The bits enter through a learned linear map (a 1x1 conv), not a codebook lookup.
        self.embed = nn.Conv2d(cfg.bits, cfg.emb_dim, 1, bias=cfg.embed_bias)
        self.embed_norm = group_norm(cfg.emb_dim) if cfg.norm_first else nn.Identity()
        cin = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.emb_dim, cin, 3, padding=1)]
        layers += _middle(cin, cfg.dropout)
        res = cfg.latent_size
        blocks = cfg.decoder_res_blocks or cfg.num_res_blocks + 1
        for level in reversed(range(len(widths))):
            cout = widths[level]
            layers += _stage(cin, cout, blocks, res in cfg.attn_resolutions, cfg.dropout)
            cin = cout
            if level > 0:
                layers.append(Upsample(cout))
                res *= 2
        layers += [group_norm(cin)] if cfg.heads == "binaryae" else [group_norm(cin), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(cin, cfg.in_channels, 3, padding=1)

    def forward(self, bits_map):
        return self.conv_out(self.net(self.embed_norm(self.embed(bits_map))))


class BinaryAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if cfg.image_size % 2 ** (len(cfg.ch_mult) - 1):
            raise ValueError(f"image size {cfg.image_size} is not divisible by the downsampling")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    def encode_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, ch, H, W) in [-1, 1] -> bit probabilities (B, L, C)."""
        logits = self.encoder(x)
        return torch.sigmoid(logits).flatten(2).transpose(1, 2)

    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """Bits (B, L, C) as float -> images (B, ch, H, W), roughly in [-1, 1]."""
        s = self.cfg.latent_size
        bits_map = bits.transpose(1, 2).reshape(bits.shape[0], self.cfg.bits, s, s).contiguous()
        return self.decoder(bits_map)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, cycle: bool = False
    ):
        """Training pass: sample bits with a straight-through gradient, then decode.

        Returns (recon, probs, bits, cycle_pairs). With `cycle`, cycle_pairs holds (probs the
        encoder gives the decoded image of some bits, those bits) for the thresholded bits and
        for the sampled ones, the images quantised to uint8 as the runtime sees them
        (straight-through). Training both networks towards those bits makes the decoder render
        every bit recoverably and the encoder recover it, over the neighbourhood of codes the
        sampling covers, so deterministic encode -> decode -> encode is (near) a fixed point.
        """
        probs = self.encode_probs(x)
        sample = torch.bernoulli(probs.detach(), generator=generator)
        bits = sample + probs - probs.detach()
        recon = self.decode(bits)
        cycle_pairs = []
        if cycle:
            threshold = (probs.detach() > 0.5).to(probs.dtype)
            for image, target in ((self.decode(threshold), threshold), (recon, sample)):
                image = image.clamp(-1.0, 1.0)
                levels = torch.round((image + 1.0) * 127.5) / 127.5 - 1.0
                cycle_pairs.append((self.encode_probs(image + (levels - image).detach()), target))
        return recon, probs, bits, cycle_pairs


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / VQGAN): one real/fake logit per image patch."""

    def __init__(self, in_channels: int = 3, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ch * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ch * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
