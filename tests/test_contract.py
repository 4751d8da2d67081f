"""The contract's schedule and posterior math (bld_runtime.contract) and its torch twin."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bld_runtime import contract
from bld_runtime.errors import ContractError


@pytest.mark.parametrize("schedule", contract.SCHEDULES)
@pytest.mark.parametrize("T", [2, 16, 64, 1000])
def test_keep_tables_reach_pure_noise(schedule, T):
    k, b = contract.keep_tables(contract.betas(schedule, T))
    assert k[0] == 1.0 and b[0] == 0.0
    assert k[-1] == pytest.approx(0.0, abs=1e-12) and b[-1] == pytest.approx(0.5)
    assert np.all(np.diff(k) <= 0)
    # The recursion keeps q(z_t) a mixture of z_0 and fair coin flips: b_t = (1 - k_t) / 2.
    np.testing.assert_allclose(b, (1 - k) / 2, atol=1e-12)


def test_linear_betas_match_the_paper():
    T = 10
    beta = contract.betas("linear", T)
    t = np.arange(1, T + 1)
    np.testing.assert_array_equal(beta[1:], 1 - 1 / (T - t + 1))


def test_unknown_schedule_and_bad_step_counts_are_rejected():
    with pytest.raises(ContractError, match="unknown schedule"):
        contract.betas("quadratic", 10)
    with pytest.raises(ContractError, match="between 2 and T"):
        contract.sampling_timesteps(10, 11)
    with pytest.raises(ContractError, match="at least 2"):
        contract.sampling_timesteps(1, 1)


@pytest.mark.parametrize("T,K", [(16, 16), (64, 64), (64, 16), (256, 16), (1000, 16), (7, 3)])
def test_timesteps_follow_the_integer_formula(T, K):
    ts = contract.sampling_timesteps(T, K)
    expected = [1 + (i * (T - 1)) // (K - 1) for i in range(K)][::-1]
    assert ts.tolist() == expected
    assert ts[0] == T and ts[-1] == 1 and np.all(np.diff(ts) < 0)


def test_timesteps_where_the_float_formula_differs():
    # The reference code's float linspace gives a duplicate here; the contract's integers don't.
    assert contract.sampling_timesteps(64, 64).tolist() == list(range(64, 0, -1))


def _bayes_posterior(z, p0, beta, t_next, t):
    """Independent float64 derivation: compose one-step kernels, then apply Bayes' rule."""
    k, b = contract.keep_tables(beta)
    prior_one = k[t_next] * p0 + b[t_next]  # q(z_t' = 1 | p0)
    # Exact composition of symmetric kernels: P(same) = 0.5 + 0.5 * prod(beta).
    same = 0.5 + 0.5 * np.prod(beta[t_next + 1 : t + 1])
    like_one = np.where(z == 1, same, 1 - same)  # q(z_t | z_t' = 1)
    like_zero = np.where(z == 0, same, 1 - same)  # q(z_t | z_t' = 0)
    num = prior_one * like_one
    return num / (num + (1 - prior_one) * like_zero)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    schedule=st.sampled_from(contract.SCHEDULES),
    T=st.integers(4, 200),
    K=st.integers(2, 16),
)
def test_posterior_matches_bayes_rule(seed, schedule, T, K):
    K = min(K, T)
    rng = np.random.default_rng(seed)
    tables = contract.step_tables(schedule, T, K)
    beta = contract.betas(schedule, T)
    z = rng.integers(0, 2, size=256).astype(np.float32)
    p0 = rng.uniform(0.001, 0.999, size=256).astype(np.float32)
    for i in range(K - 1):
        t, t_next = tables.timesteps[i], tables.timesteps[i + 1]
        got = contract.posterior(z, p0, tables.k_next[i], tables.b_next[i], tables.beta_prod[i])
        want = _bayes_posterior(z, p0.astype(np.float64), beta, t_next, t)
        # float32 tables: beta_prod's rounding is amplified by 1 / (1 - beta_prod), which is
        # large where the schedule keeps almost everything (a few float32 ulps, measured 2e-6)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_last_step_outputs_p0_and_guidance_zero_is_conditional():
    tables = contract.step_tables("linear", 32, 16)
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, size=(2, 8, 4)).astype(np.float32)
    logits = rng.normal(size=z.shape).astype(np.float32)
    p0 = contract.clean_probability(z, logits)
    np.testing.assert_array_equal(contract.step_probability(z, logits, tables, 15), p0)
    other = rng.normal(size=z.shape).astype(np.float32)
    np.testing.assert_array_equal(
        contract.mix_logits(logits, 0.7, 0.0, other), contract.mix_logits(logits, 0.7)
    )
    # Flip probability semantics: a confident "flip" turns a 1 into a likely 0.
    assert contract.clean_probability(np.ones(1), np.array([20.0]))[0] < 1e-6


def test_apply_mask_writes_known_bits_back():
    z = np.zeros((1, 4, 2), np.uint8)
    known = np.ones_like(z)
    mask = np.zeros_like(z)
    mask[0, 1] = 1
    contract.apply_mask(z, mask, known)
    assert z.sum() == 2 and z[0, 1].tolist() == [1, 1]
