"""Philox4x32-10 and curand_uniform in torch, bit-identical to bld_runtime.philox.

The sampling contract's random numbers (docs/SAMPLING_CONTRACT.md, section 2) computed with
torch tensor ops, so a PyTorch sampler draws on its own device without a trip through numpy,
and torch.compile can fuse the whole generator into one kernel. Nothing here is a second
definition of the contract: tests/test_torch_sampler.py holds it to the contract's known
answers and to the numpy implementation (the runtime's), word for word and uniform for uniform.

Words live in int64 lanes (values < 2^32). The 32x32 -> 64-bit product of a Philox round would
overflow int64, so each multiplier is split into 16-bit halves: c * m_lo and c * m_hi are below
2^48, and the high and low words of c * m follow exactly from them.
"""

from __future__ import annotations

import numpy as np
import torch

from bld_runtime import philox

ROUNDS = philox.ROUNDS
_MASK32 = 0xFFFFFFFF
_TWO_POW_M32 = 2.0**-32
_TWO_POW_M33 = 2.0**-33


def _mulhilo(c: torch.Tensor, m_lo: torch.Tensor, m_hi: torch.Tensor):
    """(hi, lo) 32-bit words of c * m for c < 2^32 and m = m_hi * 2^16 + m_lo, without overflow."""
    low_part = c * m_lo  # < 2^48
    high_part = c * m_hi  # < 2^48; c * m = high_part * 2^16 + low_part
    lo = (((high_part & 0xFFFF) << 16) + low_part) & _MASK32
    hi = (high_part + (low_part >> 16)) >> 16
    return hi, lo


def _rounds(even: torch.Tensor, odd: torch.Tensor, key: torch.Tensor):
    """The 10 rounds on counter words even = (c0, c2), odd = (c1, c3) under key = (k0, k1), each
    stacked on dim 0 (the words that enter the multiplies, and those that are xored in).
    Returns the output words in the same layout."""
    device = even.device
    bump = torch.tensor(philox.KEY_INCREMENTS, device=device, dtype=torch.int64)
    m = torch.tensor(philox.MULTIPLIERS, device=device, dtype=torch.int64)
    shape = (2,) + (1,) * (even.dim() - 1)
    bump, m = bump.view(shape), m.view(shape)
    m_lo, m_hi = m & 0xFFFF, m >> 16
    for r in range(ROUNDS):
        if r:  # the key is bumped between rounds, not before the first
            key = (key + bump) & _MASK32
        hi, lo = _mulhilo(even, m_lo, m_hi)  # (M0 * c0, M1 * c2)
        # (c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))
        even = hi.flip(0) ^ odd ^ key
        odd = lo.flip(0)
    return even, odd


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The raw block function: int64 counters (..., 4) under int64 keys (..., 2), all words in
    [0, 2^32) -> int64 (..., 4). The leading shapes broadcast."""
    lanes = torch.broadcast_shapes(counter.shape[:-1], key.shape[:-1])
    counter, key = counter.expand(lanes + (4,)), key.expand(lanes + (2,))
    even = torch.stack([counter[..., 0], counter[..., 2]])
    odd = torch.stack([counter[..., 1], counter[..., 3]])
    even, odd = _rounds(even, odd, torch.stack([key[..., 0], key[..., 1]]))
    return torch.stack([even[0], odd[0], even[1], odd[1]], dim=-1)


def philox_words(seeds: torch.Tensor, first: int, count: int, blocks: int) -> torch.Tensor:
    """int64 (count, B, blocks, 4): the output words of every image's stream (curand_init(seed,
    subsequence, 0)) at subsequences first..first+count-1, blocks 0..blocks-1: counter
    (j, 0, s lo, s hi), key (seed lo, seed hi); word w of block j is element 4j + w's.

    seeds: int64 (B,) holding the bits of the uint64 seeds (see seeds_tensor).
    """
    if first < 0 or first + count > 2**63:
        raise ValueError(f"subsequences {first}..{first + count - 1} are outside [0, 2^63)")
    device = seeds.device
    sub = first + torch.arange(count, device=device, dtype=torch.int64).view(count, 1, 1)
    block = torch.arange(blocks, device=device, dtype=torch.int64).view(1, 1, blocks)
    shape = (count, seeds.shape[0], blocks)
    even = torch.stack([(block & _MASK32).expand(shape), (sub & _MASK32).expand(shape)])
    odd = torch.stack([(block >> 32).expand(shape), (sub >> 32).expand(shape)])
    key = torch.stack([seeds & _MASK32, (seeds >> 32) & _MASK32]).view(2, 1, -1, 1)
    even, odd = _rounds(even, odd, key)
    return torch.stack([even[0], odd[0], even[1], odd[1]], dim=-1)


def words_to_uniforms(words: torch.Tensor) -> torch.Tensor:
    """curand_uniform: u = f32(f32(word) * 2^-32 + 2^-33), in (0, 1]. The product is exact, so
    the only roundings are int -> float32 and the float32 addition (an FMA gives the same)."""
    return words.to(torch.float32) * _TWO_POW_M32 + _TWO_POW_M33


def uniforms(seeds: torch.Tensor, first: int, count: int, n: int) -> torch.Tensor:
    """float32 (count, B, n): curand_uniform of elements 0..n-1 of every image's stream at
    subsequences first..first+count-1 (the runtime's BernoulliDrawer.uniforms_span)."""
    blocks = -(-n // 4)
    words = philox_words(seeds, first, count, blocks)
    return words_to_uniforms(words).reshape(count, seeds.shape[0], blocks * 4)[:, :, :n]


def seeds_tensor(seeds, device=None) -> torch.Tensor:
    """uint64 seeds (validated by bld_runtime.philox.as_seeds) as an int64 tensor of their bits."""
    return torch.from_numpy(philox.as_seeds(seeds).view(np.int64).copy()).to(device)


__all__ = ["philox4x32_10", "philox_words", "words_to_uniforms", "uniforms", "seeds_tensor"]
