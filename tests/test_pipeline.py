"""The runtime's K-step loop (bld_runtime.pipeline) against the contract and the reference.

Parity: the PyTorch ReferenceSampler on tiny_run's prior and the runtime on tiny_bundle (the
same run exported) agree on every step's probabilities and on the bits. Invariance: an image's
bits depend only on its seed and conditioning (batch, position, chunking, threads, process).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest

from bld_runtime import philox
from bld_runtime.backends import BackendOptions
from bld_runtime.errors import (
    BackendUnavailableError,
    CancelledError,
    CodeNotSettledWarning,
    InvalidRequestError,
    ManifestError,
)
from bld_runtime.images import from_float, load_png, make_grid, save_png, to_float
from bld_runtime.pipeline import Pipeline, settle_orbits
from bld_runtime.request import RequestChunk


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


@pytest.fixture(scope="module")
def reference(tiny_run):
    torch = pytest.importorskip("torch")
    from bld_train.checkpoint import load_prior
    from bld_train.sampler import ReferenceSampler

    torch.manual_seed(0)
    denoiser, _ = load_prior(tiny_run)
    return ReferenceSampler(denoiser)


def _loop_with_teacher(pipe, states, seeds, classes, guidance, temperature):
    """Drive the backend's own loop, feeding the reference's state to every step.

    Returns (probs, drawn): what each step returned and the bits the loop drew from them.
    """
    with pipe.backend.loop(len(seeds)) as loop:
        return _drive(loop, states, seeds, classes, guidance, temperature)


def _drive(loop, states, seeds, classes, guidance, temperature):
    K, n = len(states), len(seeds)
    loop.start(
        RequestChunk(
            seeds=seeds,
            classes=classes,
            temperature=np.full(n, temperature, np.float32),
            guidance=np.full(n, guidance, np.float32),
            guided=guidance > 0,
        )
    )
    probs = np.empty(states.shape, np.float32)
    drawn = np.empty(states.shape, np.uint8)
    for i in range(K):
        loop.set_bits(states[i])
        loop.run_step(i)
        loop.read_probs(probs[i])
        loop.advance(i)
        loop.read_bits(drawn[i])
    return probs, drawn


@pytest.mark.parametrize("guidance,temperature", [(0.0, 1.0), (1.5, 0.8)])
def test_parity_with_the_reference_sampler(pipe, reference, guidance, temperature):
    from bld_train.sampler import Trace

    seeds = np.arange(1000, 1064, dtype=np.uint64)
    classes = np.arange(64) % (pipe.num_classes + 1)  # every class and the null class
    trace = Trace()
    ref_bits = reference.sample(seeds, classes, guidance, temperature, trace=trace)
    states = np.stack(trace.states)
    ref_probs = np.stack(trace.probs)

    # Teacher forcing: the same input state at every step.
    probs, drawn = _loop_with_teacher(pipe, states, seeds, classes, guidance, temperature)
    max_dp = float(np.abs(probs - ref_probs).max())
    ref_next = np.concatenate([states[1:], ref_bits[None]])  # what each step should produce
    same_draws = float((drawn == ref_next).mean())

    # Free running: only the seeds in common.
    out = pipe.generate(seeds=seeds, classes=classes, guidance=guidance, temperature=temperature)
    same_images = int((out.bits == ref_bits).all(axis=(1, 2)).sum())
    print(
        f"\nparity g={guidance} T={temperature}: max |dp| {max_dp:.2e} under teacher forcing, "
        f"{same_draws:.4%} of {drawn.size} draws identical, final bits identical for "
        f"{same_images}/64 seeds free-running"
    )
    assert max_dp <= 1e-5
    assert same_draws >= 0.9999
    assert same_images >= 0.95 * 64


def test_generate_trace_follows_the_contract(pipe):
    seeds = np.arange(7, 11, dtype=np.uint64)
    out = pipe.generate(seeds=seeds, classes=[0, 1, 2, pipe.null_class], trace=True)
    K = pipe.num_steps
    assert out.trace.states.shape == (K, 4) + pipe.latent_shape
    # Initial state: Philox subsequence 0 at p = 0.5.
    half = np.full((4,) + pipe.latent_shape, 0.5, np.float32)
    np.testing.assert_array_equal(out.trace.states[0], philox.bernoulli(half, seeds, 0))
    # Step i < K-1 draws with subsequence i + 1 from its probabilities; the last thresholds.
    for i in range(K - 1):
        np.testing.assert_array_equal(
            out.trace.states[i + 1], philox.bernoulli(out.trace.probs[i], seeds, i + 1)
        )
    np.testing.assert_array_equal(out.bits, (out.trace.probs[-1] > 0.5).astype(np.uint8))
    assert out.images.shape == (4,) + pipe.image_shape and out.images.dtype == np.uint8
    np.testing.assert_array_equal(out.images, pipe.decode(out.bits))


def test_masked_bits_are_kept_after_the_initial_state_and_every_step(pipe):
    rng = np.random.default_rng(0)
    L, C = pipe.latent_shape
    known = rng.integers(0, 2, size=(3, L, C), dtype=np.uint8)
    mask = np.zeros((L, C), np.uint8)
    mask[: L // 2] = 1  # first half of the tokens known
    out = pipe.generate(n=3, seeds=5, mask=mask, known_bits=known, trace=True)
    keep = np.broadcast_to(mask, known.shape).astype(bool)
    for z in list(out.trace.states) + [out.bits]:
        np.testing.assert_array_equal(z[keep], known[keep])
    assert not np.array_equal(out.bits[~keep], known[~keep])  # the rest was regenerated


def test_batch_invariance_at_every_position(pipe):
    seeds = np.arange(100, 108, dtype=np.uint64)
    classes = np.arange(8) % pipe.num_classes
    alone = [
        pipe.generate(seeds=seeds[i : i + 1], classes=classes[i : i + 1], guidance=1.0).bits[0]
        for i in range(8)
    ]
    for shift in range(8):  # seed i sits at position (i + shift) % 8
        order = np.roll(np.arange(8), shift)
        batch = pipe.generate(seeds=seeds[order], classes=classes[order], guidance=1.0).bits
        for pos, i in enumerate(order):
            np.testing.assert_array_equal(batch[pos], alone[i])
    assert not np.array_equal(alone[0], alone[1])


def test_chunked_batches_equal_single_batches(tiny_bundle):
    whole = Pipeline.load(tiny_bundle).generate(n=7, seeds=40, classes=3, guidance=0.5)
    chunked = Pipeline.load(tiny_bundle)
    chunked.max_batch = 3  # 3 + 3 + 1
    out = chunked.generate(n=7, seeds=40, classes=3, guidance=0.5)
    np.testing.assert_array_equal(out.bits, whole.bits)
    np.testing.assert_array_equal(out.images, whole.images)
    with pytest.raises(InvalidRequestError, match="above this bundle's max_batch of 3"):
        chunked.generate(n=7, seeds=40, chunk=False)


def test_thread_count_does_not_change_the_bits(tiny_bundle):
    settings = [(1, True), (2, True), (2, False)]  # (threads, park threads after each call)
    bits = [
        Pipeline.load(tiny_bundle, options=BackendOptions(intra_op_threads=t, stop_spinning=stop))
        .generate(n=8, seeds=3, classes=np.arange(8), guidance=2.0)
        .bits
        for t, stop in settings
    ]
    for other in bits[1:]:
        np.testing.assert_array_equal(bits[0], other)


def test_another_process_produces_the_same_bits(pipe, tiny_bundle, tmp_path, subprocess_env):
    out_file = tmp_path / "bits.npy"
    code = textwrap.dedent(f"""
        import numpy as np
        from bld_runtime.pipeline import Pipeline
        out = Pipeline.load({str(tiny_bundle)!r}).generate(n=6, seeds=2**64 - 3, classes=4,
                                                           guidance=1.0, temperature=0.9)
        np.save({str(out_file)!r}, out.bits)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env, timeout=120)
    here = pipe.generate(n=6, seeds=2**64 - 3, classes=4, guidance=1.0, temperature=0.9)
    np.testing.assert_array_equal(np.load(out_file), here.bits)
    np.testing.assert_array_equal(here.seeds, [2**64 - 3, 2**64 - 2, 2**64 - 1, 0, 1, 2])


def test_steps_after_the_first_allocate_nothing(pipe):
    """The loop's arrays are made once per batch size: steps 2..K allocate (almost) nothing.

    tracemalloc sees numpy's array buffers (numpy reports them) but not onnxruntime's own
    allocator, which is what "nothing beyond onnxruntime's own" means.
    """
    n = pipe.max_batch
    one_state = n * int(np.prod(pipe.latent_shape))  # bytes of one uint8 (N, L, C) array
    window = {}

    def callback(step, num_steps, bits):
        if step == 1:
            tracemalloc.reset_peak()
            window["base"] = tracemalloc.get_traced_memory()[0]
        elif step == num_steps:
            window["peak"] = tracemalloc.get_traced_memory()[1] - window["base"]

    pipe.generate(n=n, seeds=0, guidance=1.0, callback=lambda *a: None)  # bind this size first
    tracemalloc.start()
    try:
        pipe.generate(n=n, seeds=0, guidance=1.0, callback=callback)
        # The same window around one deliberate state-sized allocation: the probe can see it.
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        probe = np.ones(one_state, np.uint8)
        probe_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    print(
        f"\nsteps 2..{pipe.num_steps} of a batch of {n}: peak {window['peak']} bytes traced "
        f"(one uint8 state is {one_state} bytes)"
    )
    assert probe_peak >= one_state and probe.sum() == one_state
    assert window["peak"] < min(16384, one_state // 2)


def test_callback_sees_every_step_and_can_cancel(pipe):
    seen = []
    pipe.generate(n=2, seeds=1, callback=lambda step, K, bits: seen.append((step, K, bits.shape)))
    K = pipe.num_steps
    assert seen == [(i, K, (2,) + pipe.latent_shape) for i in range(1, K + 1)]

    with pytest.raises(CancelledError, match="after step 3 of"):
        pipe.generate(n=2, seeds=1, callback=lambda step, K, bits: step < 3)

    def stop(step, K, bits):
        raise CancelledError("stopped by the user")

    with pytest.raises(CancelledError, match="stopped by the user"):
        pipe.generate(n=2, seeds=1, callback=stop)


def test_loops_that_run_all_steps_at_once_unless_the_steps_are_asked_for(pipe):
    """The native TensorRT loop replays the K steps as one CUDA graph (Loop.run_all). The
    pipeline's side of it: run_all only without trace or teacher states, the callback once per
    chunk with step = K, the same bits. A CPU loop whose run_all runs its own K steps stands in
    for the device loop (the real one needs a GPU: benchmarks/gpu_check.sh runs it)."""
    from bld_runtime.backends.cpu import CpuBackend, CpuLoop

    class AllAtOnceLoop(CpuLoop):
        runs = 0

        def run_all(self):
            AllAtOnceLoop.runs += 1
            for i in range(self.num_steps):
                self.run_step(i)
                self.advance(i)
            return True

    class AllAtOnceBackend(CpuBackend):
        def _make_loop(self, batch):
            return AllAtOnceLoop(self, batch)

    fused = Pipeline(pipe.bundle, AllAtOnceBackend(pipe.bundle), "fp32")
    K, shape = pipe.num_steps, (3,) + pipe.latent_shape
    request = dict(n=3, seeds=5, classes=[1, 2, 3], guidance=1.0)
    seen = []
    out = fused.generate(
        **request, callback=lambda step, k, bits: seen.append((step, k, bits.shape))
    )
    assert AllAtOnceLoop.runs == 1 and seen == [(K, K, shape)]
    np.testing.assert_array_equal(out.bits, pipe.generate(**request).bits)
    with pytest.raises(CancelledError, match=f"after step {K} of {K}"):
        fused.generate(**request, callback=lambda step, k, bits: False)
    traced = fused.generate(**request, trace=True)  # the steps are asked for: step by step
    teacher = fused.generate(**request, teacher_states=traced.trace.states)
    assert AllAtOnceLoop.runs == 2
    np.testing.assert_array_equal(traced.bits, out.bits)
    np.testing.assert_array_equal(teacher.bits, out.bits)


def test_encode_deterministic_and_seeded(pipe):
    images = pipe.generate(n=5, seeds=11).images
    probs = pipe.encode_probs(images)
    threshold = (probs > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pipe.encode(images), threshold)  # the paper's code
    with warnings.catch_warnings():  # the tiny autoencoder does not settle every latent
        warnings.simplefilter("ignore", CodeNotSettledWarning)
        np.testing.assert_array_equal(
            pipe.encode(images, canonical=True), pipe.settle(threshold)[0]
        )
    seeded = pipe.encode(images, seed=77)
    np.testing.assert_array_equal(seeded, philox.bernoulli(probs, philox.seed_range(77, 5), 0))
    np.testing.assert_array_equal(pipe.encode(images, seed=[77, 78, 79, 80, 81]), seeded)
    with pytest.raises(InvalidRequestError, match="takes no seed"):
        pipe.encode(images, seed=1, canonical=True)
    for rounds in (-1, 1.5, True):
        with pytest.raises(InvalidRequestError, match="rounds must be"):
            pipe.encode(images, canonical=True, rounds=rounds)


def test_default_encoding_makes_one_encoder_call_per_chunk(tiny_bundle, monkeypatch):
    pipe = Pipeline.load(tiny_bundle)
    calls = {"encode": 0, "decode": 0}
    for method in calls:
        original = getattr(pipe.backend, method)

        def counted(x, original=original, method=method):
            calls[method] += 1
            return original(x)

        monkeypatch.setattr(pipe.backend, method, counted)
    H, W, ch = pipe.image_shape
    images = np.random.default_rng(0).integers(
        0, 256, (2 * pipe.max_batch + 1, H, W, ch), dtype=np.uint8
    )
    bits = pipe.encode(images)
    assert calls == {"encode": 3, "decode": 0}
    np.testing.assert_array_equal(bits, (pipe.encode_probs(images) > 0.5).astype(np.uint8))


def _images_to_encode(pipe):
    """Samples of every class, noise, a blank and a full image."""
    H, W, ch = pipe.image_shape
    noise = np.random.default_rng(0).integers(0, 256, (4, H, W, ch), dtype=np.uint8)
    flat = np.stack([np.zeros((H, W, ch), np.uint8), np.full((H, W, ch), 255, np.uint8)])
    samples = pipe.generate(n=20, seeds=0, classes=np.arange(20) % 10).images
    return np.concatenate([samples, noise, flat])


def test_encode_decode_encode_is_a_fixed_point(pipe):
    """Exact for every latent whose orbit settles; on a trained autoencoder that is all of them
    (`bld evaluate` reports the share), on the barely trained tiny one most."""
    images = _images_to_encode(pipe)
    raw = pipe.encode(images)
    raw_kept = (pipe.encode(pipe.decode(raw)) == raw).all(axis=(1, 2))
    codes, settled = pipe.settle(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CodeNotSettledWarning)
        np.testing.assert_array_equal(pipe.encode(images, canonical=True), codes)
        again = pipe.encode(pipe.decode(codes), canonical=True)
        third = pipe.encode(pipe.decode(again), canonical=True)
    print(
        f"\ntiny bundle: the p > 0.5 code is a fixed point for {int(raw_kept.sum())}/{len(raw)} "
        f"latents, the canonical code settles for {int(settled.sum())}/{len(raw)}"
    )
    assert settled.mean() >= 0.5
    np.testing.assert_array_equal(again[settled], codes[settled])
    np.testing.assert_array_equal(third[settled], codes[settled])
    # Settling is per latent: batch composition changes nothing.
    alone = pipe.settle(raw[settled][:3])[0]
    np.testing.assert_array_equal(alone, codes[settled][:3])


def test_canonical_is_the_smallest_code_of_a_cycle(pipe):
    codes, settled = pipe.settle(pipe.encode(_images_to_encode(pipe)))
    for code in codes[settled][:4]:  # walk each cycle: its members all map back to `code`
        cycle, member = [], code[None]
        while not cycle or not np.array_equal(member[0], code):
            cycle.append(np.packbits(member[0]).tobytes())
            member = pipe.encode(pipe.decode(member))
        assert min(cycle) == cycle[0]
        np.testing.assert_array_equal(pipe.settle(member)[0], code[None])


def test_canonical_warns_when_rounds_run_out(pipe):
    codes, settled = pipe.settle(pipe.encode(_images_to_encode(pipe)))
    np.testing.assert_array_equal(pipe.canonical(codes[settled], rounds=0), codes[settled])
    random_bits = np.random.default_rng(1).integers(0, 2, (6,) + pipe.latent_shape, np.uint8)
    with pytest.warns(CodeNotSettledWarning, match=r"6 of 6 latents did not settle"):
        once = pipe.canonical(random_bits, rounds=1)  # random bits are no decoder's output
    np.testing.assert_array_equal(
        once, (pipe.encode_probs(pipe.decode(random_bits)) > 0.5).astype(np.uint8)
    )


def test_fp16_graphs_give_close_probabilities(tiny_bundle, pipe):
    half = Pipeline.load(tiny_bundle, precision="fp16")
    bits = pipe.generate(n=4, seeds=9, trace=True).trace.states[5]
    for g in (0.0, 1.0):
        p32 = pipe.step_probs(bits, 5, classes=[0, 1, 2, 3], guidance=g)
        p16 = half.step_probs(bits, 5, classes=[0, 1, 2, 3], guidance=g)
        assert np.abs(p32 - p16).max() < 2e-2
    assert half.generate(n=2, seeds=1).images.shape == (2,) + pipe.image_shape


def test_latent_mask_is_conservative(pipe):
    H, W, _ = pipe.image_shape
    lh, lw = pipe.manifest.latent.height, pipe.manifest.latent.width
    regenerate = np.zeros((H, W), bool)
    regenerate[0, W - 1] = True  # one pixel: its token (0, lw - 1) must be regenerated
    keep = pipe.latent_mask(regenerate)
    assert keep.shape == pipe.latent_shape and keep.dtype == np.uint8
    expected = np.ones((lh, lw), np.uint8)
    expected[0, lw - 1] = 0
    np.testing.assert_array_equal(keep[:, 0].reshape(lh, lw), expected)
    assert (keep == keep[:, :1]).all()  # all bits of a token together
    regenerate[:] = True
    assert not pipe.latent_mask(regenerate).any()
    with pytest.raises(InvalidRequestError, match="mask must be"):
        pipe.latent_mask(np.zeros((H + 1, W), bool))


def test_inpaint_keeps_the_tokens_outside_the_region(pipe):
    image = pipe.generate(n=1, seeds=21, classes=2).images[0]
    H, W, _ = pipe.image_shape
    regenerate = np.zeros((H, W), bool)
    regenerate[:, W // 2 :] = True
    out = pipe.inpaint(image, regenerate, seed=5, classes=2)
    keep = pipe.latent_mask(regenerate).astype(bool)
    known = pipe.encode(image[None])
    np.testing.assert_array_equal(out.bits[0][keep], known[0][keep])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n=0), "batch size must be at least 1"),
        (dict(seeds=[]), "batch size must be at least 1"),
        (dict(seeds=-1), r"seed must be an integer in \[0, 2\^64\)"),
        (dict(seeds=2**64), r"seed must be an integer in \[0, 2\^64\)"),
        (dict(seeds=1.5), "seed must be an integer"),
        (dict(seeds=[1, 2], n=3), "got 2 seeds for n=3"),
        (dict(classes=11), "class 11 is out of range"),
        (dict(classes=-1), "class -1 is out of range"),
        (dict(guidance=float("nan")), "guidance must be finite and >= 0"),
        (dict(guidance=-0.5), "guidance must be finite and >= 0"),
        (dict(temperature=0.0), "temperature must be finite and > 0"),
        (dict(temperature=float("inf")), "temperature must be finite and > 0"),
        (dict(mask=np.ones((64, 8), np.uint8)), "both mask and known_bits"),
    ],
)
def test_invalid_requests(pipe, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        pipe.generate(**kwargs)
    with pytest.raises(InvalidRequestError, match=message):  # the same checks, nothing run
        pipe.check_request(**kwargs)


def test_checked_requests_concatenate_into_one_request(pipe):
    """What a server does with a batch: check each request alone, run their rows as one."""
    L, C = pipe.latent_shape
    rng = np.random.default_rng(4)
    mask = (rng.random((L, C)) < 0.5).astype(np.uint8)
    known = (rng.random((L, C)) < 0.5).astype(np.uint8)
    parts = [
        dict(n=3, seeds=2**64 - 2, classes="all", guidance=1.5),
        dict(seeds=[7, 8], classes=[pipe.null_class, 4], temperature=[0.8, 1.2]),
        dict(seeds=[9], mask=mask, known_bits=known),
    ]
    checked = [pipe.check_request(**part) for part in parts]
    assert [r.count for r in checked] == [3, 2, 1]
    rows = [r.rows(0, r.count) for r in checked]

    def column(key):  # rows without inpainting get a zero mask, which keeps nothing
        return np.concatenate(
            [
                np.zeros((len(r["seeds"]), L, C), np.uint8) if r[key] is None else r[key]
                for r in rows
            ]
        )

    together = pipe.generate(**{key: column(key) for key in rows[0]})
    alone = [pipe.generate(**part) for part in parts]
    np.testing.assert_array_equal(together.bits, np.concatenate([a.bits for a in alone]))
    np.testing.assert_array_equal(together.seeds, [2**64 - 2, 2**64 - 1, 0, 7, 8, 9])
    np.testing.assert_array_equal(together.classes, [0, 1, 2, pipe.null_class, 4, pipe.null_class])


def test_invalid_images_and_bits(pipe):
    H, W, ch = pipe.image_shape
    with pytest.raises(InvalidRequestError, match="images must be uint8"):
        pipe.encode(np.zeros((1, H + 1, W, ch), np.uint8))
    with pytest.raises(InvalidRequestError, match="images must be uint8"):
        pipe.encode(np.zeros((1, H, W, ch), np.float32))
    with pytest.raises(InvalidRequestError, match="batch size must be at least 1"):
        pipe.encode(np.zeros((0, H, W, ch), np.uint8))
    with pytest.raises(InvalidRequestError, match="only 0 and 1"):
        pipe.decode(np.full((1,) + pipe.latent_shape, 2, np.uint8))


def test_backend_and_precision_errors(tiny_bundle, tmp_path):
    with pytest.raises(
        BackendUnavailableError, match=r"unknown backend 'metal'.*CPUExecutionProvider"
    ):
        Pipeline.load(tiny_bundle, backend="metal")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(
            BackendUnavailableError,
            match=r"needs onnxruntime's CUDAExecutionProvider.*CPUExecutionProvider",
        ):
            Pipeline.load(tiny_bundle, backend="cuda")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
            Pipeline.load(tiny_bundle, backend="tensorrt-ep")
    with pytest.raises(
        InvalidRequestError, match="precision must be one of fp32, fp16, int8, bf16, got 'int4'"
    ):
        Pipeline.load(tiny_bundle, precision="int4")
    with pytest.raises(InvalidRequestError, match="graph_optimization"):
        BackendOptions(graph_optimization="max")
    with pytest.raises(InvalidRequestError, match="intra_op_threads"):
        BackendOptions(intra_op_threads=-1)
    with pytest.raises(InvalidRequestError, match="stop_spinning must be True or False"):
        BackendOptions(stop_spinning="no")
    # A bundle without fp16 graphs: precision fp16 says so.
    import json

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "bld.json").read_text())
    for name in [g for g in manifest["graphs"] if g.endswith("_fp16")]:
        del manifest["graphs"][name]
    (copy / "bld.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"no 'decoder_fp16' graph.*--fp16"):
        Pipeline.load(copy, precision="fp16")


def test_graph_optimisation_levels_agree(tiny_bundle, pipe):
    plain = Pipeline.load(tiny_bundle, options=BackendOptions(graph_optimization="disable"))
    a = plain.generate(n=3, seeds=8, classes=1, trace=True).trace.probs
    b = pipe.generate(n=3, seeds=8, classes=1, trace=True).trace.probs
    assert np.abs(a - b).max() < 1e-5


# --- images ------------------------------------------------------------------------------


def test_uint8_float_round_trip_is_exact():
    u8 = np.arange(256, dtype=np.uint8)
    x = to_float(u8)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(from_float(x), u8)
    # Clipped; 0.5 rounds half to even.
    np.testing.assert_array_equal(
        from_float(np.array([-3.0, 3.0, np.float32(0.5 / 127.5 - 1)])), [0, 255, 0]
    )
    # Any shape, a scalar too, and the input is never written to.
    assert from_float(0.3) == 166 and from_float(np.float32(2)).dtype == np.uint8
    x_before = x.copy()
    from_float(x)
    np.testing.assert_array_equal(x, x_before)


def test_png_files_and_grids(tmp_path):
    gray = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4, 1)
    save_png(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(load_png(tmp_path / "g.png", 6, 4, 1), gray)
    with pytest.raises(InvalidRequestError, match="has mode L; this bundle needs RGB"):
        load_png(tmp_path / "g.png", 6, 4, 3)
    with pytest.raises(InvalidRequestError, match="is 4x6; it must be 4x5"):
        load_png(tmp_path / "g.png", 5, 4, 1)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InvalidRequestError, match="cannot read image"):
        load_png(tmp_path / "junk.png", 6, 4, 1)
    grid = make_grid(np.stack([gray] * 5), cols=2, pad=1)
    assert grid.shape == (3 * 7 + 1, 2 * 5 + 1, 1)
    np.testing.assert_array_equal(grid[1:7, 6:10], gray)  # image 1: row 0, column 1
    assert list(tmp_path.glob(".*.tmp")) == []


# --- GPU backends --------------------------------------------------------------------------


def test_device_kernel_core_matches_numpy_philox(tmp_path):
    """The CUDA kernel's Philox/uniform/draw code, compiled as C on the host, is bit-exact."""
    from bld_runtime.backends.kernels import CORE

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the kernel's core on the host")
    src = tmp_path / "core.c"
    src.write_text(
        CORE
        + textwrap.dedent("""
        void uniforms(bld_u64 seed, bld_u64 subsequence, bld_u64 blocks, float *out) {
            for (bld_u64 j = 0; j < blocks; ++j)
                bld_block_uniforms(seed, subsequence, j, out + 4 * j);
        }
        void draw(const float *p, bld_u64 seed, bld_u64 subsequence, bld_u64 n, float *bits,
                  const unsigned char *keep, const float *known) {
            for (bld_u64 j = 0; j < (n + 3) / 4; ++j)
                bld_draw_block(p, seed, subsequence, j, n, bits, keep, known);
        }
    """)
    )
    lib = tmp_path / "core.so"
    subprocess.run(
        [cc, "-O2", "-ffp-contract=off", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True
    )
    core = ctypes.CDLL(str(lib))
    u64, ptr = ctypes.c_uint64, np.ctypeslib.ndpointer
    core.uniforms.argtypes = [u64, u64, u64, ptr(np.float32, flags="C")]
    core.draw.argtypes = [
        ptr(np.float32, flags="C"),
        u64,
        u64,
        u64,
        ptr(np.float32, flags="C"),
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    n = 16 * 16 * 64 + 3  # a tail that is not a whole Philox block
    rng = np.random.default_rng(0)
    for seed, sub in [(0, 0), (2**64 - 1, 17), (123456789123, 2**40 + 5)]:
        u = np.empty(-(-n // 4) * 4, np.float32)
        core.uniforms(seed, sub, len(u) // 4, u)
        np.testing.assert_array_equal(u[:n], philox.uniforms([seed], sub, n)[0])
        p = rng.random(n, dtype=np.float32)
        bits = np.empty(n, np.float32)
        core.draw(p, seed, sub, n, bits, None, None)
        np.testing.assert_array_equal(bits, philox.bernoulli(p[None], [seed], sub)[0])
        keep = (rng.random(n) < 0.3).astype(np.uint8)
        known = rng.integers(0, 2, n).astype(np.float32)
        core.draw(p, seed, sub, n, bits, keep.ctypes.data, known.ctypes.data)
        want = np.where(keep == 1, known, philox.bernoulli(p[None], [seed], sub)[0])
        np.testing.assert_array_equal(bits, want)


def _cuda_available() -> bool:
    try:
        import cupy
        import onnxruntime as ort

        return (
            "CUDAExecutionProvider" in ort.get_available_providers()
            and cupy.cuda.runtime.getDeviceCount() > 0
        )
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device: CuPy's own error types
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs CuPy, onnxruntime-gpu and a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "tensorrt-ep"])
def test_gpu_backend_matches_cpu(tiny_bundle, pipe, backend):
    import onnxruntime as ort

    if (
        backend == "tensorrt-ep"
        and "TensorrtExecutionProvider" not in ort.get_available_providers()
    ):
        pytest.skip("onnxruntime has no TensorRT execution provider here")
    gpu = Pipeline.load(tiny_bundle, backend=backend)
    L, C = pipe.latent_shape
    mask = np.zeros((L, C), np.uint8)
    mask[:4] = 1
    known = np.ones((L, C), np.uint8)
    kwargs = dict(
        n=8,
        seeds=2**63,
        classes=np.arange(8),
        guidance=1.0,
        mask=mask,
        known_bits=known,
        trace=True,
    )
    a, b = pipe.generate(**kwargs), gpu.generate(**kwargs)
    np.testing.assert_array_equal(b.trace.states[0], a.trace.states[0])  # Philox, then the mask
    assert (a.bits == b.bits).all(axis=(1, 2)).mean() >= 0.75
    args = (a.trace.states, a.seeds, a.classes, 1.0, 1.0)
    probs_cpu, drawn_cpu = _loop_with_teacher(pipe, *args)
    probs_gpu, drawn_gpu = _loop_with_teacher(gpu, *args)
    assert np.abs(probs_cpu - probs_gpu).max() < 1e-4
    assert (drawn_cpu == drawn_gpu).mean() >= 0.9999


def test_settle_orbits_picks_the_smallest_code_of_each_cycle():
    """A map on 1-bit-per-token codes with known orbits: a fixed point, a tail into a 3-cycle."""

    def code(n):  # n as 8 bits, shaped (L=1, C=8)
        return np.unpackbits(np.array([n], np.uint8)).reshape(1, 8)

    successor = {5: 5, 9: 7, 7: 200, 200: 3, 3: 7, 100: 101, 101: 102, 102: 103, 103: 104}
    calls = []

    def step(batch):
        calls.append(len(batch))
        return np.stack([code(successor[int(np.packbits(b)[0])]) for b in batch])

    start = np.stack([code(5), code(9), code(200), code(100)])
    codes, settled = settle_orbits(start, step, rounds=4)
    np.testing.assert_array_equal(settled, [True, True, True, False])
    np.testing.assert_array_equal(codes[:3], np.stack([code(5), code(3), code(3)]))
    np.testing.assert_array_equal(codes[3], code(104))  # ran out of rounds: the last code
    assert calls == [4, 3, 3, 2]  # settled latents leave the batch (5 after 1 round, 200 after 3)
    np.testing.assert_array_equal(settle_orbits(start, step, rounds=0)[0], start)
