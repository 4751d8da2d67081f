"""Training side of the Bernoulli diffusion: forward noising and the flip-prediction loss.

The schedule tables (beta, k, b) come from bld_runtime.contract, the single source of truth,
and live here as buffers. Timesteps follow the contract: t = 1..T, and the denoiser sees t - 1.
The loss follows the paper's reference implementation (p_flip mode): the denoiser predicts,
per bit, the logit that the bit flipped between z_0 and z_t; the target is xor(z_0, z_t).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bld_runtime import contract
from bld_train.config import PriorTrainConfig


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """The reference's focal BCE (alpha = -1): down-weights easy bits, then balances the rare
    flipped bits against the unflipped ones by their share in each sample."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    miss = (1 - (p * targets + (1 - p) * (1 - targets))).clamp(1e-6, 1 - 1e-6)
    loss = ce * miss**gamma
    share = targets.sum(dim=(-1, -2), keepdim=True) / targets[0].numel()
    return ((1 - share) * targets + share * (1 - targets)) * loss


def posterior(
    z_t: torch.Tensor,
    p0: torch.Tensor,
    k_next: torch.Tensor,
    b_next: torch.Tensor,
    beta_prod: torch.Tensor,
) -> torch.Tensor:
    """q(z_{t'} = 1 | z_t, z_0 ~ B(p0)): the contract's section-4 posterior, the one torch copy
    of it (the sampler's step uses it too). k_next, b_next: k and b at t'; beta_prod: the
    product of beta over t'+1..t (beta_t itself for t' = t - 1)."""
    a = k_next * p0 + b_next
    h1 = beta_prod * z_t + 0.5 * (1 - beta_prod)
    h0 = beta_prod * (1 - z_t) + 0.5 * (1 - beta_prod)
    return a * h1 / (a * h1 + (1 - a) * h0)


class BernoulliDiffusion(nn.Module):
    def __init__(self, schedule: str, train_steps: int):
        super().__init__()
        beta = contract.betas(schedule, train_steps)
        k, b = contract.keep_tables(beta)
        self.train_steps = train_steps
        self.register_buffer("beta", torch.from_numpy(beta).float(), persistent=False)
        self.register_buffer("k", torch.from_numpy(k).float(), persistent=False)
        self.register_buffer("b", torch.from_numpy(b).float(), persistent=False)

    def _table(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t][:, None, None]

    def q_probs(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """P(z_t = 1 | z_0) = k_t z_0 + b_t, for t (B,) in 0..T."""
        return self._table(self.k, t) * z0 + self._table(self.b, t)

    def q_sample(
        self, z0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.bernoulli(self.q_probs(z0, t), generator=generator)

    def sample_timesteps(self, batch: int, device, generator=None) -> torch.Tensor:
        return torch.randint(1, self.train_steps + 1, (batch,), device=device, generator=generator)

    def loss(
        self,
        denoiser: nn.Module,
        z0: torch.Tensor,
        y: torch.Tensor,
        cfg: PriorTrainConfig,
        num_classes: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss on clean bits z0 (B, L, C) with labels y (B,); returns (loss, stats)."""
        batch, device = z0.shape[0], z0.device
        t = self.sample_timesteps(batch, device, generator)
        z_t = self.q_sample(z0, t, generator)
        drop = torch.rand(batch, device=device, generator=generator) < cfg.label_drop
        y = torch.where(drop, torch.full_like(y, num_classes), y)

        logits = denoiser(z_t, t - 1, y).float()
        # The loss math runs in float32 outside autocast (binary_cross_entropy refuses it).
        with torch.autocast(device_type=device.type, enabled=False):
            flipped = torch.logical_xor(z0 > 0.5, z_t > 0.5).float()
            if cfg.focal >= 0:
                per_bit = focal_loss(logits, flipped, cfg.focal)
            else:
                per_bit = F.binary_cross_entropy_with_logits(logits, flipped, reduction="none")
            if cfg.loss == "weighted":
                weight = (1 - (t - 1).float() / self.train_steps)[:, None, None]
            elif cfg.loss == "mean":
                weight = torch.ones_like(t, dtype=torch.float32)[:, None, None]
            else:
                raise ValueError(f"unknown prior loss {cfg.loss!r}; choose 'weighted' or 'mean'")
            bce = per_bit.mean()
            loss = (weight * per_bit).mean()
            with torch.no_grad():
                accuracy = ((logits > 0).float() == flipped).float().mean()
            stats = {"bce": bce.detach(), "acc": accuracy}

            if cfg.aux > 0:
                f = torch.sigmoid(logits)
                p0 = z_t * (1 - f) + (1 - z_t) * f
                k_prev, b_prev = self._table(self.k, t - 1), self._table(self.b, t - 1)
                beta = self._table(self.beta, t)
                predicted = posterior(z_t, p0, k_prev, b_prev, beta)
                true = posterior(z_t, z0, k_prev, b_prev, beta)
                # At t = 1 the posterior of z_0 is the prediction itself (as in the reference).
                predicted = torch.where((t == 1)[:, None, None], p0, predicted)
                aux = F.binary_cross_entropy(
                    predicted.clamp(1e-6, 1 - 1e-6), true.clamp(0, 1), reduction="none"
                )
                aux = (weight * aux).mean()
                loss = loss + cfg.aux * aux
                stats["aux"] = aux.detach()
        stats["loss"] = loss.detach()
        return loss, stats


__all__ = ["BernoulliDiffusion", "posterior", "focal_loss"]
