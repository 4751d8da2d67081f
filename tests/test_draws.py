"""The compiled draws (bld_runtime._host, csrc/host.c) give numpy's bits (philox.py, the
reference): each draw on its own, at the ties of the contract's `u <= p`, and whole generations
of the host loop (plain, guided, inpainted, traced) with and without them."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bld_runtime import draws
from bld_runtime.philox import bernoulli, uniforms
from bld_runtime.pipeline import Pipeline

compiled = draws.compiled()
needs_compiled = pytest.mark.skipif(compiled is None, reason="bld_runtime._host is not built")


def test_the_installed_runtime_has_its_compiled_draws():
    """`pip install` builds them (setup.py) wherever a C compiler is, as on CI: a build that
    silently fell back to numpy would leave the rest of this file skipped."""
    assert compiled is not None, "bld_runtime._host was not built: reinstall with a C compiler"
    assert draws.implementation() == "compiled"


def test_BLD_DRAWS_numpy_turns_them_off(monkeypatch):
    monkeypatch.setenv(draws.ENV, "numpy")
    assert draws.compiled() is None and draws.implementation() == "numpy"


def _compiled_draw(p, seeds, subsequence, keep=None, known=None):
    bits = np.full(p.shape, 7.0, np.float32)  # every element must be written
    masked = keep is not None
    compiled.draw(
        p,
        seeds,
        subsequence,
        p.shape[1],
        bits,
        keep if masked else None,
        known.astype(np.float32) if masked else None,
    )
    return bits


@needs_compiled
@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    # across the 64-lane runs (256 elements), their tail blocks and a partial last block
    n=st.sampled_from([1, 3, 4, 5, 255, 256, 257, 515, 1024, 1029]),
    seed=st.integers(0, 2**64 - 1),
    subsequence=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_a_draw_equals_numpys(batch, n, seed, subsequence, data):
    seeds = np.array([(seed + i) % 2**64 for i in range(batch)], np.uint64)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p = rng.random((batch, n), dtype=np.float32)
    expected = bernoulli(p, seeds, subsequence)
    assert np.array_equal(_compiled_draw(p, seeds, subsequence), expected)


@needs_compiled
def test_a_draw_large_enough_to_run_without_the_gil_equals_numpys():
    seeds = np.array([1, 2, 3], np.uint64)
    p = np.random.default_rng(5).random((3, 30001), dtype=np.float32)  # 90,003 >= 2^16 elements
    assert np.array_equal(_compiled_draw(p, seeds, 7), bernoulli(p, seeds, 7))
    bits = np.zeros_like(p)
    compiled.threshold(p, 3, 30001, bits, None, None)
    assert np.array_equal(bits, p > np.float32(0.5))


@needs_compiled
@pytest.mark.parametrize("n", [260, 1029])
def test_every_element_at_its_tie_and_just_below(n):
    """p == u draws 1 and the float32 just below u draws 0, at every element: a `<` for `<=`,
    or a uniform off by one ulp anywhere (lanes, tail or partial block), fails."""
    seeds = np.array([3, 2**64 - 1], np.uint64)
    for subsequence in (1, 2**40 + 5):
        u = uniforms(seeds, subsequence, n)
        assert np.all(_compiled_draw(u, seeds, subsequence) == 1)
        below = np.nextafter(u, np.float32(0))
        assert np.all(_compiled_draw(below, seeds, subsequence) == 0)


@needs_compiled
def test_the_mask_writes_the_known_bits_back_and_threshold_is_p_above_half():
    rng = np.random.default_rng(0)
    seeds = np.array([11, 12], np.uint64)
    p = rng.random((2, 300), dtype=np.float32)
    keep = rng.random((2, 300)) < 0.3
    known = (rng.random((2, 300)) < 0.5).astype(np.uint8)
    drawn = bernoulli(p, seeds, 5)
    expected = np.where(keep, known, drawn)
    assert np.array_equal(_compiled_draw(p, seeds, 5, keep, known), expected)
    p[0, :3] = [0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.0]
    bits = np.zeros_like(p)
    compiled.threshold(p, 2, 300, bits, keep, known.astype(np.float32))
    assert np.array_equal(bits, np.where(keep, known, p > np.float32(0.5)))


@needs_compiled
def test_mismatched_buffers_are_refused():
    p = np.zeros((2, 8), np.float32)
    seeds = np.zeros(2, np.uint64)
    with pytest.raises(ValueError, match="buffer sizes"):
        compiled.draw(p, seeds, 1, 8, np.zeros((2, 7), np.float32), None, None)
    with pytest.raises(ValueError, match="buffer sizes"):
        compiled.draw(p, np.zeros(3, np.uint64), 1, 8, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(ValueError, match="go together"):
        compiled.draw(p, seeds, 1, 8, np.zeros((2, 8), np.float32), np.zeros((2, 8), bool), None)
    with pytest.raises(ValueError, match="uint64"):
        compiled.draw(p, np.zeros(3, np.uint8), 1, 8, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(ValueError, match="uint64"):  # the right size, the wrong type
        compiled.draw(p, np.zeros(2, np.float64), 1, 8, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(ValueError, match="float32"):
        compiled.draw(p.view(np.int32), seeds, 1, 8, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(ValueError, match="float32"):
        keep = np.zeros((2, 8), np.int8)
        compiled.draw(p, seeds, 1, 8, np.zeros((2, 8), np.float32), keep, p)
    with pytest.raises(BufferError):  # a read-only output
        compiled.draw(p, seeds, 1, 8, b"\0" * 64, None, None)
    with pytest.raises(ValueError, match="addressable"):  # 2 * 2^62 elements would wrap
        compiled.draw(p, seeds, 1, 2**62, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(ValueError, match="addressable"):
        compiled.threshold(p, 4, 2**62, np.zeros((2, 8), np.float32), None, None)
    with pytest.raises(OverflowError):
        compiled.draw(p, seeds, -1, 8, np.zeros((2, 8), np.float32), None, None)
    misaligned = np.frombuffer(bytes(65), np.float32, count=16, offset=1).reshape(2, 8)
    with pytest.raises(ValueError, match="aligned"):  # reading floats there is undefined in C
        compiled.draw(misaligned, seeds, 1, 8, np.zeros((2, 8), np.float32), None, None)


def _generations(bundle, monkeypatch, implementation):
    if implementation == "numpy":
        monkeypatch.setenv(draws.ENV, "numpy")
    else:
        monkeypatch.delenv(draws.ENV, raising=False)
    pipe = Pipeline.load(bundle)
    L, C = pipe.latent_shape
    rng = np.random.default_rng(4)
    mask = (rng.random((L, C)) < 0.3).astype(np.uint8)
    known = (rng.random((L, C)) < 0.5).astype(np.uint8)
    steps = []
    plain = pipe.generate(5, seeds=2**64 - 2, classes="all")
    guided = pipe.generate(3, seeds=9, classes=[0, 1, 1], guidance=[0, 1.5, 3])
    inpainted = pipe.generate(2, seeds=1, mask=mask, known_bits=known)
    traced = pipe.generate(2, seeds=5, trace=True, callback=lambda i, k, b: steps.append(b.copy()))
    trace = traced.trace
    assert trace is not None
    return [plain.bits, guided.bits, inpainted.bits, traced.bits, trace.states, trace.probs, *steps]


@needs_compiled
def test_generations_are_the_same_with_compiled_and_numpy_draws(tiny_bundle, monkeypatch):
    with_compiled = _generations(tiny_bundle, monkeypatch, "compiled")
    with_numpy = _generations(tiny_bundle, monkeypatch, "numpy")
    assert len(with_compiled) == len(with_numpy)
    for a, b in zip(with_compiled, with_numpy, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
