"""The sampling contract in numpy: schedules, sampling timesteps, per-step tables, posterior.

This module is the single source of truth for the math of SAMPLING_CONTRACT.md sections 3-4.
Training (bld_train) and export (bld_export) import these tables; they never re-derive them.
Probabilities are computed in float32, as the graphs and kernels compute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .errors import ContractError

SCHEDULES = ("linear", "cosine", "sigmoid")
ScalarT = TypeVar("ScalarT", bound=np.generic)


def betas(schedule: str, train_steps: int) -> NDArray[np.float64]:
    """Per-step keep factors beta_t as float64, index t = 0..T with beta_0 = 1 (unused)."""
    T = _check_train_steps(train_steps)
    if schedule == "linear":
        # The paper's default: k_T = prod(beta) = 0, so z_T is pure Bernoulli(0.5) noise.
        t = np.arange(1, T + 1, dtype=np.float64)
        steps = 1.0 - 1.0 / (T - t + 1.0)
    elif schedule in ("cosine", "sigmoid"):
        # These two are defined by their keep curve k(s) on s in [0, 1]; beta_t = k_t / k_{t-1}.
        s = np.linspace(0.0, 1.0, T + 1)
        keep = _cosine_keep(s) if schedule == "cosine" else _sigmoid_keep(s)
        steps = keep[1:] / keep[:-1]
    else:
        raise ContractError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return np.concatenate([[1.0], steps])


def _cosine_keep(s: NDArray[np.float64]) -> NDArray[np.float64]:
    return 0.5 + 0.5 * np.cos(s * np.pi)


def _sigmoid_keep(
    s: NDArray[np.float64], start: float = 0.0, end: float = 3.0, tau: float = 0.8
) -> NDArray[np.float64]:
    def sigmoid(x: float | NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(x, np.float64))))

    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    out = sigmoid((s * (end - start) + start) / tau)
    return np.clip((v_end - out) / (v_end - v_start), 0.0, 1.0)


def keep_tables(beta: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(k, b) over t = 0..T with q(z_t | z_0) = Bernoulli(k_t * z_0 + b_t), as float64."""
    k = np.empty_like(beta)
    b = np.empty_like(beta)
    k[0], b[0] = 1.0, 0.0
    for t in range(1, len(beta)):
        k[t] = beta[t] * k[t - 1]
        b[t] = beta[t] * b[t - 1] + 0.5 * (1.0 - beta[t])
    return k, b


def sampling_timesteps(train_steps: int, sampling_steps: int) -> NDArray[np.int64]:
    """The K timesteps tau_i = 1 + floor(i (T-1) / (K-1)) in visiting (decreasing) order."""
    T = _check_train_steps(train_steps)
    K = int(sampling_steps)
    if not 2 <= K <= T:
        raise ContractError(f"sampling steps must be between 2 and T={T}, got {K}")
    i = np.arange(K, dtype=np.int64)
    return (1 + (i * (T - 1)) // (K - 1))[::-1].copy()


@dataclass(frozen=True)
class StepTables:
    """Everything step i (0-based, in visiting order) needs, as arrays of length K.

    t_model: the denoiser's time input t - 1; k_next, b_next: k and b at t' (the next timestep,
    0 after the last); beta_prod: prod(beta_s for s = t'+1..t); is_last: step K-1 outputs p0.
    """

    timesteps: NDArray[np.int64]
    t_model: NDArray[np.int64]
    k_next: NDArray[np.float32]
    b_next: NDArray[np.float32]
    beta_prod: NDArray[np.float32]
    is_last: NDArray[np.bool_]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def step_tables(schedule: str, train_steps: int, sampling_steps: int) -> StepTables:
    beta = betas(schedule, train_steps)
    k, b = keep_tables(beta)
    ts = sampling_timesteps(train_steps, sampling_steps)
    nxt = np.append(ts[1:], 0)
    beta_prod = np.array([np.prod(beta[n + 1 : t + 1]) for t, n in zip(ts, nxt, strict=True)])
    return StepTables(
        timesteps=ts,
        t_model=(ts - 1).astype(np.int64),
        k_next=k[nxt].astype(np.float32),
        b_next=b[nxt].astype(np.float32),
        beta_prod=beta_prod.astype(np.float32),
        is_last=nxt == 0,
    )


def _check_train_steps(train_steps: int) -> int:
    T = int(train_steps)
    if T < 2:
        raise ContractError(f"the number of training steps T must be at least 2, got {T}")
    return T


# --- Section 4: one denoising step, in float32 -------------------------------------------


def mix_logits(
    l_cond: npt.ArrayLike,
    temperature: float | np.floating[Any],
    guidance: float | np.floating[Any] = 0.0,
    l_uncond: npt.ArrayLike | None = None,
) -> NDArray[np.float32]:
    """Step 4.1: divide by temperature, then l = (1 + g) l_c - g l_u where g > 0."""
    tau = np.float32(temperature)
    cond = np.asarray(l_cond, np.float32) / tau
    if l_uncond is None:
        return cond
    g = np.float32(guidance)
    return (np.float32(1) + g) * cond - g * (np.asarray(l_uncond, np.float32) / tau)


def clean_probability(z: npt.ArrayLike, logits: npt.ArrayLike) -> NDArray[np.float32]:
    """Step 4.2: flip probability f = sigmoid(l); p0 = z (1 - f) + (1 - z) f."""
    z32 = np.asarray(z, np.float32)
    f = np.float32(1) / (np.float32(1) + np.exp(-np.asarray(logits, np.float32)))
    return z32 * (np.float32(1) - f) + (np.float32(1) - z32) * f


def posterior(
    z: npt.ArrayLike,
    p0: npt.ArrayLike,
    k_next: float | np.floating[Any],
    b_next: float | np.floating[Any],
    beta_prod: float | np.floating[Any],
) -> NDArray[np.float32]:
    """Step 4.3: probability that z_{t'} = 1 given the observed z_t and the predicted p0."""
    z32 = np.asarray(z, np.float32)
    one, half = np.float32(1), np.float32(0.5)
    a = np.float32(k_next) * np.asarray(p0, np.float32) + np.float32(b_next)
    B = np.float32(beta_prod)
    h1 = B * z32 + half * (one - B)
    h0 = B * (one - z32) + half * (one - B)
    # numpy's stubs type this float32 quotient as float64; every operand here is float32.
    return a * h1 / (a * h1 + (one - a) * h0)  # type: ignore[no-any-return]


def step_probability(
    z: npt.ArrayLike, logits: npt.ArrayLike, tables: StepTables, step: int
) -> NDArray[np.float32]:
    """The step graph's output: the posterior for inner steps, p0 at the last step."""
    p0 = clean_probability(z, logits)
    if tables.is_last[step]:
        return p0
    return posterior(z, p0, tables.k_next[step], tables.b_next[step], tables.beta_prod[step])


def apply_mask(
    z: NDArray[ScalarT], mask: NDArray[Any] | None, known: NDArray[Any] | None
) -> NDArray[ScalarT]:
    """Step 4.4 (inpainting): write the known bits back where mask == 1, in place."""
    if mask is not None:
        if known is None:
            raise ContractError("a mask needs the known bits it keeps")
        np.copyto(z, known, where=mask.astype(bool))
    return z
