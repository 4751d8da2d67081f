"""Autoencoder losses: reconstruction, code confidence, hinge GAN with VQGAN's adaptive weight,
and an optional LPIPS-style perceptual distance that runs only from local weights.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from bld_runtime.errors import BldError


class PerceptualWeightsError(BldError):
    """Perceptual loss requested without a usable local weights file."""


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return (x - recon).abs().mean()


def code_confidence_loss(probs: torch.Tensor) -> torch.Tensor:
    """mean(p * (1 - p)): zero when every bit probability is 0 or 1, so bits stop being noisy."""
    return (probs * (1 - probs)).mean()


def cycle_consistency_loss(reencoded: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """BCE of the re-encoded decoded image's bit probabilities against the bits it came from."""
    return F.binary_cross_entropy(reencoded.clamp(1e-6, 1 - 1e-6), bits)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_gan_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """VQGAN's balance: ||d rec / d last|| / ||d gan / d last||, so neither loss dominates."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# --- LPIPS-style perceptual loss -------------------------------------------------------------
# The weights file is a safetensors file with
#   features.{i}.weight / .bias for i in VGG16_CONVS (torchvision's vgg16().features indexing),
#   lin{k}.weight of shape (1, C_k, 1, 1) for k = 0..4 (the LPIPS linear heads, "vgg" v0.1).
# Build it once, where torchvision and lpips are installed, e.g.:
#   sd = {f"features.{i}.{n}": t for (k, t) in torchvision.models.vgg16(weights="DEFAULT")
#         .features.state_dict().items() for i, n in [k.split(".")]}
#   sd |= {f"lin{k}.weight": lpips.LPIPS(net="vgg").state_dict()[f"lin{k}.model.1.weight"]
#          for k in range(5)}
#   safetensors.torch.save_file(sd, "lpips_vgg16.safetensors")
# Nothing is ever downloaded here.
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_STAGE_ENDS = (2, 7, 14, 21, 28)  # LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_WIDTHS = (64, 128, 256, 512, 512)


def check_perceptual_weights(weights_path: str | os.PathLike) -> None:
    """Refuse a missing weights file before any training work starts."""
    if not weights_path or not os.path.isfile(weights_path):
        raise PerceptualWeightsError(
            f"perceptual loss weights not found at {str(weights_path)!r}; pass a local "
            "LPIPS-VGG16 safetensors file (bld train autoencoder --lpips PATH, or "
            "perceptual_weights_path) or use perceptual_weight = 0"
        )


class PerceptualLoss(nn.Module):
    """LPIPS distance (VGG16 backbone) between images in [-1, 1]; frozen, from a local file."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        from safetensors.torch import load_file

        check_perceptual_weights(weights_path)
        weights = load_file(os.fspath(weights_path))
        expected = {f"features.{i}.{n}" for i in VGG16_CONVS for n in ("weight", "bias")}
        expected |= {f"lin{k}.weight" for k in range(5)}
        missing = sorted(expected - set(weights))
        if missing:
            raise PerceptualWeightsError(f"{weights_path}: missing tensor {missing[0]!r}")
        self.convs = nn.ModuleDict()
        for i in VGG16_CONVS:
            w = weights[f"features.{i}.weight"]
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(weights[f"features.{i}.bias"])
            self.convs[str(i)] = conv
        self.heads = nn.ParameterList(
            nn.Parameter(weights[f"lin{k}.weight"].float(), requires_grad=False) for k in range(5)
        )
        # LPIPS's input normalisation (ImageNet statistics expressed for [-1, 1] inputs).
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = (x - self.shift) / self.scale
        taps = []
        for i in range(VGG16_STAGE_ENDS[-1] + 1):
            if i in VGG16_CONVS:
                x = F.relu(self.convs[str(i)](x))
                if i in VGG16_STAGE_ENDS:
                    taps.append(x)
            elif i in (4, 9, 16, 23):
                x = F.max_pool2d(x, 2)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS distance (B,)."""
        total = 0.0
        for fx, fy, head in zip(self.features(x), self.features(y), self.heads, strict=True):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            total = total + F.conv2d((fx - fy) ** 2, head).mean(dim=(1, 2, 3))
        return total


__all__ = [
    "reconstruction_loss",
    "code_confidence_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
    "PerceptualLoss",
    "PerceptualWeightsError",
    "check_perceptual_weights",
]
