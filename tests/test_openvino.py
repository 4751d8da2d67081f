"""The "openvino" backend against the cpu backend on tiny_bundle.

OpenVINO computes the step graph's probabilities with its own kernels, so they agree with
onnxruntime's within float rounding, not bit for bit; a drawn bit can then differ where a
probability lies within that rounding of its Philox uniform. Everything after the graph call
is the sampling contract's and must match exactly: the initial state (no graph), the mask,
batch invariance. Without OpenVINO installed, the backend refuses in one sentence.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bld_runtime.backends import BackendOptions
from bld_runtime.pipeline import Pipeline

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'bld[openvino]')")

SEEDS = np.arange(1000, 1128, dtype=np.uint64)


@pytest.fixture(scope="module")
def cpu(tiny_bundle):
    return Pipeline.load(tiny_bundle)


@pytest.fixture(scope="module")
def ov(tiny_bundle):
    return Pipeline.load(tiny_bundle, backend="openvino")


def _inputs(pipe, n, rng):
    L, C = pipe.latent_shape
    bits = rng.integers(0, 2, size=(n, L, C)).astype(np.float32)
    step = rng.integers(0, pipe.backend.num_steps, size=n)
    classes = rng.integers(0, pipe.num_classes + 1, size=n)
    temperature = rng.uniform(0.7, 1.3, size=n).astype(np.float32)
    guidance = rng.uniform(0.0, 2.0, size=n).astype(np.float32)
    return bits, step, classes, temperature, guidance


@pytest.mark.parametrize("guided", [False, True])
def test_step_probabilities_agree_with_onnxruntime(cpu, ov, guided):
    rng = np.random.default_rng(1)
    for n in (1, 3, 16):
        bits, step, classes, temperature, guidance = _inputs(cpu, n, rng)
        g = guidance if guided else None
        want = cpu.backend.step_probs(bits, step, classes, temperature, g)
        got = ov.backend.step_probs(bits, step, classes, temperature, g)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-5


def test_the_loop_computes_what_step_probs_computes(cpu, ov):
    """The loop's static-shape models and the dynamic one agree on the loop's own inputs."""
    out = ov.generate(seeds=SEEDS[:4], classes=np.arange(4) % ov.num_classes, trace=True)
    L, C = ov.latent_shape
    for i, (state, probs) in enumerate(zip(out.trace.states, out.trace.probs, strict=True)):
        again = ov.backend.step_probs(
            state, np.full(4, i), np.arange(4) % ov.num_classes, np.ones(4, np.float32)
        )
        assert np.abs(again - probs).max() < 1e-5
        assert probs.shape == (4, L, C)


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_bits_agree_with_the_cpu_backend(cpu, ov, guidance):
    classes = np.arange(len(SEEDS)) % (cpu.num_classes + 1)
    want = cpu.generate(seeds=SEEDS, classes=classes, guidance=guidance)
    got = ov.generate(seeds=SEEDS, classes=classes, guidance=guidance)
    assert (got.bits == want.bits).mean() >= 0.999
    same = np.mean([np.array_equal(g, w) for g, w in zip(got.bits, want.bits, strict=True)])
    assert same >= 0.9  # identical latents for most seeds (measured: all of them here)
    # the decoder runs in onnxruntime, as in the cpu backend: identical bits, identical pixels
    rows = [i for i in range(len(SEEDS)) if np.array_equal(got.bits[i], want.bits[i])]
    np.testing.assert_array_equal(got.images[rows], want.images[rows])


def test_the_initial_state_is_bit_identical(cpu, ov):
    """Subsequence 0 with p = 0.5: no graph involved, so exactly the cpu backend's bits."""
    classes = np.arange(len(SEEDS)) % cpu.num_classes
    want = cpu.generate(seeds=SEEDS, classes=classes, trace=True)
    got = ov.generate(seeds=SEEDS, classes=classes, trace=True)
    np.testing.assert_array_equal(got.trace.states[0], want.trace.states[0])


def test_teacher_forced_draws_are_the_cpu_backends(cpu, ov):
    """Given the same probabilities, the draw and threshold are exactly the cpu loop's (one
    shared implementation, HostLoop)."""
    rng = np.random.default_rng(2)
    L, C = cpu.latent_shape
    probs = rng.random((4, L, C), dtype=np.float32)
    request = cpu.check_request(seeds=SEEDS[:4], classes=np.arange(4) % cpu.num_classes)
    results = []
    for pipe in (cpu, ov):
        drawn = []
        with pipe.backend.loop(4) as loop:
            loop.start(request.chunk(0, 4))
            for i in range(loop.num_steps):
                loop.run_step(i)
                np.copyto(loop.probs, probs)
                loop.advance(i)
                drawn.append(loop.read_bits(np.empty((4, L, C), np.uint8)))
        results.append(drawn)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_inpainting_keeps_the_known_bits(ov):
    rng = np.random.default_rng(0)
    L, C = ov.latent_shape
    known = rng.integers(0, 2, size=(3, L, C), dtype=np.uint8)
    mask = np.zeros((L, C), np.uint8)
    mask[: L // 2] = 1
    out = ov.generate(n=3, seeds=5, mask=mask, known_bits=known, trace=True)
    keep = np.broadcast_to(mask, known.shape).astype(bool)
    for z in [*out.trace.states, out.bits]:
        np.testing.assert_array_equal(z[keep], known[keep])
    assert not np.array_equal(out.bits[~keep], known[~keep])


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_batch_size_and_position_do_not_change_the_bits(tiny_bundle, ov, guidance):
    """As tests/test_invariance.py for cpu: batch 24, chunks of 5 (5 x 4 + 4), batch 1 and
    every position give the same bits and pixels."""
    seeds = SEEDS[:24]
    classes = np.arange(24) % (ov.num_classes + 1)
    full = ov.generate(seeds=seeds, classes=classes, guidance=guidance)
    small = Pipeline.load(tiny_bundle, backend="openvino")
    small.max_batch = 5
    chunked = small.generate(seeds=seeds, classes=classes, guidance=guidance)
    np.testing.assert_array_equal(chunked.bits, full.bits)
    np.testing.assert_array_equal(chunked.images, full.images)
    for i in range(0, 24, 5):
        one = ov.generate(seeds=seeds[i : i + 1], classes=classes[i : i + 1], guidance=guidance)
        np.testing.assert_array_equal(one.bits[0], full.bits[i])
        np.testing.assert_array_equal(one.images[0], full.images[i])
    order = np.random.default_rng(0).permutation(24)
    shuffled = ov.generate(seeds=seeds[order], classes=classes[order], guidance=guidance)
    np.testing.assert_array_equal(shuffled.bits, full.bits[order])


def test_encode_decode_are_the_cpu_backend_s(cpu, ov):
    """The encoder and decoder run in onnxruntime (ONNXRUNTIME_KINDS): the cpu backend's
    numbers exactly."""
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, size=(3, *cpu.backend.graphs["encoder"].spec.inputs[0].shape[1:]))
    np.testing.assert_array_equal(ov.backend.encode(images), cpu.backend.encode(images))
    bits = rng.integers(0, 2, size=(3, *cpu.latent_shape))
    np.testing.assert_array_equal(ov.backend.decode(bits), cpu.backend.decode(bits))


def test_threads_latency_and_fp32_are_asked_for(tiny_bundle):
    pipe = Pipeline.load(
        tiny_bundle, backend="openvino", options=BackendOptions(intra_op_threads=1)
    )
    compiled = pipe.backend.ov_graph("step").compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == pipe.backend.ov.Type.f32


def test_fp16_graphs_run(tiny_bundle, cpu):
    pipe = Pipeline.load(tiny_bundle, backend="openvino", precision="fp16")
    out = pipe.generate(seeds=SEEDS[:4], classes=np.arange(4) % pipe.num_classes)
    assert out.bits.shape == (4, *pipe.latent_shape)


def test_without_openvino_the_backend_refuses_in_one_sentence(tiny_bundle, subprocess_env):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["openvino"] = None  # `import openvino` raises ImportError
        from bld_runtime.errors import BackendUnavailableError
        from bld_runtime.pipeline import Pipeline
        try:
            Pipeline.load({str(tiny_bundle)!r}, backend="openvino")
        except BackendUnavailableError as e:
            print(e)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("backend 'openvino' needs OpenVINO")
    assert "pip install 'bld[openvino]'" in lines[0]


def test_bld_bench_times_it_beside_cpu(tiny_bundle):
    """`bld bench --backend cpu,openvino`: a backend of bld.backends is timed as a runtime one."""
    import json

    from click.testing import CliRunner

    from bld_runtime.cli import cli

    args = ["bench", str(tiny_bundle), "--backend", "cpu,openvino", "--batch", "2"]
    args += ["--warmup", "0", "--iters", "1", "--no-peak", "--json", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(b["name"], b["kind"], b["available"]) for b in out["backends"]] == [
        ("cpu", "runtime", True),
        ("openvino", "runtime", True),
    ]
    assert [r["backend"] for r in out["results"]] == ["cpu", "openvino"]


def _has_native_bf16() -> bool:
    from bld_runtime.backends.openvino import cpu_flags

    flags = cpu_flags()
    return flags is not None and bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.skipif(not _has_native_bf16(), reason="this CPU has neither AVX512_BF16 nor AMX")
def test_bf16_runs_the_fp32_graphs_in_bfloat16(tiny_bundle, ov):
    from bld_runtime.backends import openvino as backend_module

    pipe = Pipeline.load(tiny_bundle, backend="openvino", precision="bf16")
    assert pipe.backend.graphs["step"].name == "step"
    bf16 = pipe.backend.ov.Type.bf16
    assert pipe.backend.ov_graph("step").compiled.get_property("INFERENCE_PRECISION_HINT") == bf16
    # the encoder and decoder run in onnxruntime, fp32
    assert not isinstance(pipe.backend.session("decoder"), backend_module.OvGraph)
    classes = np.arange(len(SEEDS)) % (ov.num_classes + 1)
    got = pipe.generate(seeds=SEEDS, classes=classes)
    want = ov.generate(seeds=SEEDS, classes=classes)
    # its own numerics: close to fp32's samples, not the same bits
    assert (got.bits == want.bits).mean() >= 0.9
    assert got.images.shape == want.images.shape


def test_bf16_is_refused_without_native_support(tiny_bundle, monkeypatch):
    from bld_runtime.backends import openvino as backend_module
    from bld_runtime.errors import BackendUnavailableError

    monkeypatch.setattr(backend_module, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})
    with pytest.raises(BackendUnavailableError) as refused:
        Pipeline.load(tiny_bundle, backend="openvino", precision="bf16")
    assert str(refused.value) == (
        "precision 'bf16' needs a CPU with AVX512_BF16 or AMX, which this one lacks; "
        "use --precision fp32"
    )


def test_other_backends_refuse_bf16(tiny_bundle):
    from bld_runtime.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as refused:
        Pipeline.load(tiny_bundle, backend="cpu", precision="bf16")
    assert str(refused.value) == (
        "precision 'bf16' runs on backend 'openvino' only; backend 'cpu' runs fp32, fp16, int8"
    )


def test_int8_runs_the_int8_step_graphs(tiny_int8_bundle):
    """--precision int8: the *_int8 QDQ step graphs in OpenVINO (encoder and decoder in
    onnxruntime, fp32); its own bits, deterministic and the same whatever the batch."""
    from bld_runtime.backends import openvino as backend_module

    pipe = Pipeline.load(tiny_int8_bundle, backend="openvino", precision="int8")
    assert pipe.backend.graphs["step_guided"].name == "step_guided_int8"
    assert not isinstance(pipe.backend.session("decoder"), backend_module.OvGraph)
    seeds = SEEDS[:8]
    classes = np.array([0, 1, 2, 10, 4, 5, 10, 7])
    guidance = [0.0, 1.5] * 4
    whole = pipe.generate(seeds=seeds, classes=classes, guidance=guidance)
    np.testing.assert_array_equal(
        whole.bits, pipe.generate(seeds=seeds, classes=classes, guidance=guidance).bits
    )
    order = np.array([3, 0, 6, 1, 7, 2, 5, 4])
    shuffled = pipe.generate(
        seeds=seeds[order], classes=classes[order], guidance=[guidance[i] for i in order]
    )
    np.testing.assert_array_equal(shuffled.bits, whole.bits[order])
    alone = pipe.generate(seeds=seeds[3:4], classes=classes[3:4], guidance=guidance[3])
    np.testing.assert_array_equal(alone.bits[0], whole.bits[3])
    cpu = Pipeline.load(tiny_int8_bundle, precision="int8")
    same = cpu.generate(seeds=seeds, classes=classes, guidance=guidance)
    assert (whole.bits == same.bits).mean() >= 0.9  # the same int8 model in another engine


def test_int8_is_refused_without_int8_dot_products(tiny_int8_bundle, monkeypatch):
    from bld_runtime.backends import int8
    from bld_runtime.errors import BackendUnavailableError

    monkeypatch.setattr(int8.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    with pytest.raises(BackendUnavailableError, match=r"^precision 'int8' needs a CPU with AVX512"):
        Pipeline.load(tiny_int8_bundle, backend="openvino", precision="int8")


@pytest.mark.skipif(
    not hasattr(__import__("os"), "sched_getaffinity")
    or len(__import__("os").sched_getaffinity(0)) < 2,
    reason="pinning needs 2 usable cores",
)
def test_openvino_never_pins_the_generating_thread(tiny_bundle):
    """With pin_threads (the commands' default with the shared pool) the openvino backend does
    not pin the generating thread: OpenVINO makes its threads inside the first generation, and
    they would inherit that one-core mask. Seen from /proc: after a generation, as many threads
    are confined to the first CPU as without pin_threads (OpenVINO pins some of its own)."""
    code = """
        import os, sys
        from bld_runtime.backends import BackendOptions
        from bld_runtime.pipeline import Pipeline
        pin = sys.argv[1] == "pin"
        options = BackendOptions(intra_op_threads=2, thread_pool="shared", pin_threads=pin)
        pipe = Pipeline.load(sys.argv[2], backend="openvino", options=options)
        pipe.generate(64, seeds=1)
        def allowed(task):
            status = open(f"/proc/self/task/{task}/status").read()
            return status.split("Cpus_allowed_list:")[1].split()[0]
        first = str(min(os.sched_getaffinity(0)))
        print(sum(allowed(t) == first for t in os.listdir("/proc/self/task")))
        """
    counts = []
    for pin in ("pin", "no"):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), pin, str(tiny_bundle)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        counts.append(done.stdout.split())
    assert counts[0] == counts[1]
