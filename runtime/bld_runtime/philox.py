"""Philox4x32-10, bit-compatible with cuRAND, vectorised in numpy (sampling contract, section 2).

Every random bit of a sample comes from here. The stream of image `i` at denoising draw `s` is
cuRAND's `curand_init(seed_i, subsequence=s, offset=0)`: element `e` of the latent uses word
`e % 4` of the Philox block `j = e // 4`, whose counter is `(j lo, j hi, s lo, s hi)` and whose
key is `(seed lo, seed hi)`. So an image's bits never depend on the batch it was drawn in.

All words live in uint64 lanes (values < 2^32) so that the 32x32->64 bit multiply of a Philox
round is one plain numpy multiply; the high and low halves are then a shift and a mask.
`BernoulliDrawer` owns all scratch buffers, and the module-level functions are thin wrappers
around it, so there is exactly one implementation of the math.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .errors import InvalidRequestError

U64: TypeAlias = NDArray[np.uint64]
# What a request may give as seeds: one base seed, or one per image (request_seeds).
Seeds: TypeAlias = int | np.integer[Any] | Sequence[int | np.integer[Any]] | range | NDArray[Any]

ROUNDS = 10
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
KEY_INCREMENTS = (0x9E3779B9, 0xBB67AE85)

_MASK32 = 0xFFFFFFFF
_U64_MAX = 2**64 - 1
_TWO_POW_M32 = np.float32(2.0**-32)  # curand's CURAND_2POW32_INV
_TWO_POW_M33 = np.float32(2.0**-33)  # half of it: keeps u away from 0, so u is in (0, 1]


def _philox_rounds(state: U64, key: U64, prod: U64, hi: U64) -> None:
    """Run the 10 Philox rounds on `state` in place.

    state: uint64 (2, 2, *lanes) holding the counter words (< 2^32) as
      state[0] = (c0, c2), the words that enter the multiplies, and
      state[1] = (c1, c3), the words that are xored in;
      it becomes the output words in the same layout.
    key:   uint64 (2, *lanes), the key words (k0, k1) of every lane; bumped in place (scratch).
    prod, hi: uint64 (2, *lanes) scratch.
    One round: (c0, c1, c2, c3) -> (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)).
    Every operation below is on same-shaped contiguous arrays or with a Python scalar: that
    keeps numpy on its fast path, which needs no temporary buffers (broadcasting or reversed
    views would make it allocate some on each call).
    """
    even, odd = state[0], state[1]
    k0, k1 = key[0, ...], key[1, ...]  # `[i, ...]` keeps 0-d lanes arrays, never scalars
    c0, c2 = even[0, ...], even[1, ...]
    swapped_prod = prod[0, ...], prod[1, ...]
    for r in range(ROUNDS):
        if r:  # the key is bumped between rounds, not before the first
            np.add(k0, KEY_INCREMENTS[0], out=k0)
            np.add(k1, KEY_INCREMENTS[1], out=k1)
            np.bitwise_and(key, _MASK32, out=key)
        np.multiply(c2, MULTIPLIERS[1], out=swapped_prod[0])  # M1*c2, exact in 64 bits
        np.multiply(c0, MULTIPLIERS[0], out=swapped_prod[1])  # M0*c0
        np.right_shift(prod, 32, out=hi)  # (hi1, hi0)
        np.bitwise_xor(hi, odd, out=even)  # (hi1 ^ c1, hi0 ^ c3)
        np.bitwise_xor(even, key, out=even)  # ... ^ (k0, k1)
        np.bitwise_and(prod, _MASK32, out=odd)  # (lo1, lo0)


def _words_last(state: U64) -> U64:
    """View (2, 2, *lanes) state as (*lanes, 2, 2) whose flattened last axes are words 0..3."""
    # word w sits at state[w % 2, w // 2]; moving (pair, parity) last orders them w = 2*pair+parity
    return np.moveaxis(state, (1, 0), (-2, -1))


def _as_u32_words(values: npt.ArrayLike, name: str, width: int) -> NDArray[np.integer[Any]]:
    a = np.asarray(values)
    if a.ndim == 0 or a.shape[-1] != width:
        raise ValueError(f"{name} must have shape (..., {width}), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > _MASK32)):
        raise ValueError(f"{name} must hold unsigned 32-bit integers")
    return a


def philox4x32_10(counter: npt.ArrayLike, key: npt.ArrayLike) -> NDArray[np.uint32]:
    """Philox4x32-10 of uint32 counters (..., 4) under uint32 keys (..., 2) -> uint32 (..., 4).

    The leading shapes broadcast. This is the raw block function of Random123 / cuRAND.
    """
    counters = _as_u32_words(counter, "counter", 4)
    key_words = _as_u32_words(key, "key", 2)
    lanes = np.broadcast_shapes(counters.shape[:-1], key_words.shape[:-1])
    state = np.empty((2, 2, *lanes), dtype=np.uint64)
    words = np.broadcast_to(counters, (*lanes, 4)).reshape((*lanes, 2, 2))
    np.copyto(_words_last(state), words, casting="unsafe")  # range checked above
    keys = np.moveaxis(np.broadcast_to(key_words, (*lanes, 2)), -1, 0).astype(np.uint64)  # a copy
    scratch = np.empty((2, *lanes), dtype=np.uint64)
    _philox_rounds(state, keys, scratch, np.empty_like(scratch))
    return _words_last(state).reshape((*lanes, 4)).astype(np.uint32)


def words_to_uniforms(
    words: NDArray[np.uint32] | U64, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """curand_uniform: u = f32(f32(word) * 2^-32 + 2^-33), in (0, 1].

    The product with 2^-32 is exact, so the only roundings are word -> float32 and the
    addition, both round-to-nearest in IEEE float32 (a fused multiply-add gives the same).
    `words` may be uint32 or uint64 (values < 2^32); `out` a float32 array of its shape.
    """
    if out is None:
        out = np.empty(np.shape(words), dtype=np.float32)
    np.copyto(out, words, casting="unsafe")  # integer -> float32, rounded to nearest
    np.multiply(out, _TWO_POW_M32, out=out)
    np.add(out, _TWO_POW_M33, out=out)
    return out


SEED_RULE = "an integer in [0, 2^64)"


def as_seed(value: object) -> int:
    """One seed: a Python or numpy integer in [0, 2^64). The one check of a seed's value in
    the project; refuses everything else."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"seed must be {SEED_RULE}, got {value!r}")
    seed = int(value)
    if not 0 <= seed <= _U64_MAX:
        raise InvalidRequestError(f"seed must be {SEED_RULE}, got {seed}")
    return seed


def as_seeds(seeds: object) -> U64:
    """Seeds as a 1-D uint64 array (one per image) from an integer array of any dtype or a
    sequence of integers; every value must be in [0, 2^64).

    A list is read element by element, never through numpy's type guessing: numpy turns
    [0, 2**63 + 5, 2**64 - 1] into float64 and rounds the seeds.
    """
    if isinstance(seeds, np.ndarray):
        if seeds.ndim != 1:
            raise InvalidRequestError(f"seeds must be one-dimensional, got shape {seeds.shape}")
        if seeds.dtype == np.uint64:
            return seeds
        if seeds.dtype.kind not in "uiO":
            raise InvalidRequestError(f"seeds must be integers, got an array of {seeds.dtype}")
        values = seeds.tolist()
    elif isinstance(seeds, (list, tuple, range)):
        values = list(seeds)
    else:
        raise InvalidRequestError(f"seeds must be a sequence of integers, got {seeds!r}")
    out = np.empty(len(values), np.uint64)
    for i, value in enumerate(values):
        out[i] = as_seed(value)
    return out


def request_seeds(seeds: Seeds | None, n: object = None) -> U64:
    """The per-image seeds of a request: `seeds` is a base seed (an integer; the images get
    seed, seed + 1, ... mod 2^64, `n` of them, default 1) or one seed per image (`n`, if given,
    must match). None means base seed 0."""
    count = None if n is None else check_count(n)
    if seeds is None:
        seeds = 0
    if isinstance(seeds, np.ndarray) and seeds.ndim == 0:
        seeds = seeds.item()
    if not isinstance(seeds, (list, tuple, range, np.ndarray)):  # one base seed
        return seed_range(as_seed(seeds), 1 if count is None else count)
    arr = as_seeds(seeds)
    if count is not None and len(arr) != count:
        raise InvalidRequestError(f"got {len(arr)} seeds for n={count} images")
    if len(arr) == 0:
        raise InvalidRequestError("batch size must be at least 1, got 0 seeds")
    return arr


def check_count(n: object) -> int:
    """The number of images of a request: an integer >= 1."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise InvalidRequestError(f"n must be an integer, got {n!r}")
    if n < 1:
        raise InvalidRequestError(f"batch size must be at least 1, got {n}")
    return int(n)


def seed_range(base_seed: object, count: SupportsIndex) -> U64:
    """The seeds of `count` images requested from `base_seed`: base, base+1, ... (mod 2^64)."""
    base, size = as_seed(base_seed), operator.index(count)
    if size < 0:
        raise InvalidRequestError(f"count must be >= 0, got {size}")
    return np.uint64(base) + np.arange(size, dtype=np.uint64)  # uint64 arrays wrap


def _as_subsequence(subsequence: SupportsIndex) -> int:
    s = operator.index(subsequence)
    if not 0 <= s <= _U64_MAX:
        raise InvalidRequestError(f"subsequence must be in [0, 2^64), got {s}")
    return s


class BernoulliDrawer:
    """Draws Bernoulli bits for up to `batch` images of `n` elements without allocating.

    All buffers are made once here; the calls only write into them. A call may use fewer images
    than `batch` (the last, partial batch). With `subsequences` > 1, `uniforms_span` computes
    that many consecutive subsequences in one vectorised pass: numpy's per-call cost is paid
    once instead of once per subsequence, which is most of the work for small latents.
    """

    def __init__(self, batch: SupportsIndex, n: SupportsIndex, subsequences: SupportsIndex = 1):
        size, elements = operator.index(batch), operator.index(n)
        span = operator.index(subsequences)
        if size < 1 or elements < 1 or span < 1:
            raise ValueError(
                f"batch, n and subsequences must be >= 1, got batch={size}, "
                f"n={elements}, subsequences={span}"
            )
        self.batch, self.n, self.span = size, elements, span
        self.blocks = -(-elements // 4)  # Philox blocks per image; the last one's tail is unused
        block = np.arange(self.blocks, dtype=np.uint64)
        self._block_lo = block & _MASK32  # counter words 0 and 1: the block index j
        self._block_hi = block >> 32
        lanes = (span, size, self.blocks)
        self._state: U64 = np.empty((2, 2, *lanes), dtype=np.uint64)
        # (seed lo, hi) per image, then for every block
        self._seed_key: U64 = np.empty((2, 1, size, 1), dtype=np.uint64)
        self._key: U64 = np.empty((2, *lanes), dtype=np.uint64)
        self._prod: U64 = np.empty((2, *lanes), dtype=np.uint64)
        self._hi: U64 = np.empty_like(self._prod)
        self._u: NDArray[np.float32] = np.empty((*lanes, 2, 2), dtype=np.float32)  # word order

    def _generate(self, seeds: object, first: SupportsIndex, count: int) -> tuple[int, U64]:
        """Fill the state with the words of `seeds` at subsequences first..first+count-1.

        Returns (b, state view (2, 2, count, b, blocks)). Element e = 4j + w of image i at
        subsequence first + k is word w of block j, i.e. state[w % 2, w // 2, k, i, j].
        """
        seed_array, start = as_seeds(seeds), _as_subsequence(first)
        b = len(seed_array)
        if not 1 <= b <= self.batch:
            raise ValueError(f"this drawer serves 1..{self.batch} images, got {b} seeds")
        if not 1 <= count <= self.span:
            raise ValueError(f"this drawer serves 1..{self.span} subsequences, got {count}")
        _as_subsequence(start + count - 1)
        state, key = self._state[:, :, :count, :b], self._key[:, :count, :b]
        seed_key = self._seed_key[:, :, :b]
        np.copyto(state[0, 0], self._block_lo)  # counter word 0
        np.copyto(state[1, 0], self._block_hi)  # counter word 1
        for k in range(count):
            state[0, 1, k].fill((start + k) & _MASK32)  # counter word 2
            state[1, 1, k].fill((start + k) >> 32)  # counter word 3
        np.bitwise_and(seed_array, _MASK32, out=seed_key[0, 0, :, 0])  # key word 0: seed lo
        np.right_shift(seed_array, 32, out=seed_key[1, 0, :, 0])  # key word 1: seed hi
        np.copyto(key, seed_key)
        _philox_rounds(state, key, self._prod[:, :count, :b], self._hi[:, :count, :b])
        return b, state

    def words(self, seeds: object, subsequence: SupportsIndex) -> NDArray[np.uint32]:
        """uint32 (b, n): the raw words of elements 0..n-1 of each image's stream (a new array)."""
        b, state = self._generate(seeds, subsequence, 1)
        return _words_last(state[:, :, 0]).reshape(b, -1)[:, : self.n].astype(np.uint32)

    def uniforms_span(self, seeds: object, first: SupportsIndex, count: int) -> NDArray[np.float32]:
        """float32 (count, b, n): curand_uniform values of subsequences first..first+count-1.

        A view of scratch, overwritten by the next call.
        """
        b, state = self._generate(seeds, first, count)
        u = self._u[:count, :b]
        words_to_uniforms(_words_last(state), out=u)
        return u.reshape(count, b, self.blocks * 4)[:, :, : self.n]

    def uniforms(self, seeds: object, subsequence: SupportsIndex) -> NDArray[np.float32]:
        """float32 (b, n) curand_uniform values; a view of scratch, overwritten by the next call."""
        span: NDArray[np.float32] = self.uniforms_span(seeds, subsequence, 1)[0]
        return span

    def draw(
        self,
        p: NDArray[np.float32],
        seeds: NDArray[np.uint64] | Sequence[int],
        subsequence: SupportsIndex,
        out: NDArray[np.uint8] | None = None,
    ) -> NDArray[np.uint8]:
        """Bits uint8 shaped like p (b, ...): 1 where u <= p. p must be float32, n per image."""
        if p.dtype != np.float32:
            raise ValueError(f"p must be float32 (the contract compares in float32), got {p.dtype}")
        b = p.shape[0] if p.ndim else 0
        if p.ndim < 1 or p[0].size != self.n:
            raise ValueError(f"p must have shape (batch, ...) with {self.n} elements per image")
        if b != len(seeds):
            raise ValueError(f"p has {b} images but {len(seeds)} seeds were given")
        if out is None:
            out = np.empty(p.shape, dtype=np.uint8)
        elif out.shape != p.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous uint8 array shaped like p")
        u = self.uniforms(seeds, subsequence)
        np.less_equal(u, p.reshape(b, self.n), out=out.reshape(b, self.n).view(np.bool_))
        return out


def random_words(seeds: object, subsequence: SupportsIndex, n: SupportsIndex) -> NDArray[np.uint32]:
    """uint32 (B, n): words of elements 0..n-1 of curand_init(seed, subsequence, 0), per seed."""
    seed_array = as_seeds(seeds)
    return BernoulliDrawer(max(len(seed_array), 1), n).words(seed_array, subsequence)


def uniforms(seeds: object, subsequence: SupportsIndex, n: SupportsIndex) -> NDArray[np.float32]:
    """float32 (B, n): curand_uniform of elements 0..n-1 of each seed's stream."""
    seed_array = as_seeds(seeds)
    return BernoulliDrawer(max(len(seed_array), 1), n).uniforms(seed_array, subsequence).copy()


def bernoulli(
    p: npt.ArrayLike,
    seeds: NDArray[np.uint64] | Sequence[int],
    subsequence: SupportsIndex,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """uint8 bits shaped like p (B, ...): bit = u <= p over each image's flat C-order index."""
    probs = np.asarray(p, dtype=np.float32)
    if probs.ndim < 1 or probs.shape[0] < 1:
        raise ValueError(f"p must have shape (batch, ...) with batch >= 1, got {probs.shape}")
    return BernoulliDrawer(probs.shape[0], probs[0].size).draw(probs, seeds, subsequence, out=out)
