"""Training side of the Bernoulli diffusion: forward marginals, posterior, loss, label dropout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bld_runtime import contract
from bld_train.config import PriorConfig, PriorTrainConfig
from bld_train.denoiser import Denoiser
from bld_train.diffusion import BernoulliDiffusion, posterior

T = 16


class FixedLogits(nn.Module):
    """A stand-in denoiser returning fixed logits and recording its inputs."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.calls = []

    def forward(self, bits, t, y):
        self.calls.append((bits.clone(), t.clone(), y.clone()))
        return self.logits.expand(bits.shape[0], -1, -1)


@pytest.mark.parametrize("schedule", contract.SCHEDULES)
def test_tables_come_from_the_contract(schedule):
    diffusion = BernoulliDiffusion(schedule, T)
    beta = contract.betas(schedule, T)
    k, b = contract.keep_tables(beta)
    assert torch.equal(diffusion.beta, torch.from_numpy(beta).float())
    assert torch.equal(diffusion.k, torch.from_numpy(k).float())
    assert torch.equal(diffusion.b, torch.from_numpy(b).float())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_marginal_matches_k_z0_plus_b(schedule):
    diffusion = BernoulliDiffusion(schedule, T)
    g = torch.Generator().manual_seed(1234)
    n = 4000
    z0 = (torch.rand(n, 8, 4, generator=g) < 0.5).float()
    k, b = contract.keep_tables(contract.betas(schedule, T))
    for t in (0, 1, T // 2, T - 1, T):
        zt = diffusion.q_sample(z0, torch.full((n,), t), generator=g)
        assert set(zt.unique().tolist()) <= {0.0, 1.0}
        for clean in (0.0, 1.0):
            draws = zt[z0 == clean]
            p = k[t] * clean + b[t]
            sigma = np.sqrt(max(p * (1 - p), 1e-12) / draws.numel())
            assert abs(draws.mean().item() - p) < 5 * sigma + 1e-9, (t, clean)


def test_posterior_matches_the_contract_and_bayes_rule():
    beta = contract.betas("linear", T)
    k, b = contract.keep_tables(beta)
    rng = np.random.default_rng(0)
    z_t = rng.integers(0, 2, 1000).astype(np.float32)
    p0 = rng.random(1000).astype(np.float32)
    for t in (2, 5, T):
        ours = posterior(
            torch.from_numpy(z_t),
            torch.from_numpy(p0),
            torch.tensor(k[t - 1]).float(),
            torch.tensor(b[t - 1]).float(),
            torch.tensor(beta[t]).float(),
        ).numpy()
        theirs = contract.posterior(z_t, p0, k[t - 1], b[t - 1], beta[t])
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        # Bayes' rule for a known z_0: q(z_{t-1} | z_0) q(z_t | z_{t-1}), normalised.
        for clean in (0.0, 1.0):
            prior1 = k[t - 1] * clean + b[t - 1]
            like = {v: beta[t] * (z_t == v) + 0.5 * (1 - beta[t]) for v in (0.0, 1.0)}
            bayes = prior1 * like[1.0] / (prior1 * like[1.0] + (1 - prior1) * like[0.0])
            exact = posterior(
                torch.from_numpy(z_t),
                torch.tensor(clean),
                torch.tensor(k[t - 1]),
                torch.tensor(b[t - 1]),
                torch.tensor(beta[t]),
            ).numpy()
            np.testing.assert_allclose(exact, bayes, rtol=1e-6)


def _expected_draws(seed, batch, z0, diffusion, label_drop):
    """Replay the loss's random draws (t, z_t, label drop) in the documented order."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, T + 1, (batch,), generator=g)
    zt = torch.bernoulli(
        diffusion.k[t][:, None, None] * z0 + diffusion.b[t][:, None, None], generator=g
    )
    drop = torch.rand(batch, generator=g) < label_drop
    return t, zt, drop


@pytest.mark.parametrize("mode", ["weighted", "mean"])
def test_loss_is_flip_bce_with_the_reference_weighting(mode):
    diffusion = BernoulliDiffusion("linear", T)
    g0 = torch.Generator().manual_seed(0)
    batch = 64
    z0 = (torch.rand(batch, 6, 5, generator=g0) < 0.5).float()
    logits = torch.randn(1, 6, 5, generator=g0)
    denoiser = FixedLogits(logits)
    cfg = PriorTrainConfig(loss=mode, label_drop=0.0)
    y = torch.randint(0, 10, (batch,), generator=g0)
    loss, stats = diffusion.loss(denoiser, z0, y, cfg, 10, torch.Generator().manual_seed(7))

    t, zt, _ = _expected_draws(7, batch, z0, diffusion, 0.0)
    bits, t_model, y_seen = denoiser.calls[0]
    assert torch.equal(bits, zt) and torch.equal(t_model, t - 1) and torch.equal(y_seen, y)
    target = (z0 != zt).float()
    per_bit = F.binary_cross_entropy_with_logits(logits.expand_as(z0), target, reduction="none")
    weight = (1 - (t - 1) / T)[:, None, None] if mode == "weighted" else torch.ones(1)
    torch.testing.assert_close(loss, (weight * per_bit).mean())
    torch.testing.assert_close(stats["bce"], per_bit.mean())
    loss.backward()
    assert denoiser.logits.grad is not None and denoiser.logits.grad.abs().sum() > 0


def test_label_dropout_uses_the_null_class():
    diffusion = BernoulliDiffusion("linear", T)
    z0 = torch.zeros(400, 2, 2)
    y = torch.arange(400) % 10
    for p, expected in ((0.0, 0), (1.0, 400)):
        denoiser = FixedLogits(torch.zeros(1, 2, 2))
        diffusion.loss(denoiser, z0, y, PriorTrainConfig(label_drop=p), 10)
        seen = denoiser.calls[0][2]
        assert int((seen == 10).sum()) == expected
        assert torch.equal(seen[seen != 10], y[seen != 10])
    denoiser = FixedLogits(torch.zeros(1, 2, 2))
    diffusion.loss(
        denoiser, z0, y, PriorTrainConfig(label_drop=0.25), 10, torch.Generator().manual_seed(3)
    )
    _, _, drop = _expected_draws(3, 400, z0, diffusion, 0.25)
    seen = denoiser.calls[0][2]
    assert torch.equal(seen == 10, drop) and 60 < int(drop.sum()) < 140


@pytest.mark.parametrize(
    "focal,aux", [(-1.0, 0.0), (0.0, 0.0), (2.0, 0.0), (-1.0, 0.5), (1.0, 0.1)]
)
def test_loss_variants_are_finite_and_train_a_real_denoiser(focal, aux):
    cfg = PriorConfig(
        latent_size=2, bits=4, num_classes=3, width=16, depth=1, heads=2, train_steps=T
    )
    torch.manual_seed(0)
    denoiser = Denoiser(cfg)
    diffusion = BernoulliDiffusion(cfg.schedule, cfg.train_steps)
    tcfg = PriorTrainConfig(focal=focal, aux=aux)
    z0 = (torch.rand(32, 4, 4) < 0.3).float()
    y = torch.randint(0, 3, (32,))
    loss, stats = diffusion.loss(denoiser, z0, y, tcfg, cfg.num_classes)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    assert ("aux" in stats) == (aux > 0)
    loss.backward()
    grads = [p.grad for p in denoiser.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_aux_loss_is_zero_for_a_perfect_prediction_at_t1():
    # At t = 1 the predicted posterior is p0 itself; logits that recover z0 exactly (large
    # magnitude, right sign) give an aux term of ~0 and the true target z0.
    diffusion = BernoulliDiffusion("linear", T)
    z0 = (torch.rand(8, 3, 3, generator=torch.Generator().manual_seed(5)) < 0.5).float()

    class Oracle(nn.Module):
        def forward(self, bits, t, y):
            return torch.where(bits != z0, 30.0, -30.0)

    diffusion.train_steps = 1  # sample only t = 1 (the tables are still those of T)
    cfg = dataclasses.replace(PriorTrainConfig(), aux=1.0, label_drop=0.0)
    _, stats = diffusion.loss(Oracle(), z0, torch.zeros(8, dtype=torch.long), cfg, 10)
    assert stats["aux"] < 1e-5 and stats["bce"] < 1e-5 and stats["acc"] == 1.0
