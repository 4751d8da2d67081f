"""The bench's PyTorch contender (bld_train.torch_sampler) gives the reference sampler's bits.

Its parts: Philox4x32-10 in torch (bld_train.philox_torch) against the contract's known answers
and the runtime's numpy implementation, word for word and uniform for uniform;
scaled_dot_product_attention against the explicit attention the graphs export; and whole
generations, eager and compiled, against ReferenceSampler on the tiny run (the run tiny_bundle
is exported from), under the ONNX parity test's rule: >= 95% of 64 images bit-identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bld_runtime import philox
from bld_runtime.images import from_float, nchw_to_nhwc
from bld_train import philox_torch
from bld_train.config import preset
from bld_train.denoiser import Denoiser, use_fused_attention

# The contract's known answers (docs/SAMPLING_CONTRACT.md, section 2): counter; key -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
SEEDS = np.array(
    [0, 1, 7, 2**32 - 1, 2**32, 2**63 + 5, 2**64 - 1, 123456789012345], dtype=np.uint64
)


def test_block_function_gives_the_known_answers():
    counters = torch.tensor([c for c, _, _ in KNOWN_ANSWERS])
    keys = torch.tensor([k for _, k, _ in KNOWN_ANSWERS])
    out = philox_torch.philox4x32_10(counters, keys)
    assert out.tolist() == [list(o) for _, _, o in KNOWN_ANSWERS]


@pytest.mark.parametrize(
    "first,count,n", [(0, 1, 512), (1, 15, 512), (3, 2, 37), (2**32 - 1, 3, 10), (2**40 + 7, 2, 4)]
)
def test_words_and_uniforms_equal_the_runtimes(first, count, n):
    seeds = philox_torch.seeds_tensor(SEEDS)
    blocks = -(-n // 4)
    words = philox_torch.philox_words(seeds, first, count, blocks).reshape(count, len(SEEDS), -1)
    got = philox_torch.uniforms(seeds, first, count, n).numpy()
    for k in range(count):
        want_words = philox.random_words(SEEDS, first + k, n)
        np.testing.assert_array_equal(words[k, :, :n].numpy(), want_words.astype(np.int64))
        want = philox.uniforms(SEEDS, first + k, n)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got[k].view(np.uint32), want.view(np.uint32))


def test_uniform_conversion_rounds_like_the_contract():
    """Words where float32 rounding matters: near 2^24 multiples, ties, the extremes."""
    words = np.array(
        [
            0,
            1,
            2**24 - 1,
            2**24,
            2**24 + 1,
            2**25 + 3,
            2**31 - 1,
            2**31 + 64,
            2**32 - 129,
            2**32 - 128,
            2**32 - 127,
            2**32 - 1,
        ],
        dtype=np.uint64,
    )
    got = philox_torch.words_to_uniforms(torch.from_numpy(words.astype(np.int64))).numpy()
    np.testing.assert_array_equal(
        got.view(np.uint32), philox.words_to_uniforms(words).view(np.uint32)
    )
    assert got.max() == 1.0 and got.min() > 0


def test_fused_attention_computes_the_explicit_attention():
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        preset("tiny").prior,
        width=64,
        heads=4,
        depth=2,
        layer_scale=True,
        learned_pos=True,
        time_features="rescaled",
    )
    model = Denoiser(cfg).eval()
    bits = torch.randint(0, 2, (6, cfg.latent_size**2, cfg.bits)).float()
    t, y = torch.tensor([0, 5, 31, 7, 2, 30]), torch.tensor([0, 1, 10, 3, 10, 9])
    with torch.no_grad():
        explicit = model(bits, t, y)
        fused = use_fused_attention(model)(bits, t, y)
        back = use_fused_attention(model, False)(bits, t, y)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert torch.equal(back, explicit)


# --- whole generations against the reference sampler --------------------------------------------


def _sampler(tiny_run, compile=False):
    from bld_train.checkpoint import load_autoencoder, load_prior
    from bld_train.torch_sampler import TorchSampler

    return TorchSampler(load_prior(tiny_run)[0], load_autoencoder(tiny_run), compile=compile)


def _reference_bits(tiny_run, seeds, classes, guidance, temperature):
    from bld_train.checkpoint import load_prior
    from bld_train.sampler import ReferenceSampler

    return ReferenceSampler(load_prior(tiny_run)[0]).sample(seeds, classes, guidance, temperature)


def _identical_images(bits, ref) -> int:
    return int((bits == ref).all(axis=(1, 2)).sum())


SEEDS64 = np.arange(1000, 1064, dtype=np.uint64)


@pytest.mark.parametrize("guidance,temperature", [(0.0, 1.0), (1.5, 0.8)])
def test_eager_sampler_gives_the_reference_bits(tiny_run, guidance, temperature):
    sampler = _sampler(tiny_run)
    classes = np.arange(64) % (sampler.cfg.num_classes + 1)  # every class and the null class
    ref = _reference_bits(tiny_run, SEEDS64, classes, guidance, temperature)
    bits = sampler.sample(SEEDS64, classes, guidance, temperature).numpy()
    same = _identical_images(bits, ref)
    print(f"\neager g={guidance}: {same}/64 images bit-identical to the reference")
    assert same >= 0.95 * 64
    # The same request again reuses the buffers and gives the same bits.
    np.testing.assert_array_equal(
        sampler.sample(SEEDS64, classes, guidance, temperature).numpy(), bits
    )
    # Images: the autoencoder's decoding of those bits, rounded as the runtime rounds.
    with torch.no_grad():
        want = from_float(
            nchw_to_nhwc(
                sampler.autoencoder.decode(torch.from_numpy(bits[:4]).float()).clamp(-1, 1).numpy()
            )
        )
    np.testing.assert_array_equal(
        sampler.generate(SEEDS64[:4], classes[:4], guidance, temperature), want
    )


def test_stage_clock_and_bits_of_a_batch_are_each_images_own(tiny_run):
    from bld_bench.core import StageClock

    sampler = _sampler(tiny_run)
    clock = StageClock(sampler.num_steps)
    bits = sampler.sample(SEEDS64[:5], [1, 2, 3, 4, 5], 0.0, 1.0, clock).numpy()
    alone = sampler.sample(SEEDS64[2:3], [3], 0.0, 1.0).numpy()
    np.testing.assert_array_equal(bits[2:3], alone)
    assert clock.initial > 0 and all(t > 0 for t in clock.model + clock.sampling)


@pytest.mark.slow
def test_compiled_sampler_gives_the_reference_bits(tiny_run):
    """torch.compile (Inductor, C++ on this CPU): one batch size, the guided step."""
    sampler = _sampler(tiny_run, compile=True)
    classes = np.arange(64) % (sampler.cfg.num_classes + 1)
    ref = _reference_bits(tiny_run, SEEDS64, classes, 1.5, 0.8)
    bits = sampler.sample(SEEDS64, classes, 1.5, 0.8).numpy()
    same = _identical_images(bits, ref)
    print(f"\ncompiled: {same}/64 images bit-identical to the reference")
    assert same >= 0.95 * 64
    # The compiled uniforms (one fused kernel) are the runtime's, bit for bit.
    u = sampler.uniforms(philox_torch.seeds_tensor(SEEDS64)).numpy()
    n = sampler.num_elements
    for k in (0, 1, sampler.num_steps - 1):
        np.testing.assert_array_equal(
            u[k].view(np.uint32), philox.uniforms(SEEDS64, k, n).view(np.uint32)
        )


def test_bf16_sampler_is_another_precision_of_the_same_model(tiny_run):
    """torch.autocast(bfloat16): `bld bench`'s torch:bf16 contender. Not the fp32 contract's
    bits, but the same model: most bits agree with fp32, and it is deterministic."""
    from bld_runtime.errors import InvalidRequestError
    from bld_train.checkpoint import load_autoencoder, load_prior
    from bld_train.torch_sampler import TorchSampler

    run = load_prior(tiny_run)[0], load_autoencoder(tiny_run)
    seeds, classes = SEEDS64[:16], np.arange(16) % 4
    fp32 = _sampler(tiny_run).sample(seeds, classes).numpy()
    bf16 = TorchSampler(*run, precision="bf16")
    bits = bf16.sample(seeds, classes).numpy()
    assert bits.dtype == np.uint8 and bits.shape == fp32.shape
    assert np.array_equal(bits, bf16.sample(seeds, classes).numpy())
    assert (bits == fp32).mean() > 0.99  # 0.99988 measured; unrelated bits would agree ~0.5
    with pytest.raises(InvalidRequestError, match="precision must be one of fp32, bf16"):
        TorchSampler(*run, precision="fp16")


def test_int8_sampler_is_pytorch_s_dynamic_int8_of_the_same_model(tiny_run):
    """quantize_dynamic on the denoiser's Linear layers: `bld bench`'s torch:int8 contender.
    Another precision: deterministic for one request, most bits as fp32's."""
    import torch

    from bld_train.checkpoint import load_autoencoder, load_prior
    from bld_train.torch_sampler import TorchSampler

    run = load_prior(tiny_run)[0], load_autoencoder(tiny_run)
    seeds, classes = SEEDS64[:16], np.arange(16) % 4
    fp32 = _sampler(tiny_run).sample(seeds, classes).numpy()
    int8 = TorchSampler(*run, precision="int8")
    linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(int8._step_modules[False].denoiser.blocks[0].mlp[0], linear)
    bits = int8.sample(seeds, classes).numpy()
    assert np.array_equal(bits, int8.sample(seeds, classes).numpy())
    assert (bits == fp32).mean() > 0.9  # unrelated bits would agree ~0.5
