"""DiffAugment (Zhao et al., NeurIPS 2020) for the discriminator's inputs.

Differentiable, per-sample random transforms of images in [-1, 1], applied to every image the
discriminator sees (real and reconstructed, in its own step and in the generator's), so that it
cannot tell them apart by the augmentation. The upstream BinaryGAN carries the same policies
("color,translation"; see docs/DEVIATIONS.md). Randomness comes from torch's global generator,
which the training loop reseeds every step, so a resumed run draws the same transforms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bld_train.config import ConfigError


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_uniform(x) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x) * 2.0) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels per axis; uncovered pixels become 0."""
    b, _, h, w = x.shape
    reach_h, reach_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-reach_h, reach_h + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-reach_w, reach_w + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # the zero border stands for "outside"
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio * size per image, at a random place (it may stick out)."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """ "color,translation" -> ("color", "translation"); "" -> (); unknown names refused."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ConfigError(
            f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}"
        )
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    for name in policy:
        for transform in POLICIES[name]:
            x = transform(x)
    return x.contiguous()


__all__ = ["diff_augment", "parse_policy", "POLICIES"]
