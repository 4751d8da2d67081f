"""A bounded load test of a served `bld` model: N clients, each sending one image request at a
time over HTTP for a fixed time, on 127.0.0.1 only.

Every response is checked (shape, and for a fixed set of requests the exact bits computed
locally beforehand), so a load test that returns wrong images fails like one that errors.
Used by benchmarks/triton_load.py (30 s, the README's figures) and a short CI test.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bld_runtime import protocol


@dataclass
class LoadReport:
    clients: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mismatches: int = 0
    rss_start: int = 0  # server + model stubs, bytes
    rss_end: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def rss_growth(self) -> float:
        return (self.rss_end - self.rss_start) / self.rss_start if self.rss_start else 0.0

    def summary(self) -> str:
        return (
            f"{self.clients} clients, {self.duration_s:.1f} s: {self.requests} images, "
            f"{self.throughput:.1f} images/s, p50 {self.percentile(50):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms, errors {len(self.errors)}, wrong images "
            f"{self.mismatches}, RSS {self.rss_start / 2**20:.0f} -> "
            f"{self.rss_end / 2**20:.0f} MiB ({100 * self.rss_growth:+.1f}%)"
        )


def warm_up(url: str, max_batch: int, classes: int = 10, rounds: int = 2) -> None:
    """Run every batch size 1..max_batch (one request of n images each), `rounds` times: a
    served model's memory (onnxruntime's arenas, the loops) then covers every batch the
    dynamic batcher can form, so a load test measures steady state, not first touches."""
    import tritonclient.http as http

    connection = http.InferenceServerClient(url.split("://", 1)[-1], network_timeout=120)
    try:
        for _ in range(rounds):
            for n in range(1, max_batch + 1):
                seeds = np.arange(n, dtype=np.uint64).reshape(n, 1)
                inputs = []
                for spec, value in (
                    (protocol.SEED, seeds),
                    (protocol.CLASS, (seeds % classes).astype(np.int64)),
                    (protocol.GUIDANCE, np.zeros((n, 1), np.float32)),
                    (protocol.TEMPERATURE, np.ones((n, 1), np.float32)),
                ):
                    tensor = http.InferInput(spec.name, list(value.shape), spec.dtype)
                    tensor.set_data_from_numpy(value)
                    inputs.append(tensor)
                connection.infer(protocol.MODEL, inputs)
    finally:
        connection.close()


def run_load(
    url: str,
    expected: dict[int, np.ndarray],
    clients: int = 16,
    duration_s: float = 30.0,
    rss=None,
    classes: int = 10,
    guidance: float = 0.0,
    temperature: float = 1.0,
) -> LoadReport:
    """`clients` threads, each with its own HTTP client, cycle through the seeds of
    `expected` (seed -> packed bits of seed with class seed % classes at `guidance` and
    `temperature`) for `duration_s`; rss() -> bytes is sampled before and after."""
    import tritonclient.http as http

    seeds = sorted(expected)
    report = LoadReport(clients, duration_s)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        connection = http.InferenceServerClient(url.split("://", 1)[-1], network_timeout=60)
        outputs = [http.InferRequestedOutput(protocol.BITS.name, binary_data=True)]
        start.wait()
        i = index
        while time.monotonic() < deadline[0]:
            seed = seeds[i % len(seeds)]
            i += clients
            inputs = []
            for spec, value in (
                (protocol.SEED, np.array([[seed]], np.uint64)),
                (protocol.CLASS, np.array([[seed % classes]], np.int64)),
                (protocol.GUIDANCE, np.array([[guidance]], np.float32)),
                (protocol.TEMPERATURE, np.array([[temperature]], np.float32)),
            ):
                tensor = http.InferInput(spec.name, list(value.shape), spec.dtype)
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            began = time.perf_counter()
            try:
                result = connection.infer(protocol.MODEL, inputs, outputs=outputs)
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    report.errors.append(str(e))
                if len(report.errors) > 100:
                    break
                continue
            took = (time.perf_counter() - began) * 1e3
            ok = np.array_equal(result.as_numpy(protocol.BITS.name)[0], expected[seed])
            with lock:
                report.latencies_ms.append(took)
                report.mismatches += not ok
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    if rss is not None:
        report.rss_start = rss()
    began = time.monotonic()
    deadline[0] = began + duration_s
    start.wait()
    for t in threads:
        t.join(duration_s + 120)
    report.duration_s = time.monotonic() - began
    if rss is not None:
        report.rss_end = rss()
    return report
