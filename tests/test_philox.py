"""Philox4x32-10 and the cuRAND stream mapping of the sampling contract, section 2."""

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bld_runtime.errors import InvalidRequestError
from bld_runtime.philox import (
    BernoulliDrawer,
    bernoulli,
    philox4x32_10,
    random_words,
    seed_range,
    uniforms,
    words_to_uniforms,
)

M32 = 0xFFFFFFFF
u32 = st.integers(0, M32)
u64 = st.integers(0, 2**64 - 1)


def ref_philox(counter, key):
    """Scalar Philox4x32-10 in Python integers, written from Random123's description."""
    c, (k0, k1) = list(counter), key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M32, (p0 >> 32) ^ c[3] ^ k1, p0 & M32]
    return c


def ref_curand(seed, subsequence, offset, count):
    """cuRAND's state machine: curand_init(seed, subsequence, offset) then `count` curand() calls.

    The 128-bit counter is subsequence * 2^64 + offset // 4 and is incremented with carry.
    """
    key = (seed & M32, seed >> 32)
    ctr, pos, out = (subsequence << 64) + offset // 4, offset % 4, []
    while len(out) < count:
        words = ref_philox([(ctr >> (32 * i)) & M32 for i in range(4)], key)
        out.extend(words[pos:])
        ctr, pos = (ctr + 1) % 2**128, 0
    return out[:count]


def ref_uniform(word):
    """curand_uniform in exact rational arithmetic with float32 round-half-even."""

    def to_f32(x):  # x > 0; float32 has 24 significant bits
        exponent = x.numerator.bit_length() - x.denominator.bit_length()
        if Fraction(2) ** exponent > x:
            exponent -= 1
        ulp = Fraction(2) ** (exponent - 23)
        return round(x / ulp) * ulp  # round() on a Fraction rounds half to even

    return to_f32(to_f32(Fraction(word)) * Fraction(1, 2**32) + Fraction(1, 2**33))


@pytest.mark.parametrize(
    "counter, key, expected",
    [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([M32] * 4, [M32, M32], [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ],
)
def test_known_answers(counter, key, expected):
    out = philox4x32_10(np.array(counter, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert out.dtype == np.uint32 and out.tolist() == expected
    assert ref_philox(counter, key) == expected  # the test's own reference agrees too


def test_curand_reference_values():
    # curand() and curand_uniform() after curand_init(1337, 42, 0, &state) on a GPU, as
    # recorded in OpenMPCD's tests (DavidToneian/OpenMPCD, test/OpenMPCDTest/CUDA/Random/
    # Generators/Philox4x32_10.cu and Distributions/Uniform0e1i.cu).
    words = [
        3146701458,
        3726081436,
        3745301797,
        3148492510,
        1361546154,
        3356713841,
        465341286,
        836505607,
        3984407405,
        42409606,
    ]
    floats = [
        "0.732648551464080810546875",
        "0.86754596233367919921875",
        "0.872021019458770751953125",
        "0.733065545558929443359375",
        "0.3170096576213836669921875",
        "0.781545817852020263671875",
        "0.108345709741115570068359375",
        "0.19476413726806640625",
        "0.927692115306854248046875",
        "0.00987425632774829864501953125",
    ]
    assert random_words([1337], 42, 10).tolist() == [words]
    u = uniforms([1337], 42, 10)[0]
    assert [Fraction(float(x)) for x in u] == [Fraction(f) for f in floats]


@settings(max_examples=50, deadline=None)
@given(st.lists(u32, min_size=4, max_size=4), st.lists(u32, min_size=2, max_size=2))
def test_vectorised_equals_scalar_reference(counter, key):
    assert philox4x32_10(np.array(counter), np.array(key)).tolist() == ref_philox(counter, key)


def test_broadcasting_of_counter_and_key():
    counters = np.arange(24, dtype=np.uint32).reshape(3, 2, 4)
    keys = np.array([[1, 2], [3, 4]], dtype=np.uint32)  # broadcasts over the first axis
    out = philox4x32_10(counters, keys)
    assert out.shape == (3, 2, 4)
    for i in range(3):
        for j in range(2):
            assert out[i, j].tolist() == ref_philox(counters[i, j].tolist(), keys[j].tolist())


@settings(max_examples=25, deadline=None)
@given(seed=u64, subsequence=u64, n=st.integers(1, 13))
def test_stream_mapping_matches_curand_state_machine(seed, subsequence, n):
    # key = (seed lo, seed hi); counter words 2/3 = subsequence lo/hi; block j -> words 0/1
    assert random_words([seed], subsequence, n)[0].tolist() == ref_curand(seed, subsequence, 0, n)


def test_block_index_beyond_32_bits_goes_to_counter_word_1():
    # Elements 4j.. for j around 2^32 (16 GiB into a stream) are out of reach of random_words;
    # check the contract's counter layout against cuRAND's 128-bit counter with carry directly.
    seed, s = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    blocks = np.array([2**32 - 1, 2**32, 2**32 + 5, 2**63 + 7], dtype=np.uint64)
    counter = np.stack(
        [blocks & M32, blocks >> 32, np.full_like(blocks, s & M32), np.full_like(blocks, s >> 32)],
        axis=-1,
    )
    key = np.array([seed & M32, seed >> 32], dtype=np.uint64)
    out = philox4x32_10(counter, key)
    for j, words in zip(blocks.tolist(), out.tolist(), strict=True):
        assert words == ref_curand(seed, s, 4 * j, 4)
    low_only = counter[1].copy()
    low_only[1] = 0  # j = 2^32 with its high word dropped would collide with block 0
    assert out[1].tolist() != philox4x32_10(low_only, key).tolist()


def test_seed_split_and_subsequence_words():
    seed, s = 0xA4093822_299F31D0, 0x13198A2E_03707344
    words = random_words([seed], s, 8)[0]
    assert words[:4].tolist() == ref_philox([0, 0, s & M32, s >> 32], [seed & M32, seed >> 32])
    assert words[4:].tolist() == ref_philox([1, 0, s & M32, s >> 32], [seed & M32, seed >> 32])
    # the high halves matter: flipping only a high word changes the stream
    assert random_words([seed ^ (1 << 40)], s, 8)[0].tolist() != words.tolist()
    assert random_words([seed], s ^ (1 << 40), 8)[0].tolist() != words.tolist()


def test_uniform_edge_words_and_ties():
    words = np.array(
        [
            0,
            1,
            M32,
            0xFFFFFF80,
            0xFFFFFF7F,
            0x01000001,
            0x01000003,
            0x80000080,
            0x7FFFFFC0,
            12345678,
        ],
        dtype=np.uint32,
    )
    for dtype in (np.uint32, np.uint64):
        u = words_to_uniforms(words.astype(dtype))
        assert u.dtype == np.float32
        assert [Fraction(float(x)) for x in u] == [ref_uniform(int(w)) for w in words]
    u = words_to_uniforms(words)
    assert u[0] == np.float32(2.0**-33)  # word 0 -> smallest value, never 0
    assert u[2] == np.float32(1.0)  # word 0xffffffff rounds up to exactly 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(u32, min_size=1, max_size=20))
def test_uniform_formula_is_exact_float32(words):
    u = words_to_uniforms(np.array(words, dtype=np.uint64))
    assert [Fraction(float(x)) for x in u] == [ref_uniform(w) for w in words]


def test_uniforms_lie_in_half_open_unit_interval():
    u = uniforms(seed_range(0, 4), 3, 4096)
    assert u.dtype == np.float32 and u.shape == (4, 4096)
    assert (u > 0).all() and (u <= 1).all()
    assert abs(float(u.mean()) - 0.5) < 0.01


def test_seed_range_wraps_and_rejects_out_of_range():
    assert seed_range(2**64 - 2, 3).tolist() == [2**64 - 2, 2**64 - 1, 0]
    assert seed_range(5, 0).tolist() == []
    with pytest.raises(InvalidRequestError):
        seed_range(2**64, 1)
    with pytest.raises(InvalidRequestError):
        seed_range(-1, 1)
    with pytest.raises(InvalidRequestError):
        random_words([-1], 0, 4)
    with pytest.raises(InvalidRequestError):
        random_words([2**64], 0, 4)
    with pytest.raises(InvalidRequestError):
        random_words([0], 2**64, 4)
    top = 2**64 - 1  # key (0xffffffff, 0xffffffff); the next seed wraps to 0
    words = random_words(seed_range(top, 2), 9, 4)
    assert words.tolist() == [ref_curand(top, 9, 0, 4), ref_curand(0, 9, 0, 4)]


def test_batch_invariance_and_partial_batches():
    seeds = seed_range(1000, 5)
    batch = random_words(seeds, 7, 30)
    for i, seed in enumerate(seeds.tolist()):
        assert random_words([seed], 7, 30)[0].tolist() == batch[i].tolist()
    drawer = BernoulliDrawer(5, 30)  # a drawer sized for 5 also serves a last batch of 2
    assert drawer.words(seeds[3:], 7).tolist() == batch[3:].tolist()
    p = np.full((5, 30), 0.5, dtype=np.float32)
    bits = drawer.draw(p, seeds, 7)
    assert drawer.draw(p[3:], seeds[3:], 7).tolist() == bits[3:].tolist()


def test_n_not_a_multiple_of_four():
    seeds = seed_range(3, 2)
    assert random_words(seeds, 1, 10).tolist() == random_words(seeds, 1, 12)[:, :10].tolist()
    assert uniforms(seeds, 1, 7).tolist() == uniforms(seeds, 1, 8)[:, :7].tolist()
    p = np.random.default_rng(0).random((2, 5, 3), dtype=np.float32)
    bits = bernoulli(p, seeds, 1)
    assert bits.shape == (2, 5, 3) and bits.dtype == np.uint8
    assert bits.reshape(2, 15).tolist() == (uniforms(seeds, 1, 15) <= p.reshape(2, 15)).tolist()


def test_bernoulli_follows_flat_c_order_and_extremes():
    seeds = seed_range(11, 2)
    p = np.random.default_rng(1).random((2, 4, 4, 8), dtype=np.float32)
    u = uniforms(seeds, 2, 128).reshape(p.shape)  # element e = (h*W + w)*C + c
    assert bernoulli(p, seeds, 2).tolist() == (u <= p).astype(np.uint8).tolist()
    assert bernoulli(np.zeros((2, 64), np.float32), seeds, 2).sum() == 0  # u > 0 always
    assert bernoulli(np.ones((2, 64), np.float32), seeds, 2).min() == 1  # u <= 1 always
    quarter = bernoulli(np.full((2, 8192), 0.25, np.float32), seeds, 2)
    assert abs(float(quarter.mean()) - 0.25) < 0.02


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    n=st.integers(1, 40),
    base_seed=u64,
    subsequence=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_drawer_equals_functions_bit_for_bit(batch, n, base_seed, subsequence, data):
    seeds = seed_range(base_seed, batch)
    p = np.array(
        data.draw(st.lists(st.floats(0, 1, width=32), min_size=batch * n, max_size=batch * n)),
        dtype=np.float32,
    ).reshape(batch, n)
    drawer = BernoulliDrawer(batch, n)
    out = np.empty((batch, n), dtype=np.uint8)
    for _ in range(2):  # reusing the drawer must not leak state between calls
        assert drawer.draw(p, seeds, subsequence, out) is out
        assert out.tolist() == bernoulli(p, seeds, subsequence).tolist()
        assert out.tolist() == (uniforms(seeds, subsequence, n) <= p).astype(np.uint8).tolist()
        assert (
            drawer.words(seeds, subsequence).tolist()
            == random_words(seeds, subsequence, n).tolist()
        )


def test_drawer_step_allocates_no_buffers():
    batch, latent = 4, (256, 64)  # a 16x16x64 latent
    drawer = BernoulliDrawer(batch, latent[0] * latent[1])
    seeds = seed_range(0, batch)
    p = np.full((batch,) + latent, 0.5, dtype=np.float32)
    out = np.empty(p.shape, dtype=np.uint8)
    drawer.draw(p, seeds, 1, out)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for step in range(2, 5):
            drawer.draw(p, seeds, step, out)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # only small Python objects (views, scalars); one step's uniforms alone are 256 KiB
    assert peak < 16 * 1024


def test_drawer_rejects_mismatched_inputs():
    drawer = BernoulliDrawer(2, 8)
    seeds = seed_range(0, 2)
    with pytest.raises(ValueError, match="float32"):
        drawer.draw(np.zeros((2, 8)), seeds, 1)
    with pytest.raises(ValueError, match="8 elements"):
        drawer.draw(np.zeros((2, 9), np.float32), seeds, 1)
    with pytest.raises(ValueError, match="seeds"):
        drawer.draw(np.zeros((2, 8), np.float32), seeds[:1], 1)
    with pytest.raises(ValueError, match=r"1\.\.2 images"):
        drawer.words(seed_range(0, 3), 1)
    with pytest.raises(ValueError, match="out"):
        drawer.draw(np.zeros((2, 8), np.float32), seeds, 1, out=np.empty((2, 8), np.int64))


def test_a_span_of_subsequences_equals_one_at_a_time():
    drawer = BernoulliDrawer(batch=3, n=70, subsequences=5)
    seeds = np.array([0, 2**64 - 1, 12345], dtype=np.uint64)
    for b in (3, 2):  # a partial batch uses the first b images of every buffer
        span = drawer.uniforms_span(seeds[:b], 7, 4).copy()
        assert span.shape == (4, b, 70)
        for k in range(4):
            np.testing.assert_array_equal(span[k], uniforms(seeds[:b], 7 + k, 70))
    with pytest.raises(ValueError, match=r"1\.\.5 subsequences"):
        drawer.uniforms_span(seeds, 0, 6)
    with pytest.raises(InvalidRequestError, match="subsequence must be in"):
        drawer.uniforms_span(seeds, 2**64 - 2, 3)  # would run past the last subsequence
