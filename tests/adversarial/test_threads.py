"""Threads and soak: one Pipeline shared by many threads gives every caller its own right
answer; memory stays flat over many requests and bounded whatever a request's size."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bld_runtime.backends import BackendOptions
from bld_runtime.pipeline import Pipeline

from .conftest import child_env

RUNS = 50
THREADS = 8


@pytest.fixture(scope="module")
def shared(tiny_bundle):
    return Pipeline.load(tiny_bundle, options=BackendOptions(intra_op_threads=1))


def _request(i: int, mixed: bool) -> dict:
    """Request i: seeds, classes, guidance and temperature differ per request; batch sizes are
    all the same (`mixed` False) or range over 1..70 (chunks included)."""
    n = 1 + (i * 13) % 70 if mixed else 16
    return {
        "n": n,
        "seeds": 1000 * i,
        "classes": (np.arange(n) + i) % 11,
        "guidance": [0.0, 1.5][i % 2],
        "temperature": [1.0, 0.8, 1.2][i % 3],
    }


@pytest.mark.parametrize("mixed", [False, True], ids=["same batch", "mixed batches"])
def test_a_shared_pipeline_gives_every_thread_the_sequential_answer(shared, mixed):
    requests = [_request(i, mixed) for i in range(RUNS)]
    sequential = [shared.generate(**r) for r in requests]
    start = threading.Barrier(THREADS)

    def work(i):
        if i < THREADS:
            start.wait()  # the first wave starts together
        return shared.generate(**requests[i])

    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(work, range(RUNS)))
    for want, got in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(got.bits, want.bits)
        np.testing.assert_array_equal(got.images, want.images)


def test_threads_mixing_every_entry_point(shared):
    """generate, iter_generate, encode, decode and step_probs at once on one pipeline."""
    images = shared.generate(n=8, seeds=5).images
    want = {
        "generate": shared.generate(n=20, seeds=7, classes=3).bits,
        "iter": np.concatenate([c.bits for c in shared.iter_generate(n=130, seeds=9)]),
        "encode": shared.encode(images),
        "decode": shared.decode(shared.encode(images)),
        "step": shared.step_probs(shared.encode(images), 3, classes=2, guidance=1.0),
    }
    calls = {
        "generate": lambda: shared.generate(n=20, seeds=7, classes=3).bits,
        "iter": lambda: np.concatenate([c.bits for c in shared.iter_generate(n=130, seeds=9)]),
        "encode": lambda: shared.encode(images),
        "decode": lambda: shared.decode(shared.encode(images)),
        "step": lambda: shared.step_probs(shared.encode(images), 3, classes=2, guidance=1.0),
    }
    names = list(calls) * 8
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda name: (name, calls[name]()), names))
    for name, got in results:
        np.testing.assert_array_equal(got, want[name])


def test_loops_are_pooled_not_leaked(shared):
    before = len(shared.backend._idle)
    for n in range(1, 30):
        shared.generate(n=n, seeds=n)
    assert len(shared.backend._idle) <= shared.backend.max_idle_loops
    assert before <= shared.backend.max_idle_loops


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_memory_is_flat_over_a_thousand_requests(tiny_bundle):
    pipe = Pipeline.load(tiny_bundle)
    for i in range(100):  # warm: arenas, pools, caches
        pipe.generate(n=1 + i % 5, seeds=i, guidance=i % 2)
    start = _rss()
    for i in range(1000):
        pipe.generate(n=1 + i % 5, seeds=i, guidance=i % 2)
    grown = _rss() - start
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 1000 requests"


def test_a_hundred_thousand_images_in_bounded_memory(tiny_bundle, tmp_path):
    """bld sample -n 100000 under an address-space cap: streamed chunk by chunk, peak RSS stays
    under 300 MB (holding every image would take several times that at once)."""
    out, peak_file = tmp_path / "out", tmp_path / "peak"
    cap = 3 << 30  # address space (not RSS): onnxruntime and numpy reserve more than they touch
    start = time.monotonic()
    # One onnxruntime thread: the tiny graphs gain nothing from two, and on busy cores a second
    # thread makes every call wait for it.
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "peak_rss.py"),
            str(peak_file),
            str(cap),
            "bld_runtime.cli",
            "sample",
            str(tiny_bundle),
            "-n",
            "100000",
            "--seed",
            "11",
            "--threads",
            "1",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr
    peak = int(peak_file.read_text())
    print(
        f"\nbld sample -n 100000: {time.monotonic() - start:.0f} s, peak RSS {peak / 2**20:.0f} MiB"
    )
    assert peak < 300 * 2**20
    record = json.loads((out / "samples.json").read_text())
    assert record["status"] == "complete" and record["written"] == 100_000
    assert (out / "99999.png").is_file() and not (out / "100000.png").exists()
    assert (out / "bits.bldz").stat().st_size == 25 + 100_000 * 64
