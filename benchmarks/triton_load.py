"""Load test of a real tritonserver serving a bundle through `bld` (the README's serving row).

    python benchmarks/triton_load.py                              # runs/digits/bundle, 16 x 30 s
    python benchmarks/triton_load.py --bundle B --clients 16 --duration 30 --max-batch 16

It installs the server from the nvidia-pytriton wheel (bld_serving.local_server), writes a
repository with `bld-export triton`'s writer, starts tritonserver on 127.0.0.1 with free ports,
warms it up (every batch size 1..--max-batch, twice), then runs `--clients` clients, each
sending one image request at a time over HTTP for `--duration` seconds, and checks every
returned image's bits against local sampling.
It reports p50/p99 latency, throughput, and the RSS of the server and its model processes at
the start and the end, writes benchmarks/results/triton_load.json, and stops the server by PID.
Exit status 1 when a request failed, an image differed or RSS grew by 10% or more.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "runs" / "digits" / "bundle")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "triton_load.json"
    )
    args = parser.parse_args()

    import numpy as np

    from bld_runtime.bits import pack_bits
    from bld_runtime.pipeline import Pipeline
    from bld_serving.configs import Serving
    from bld_serving.loadtest import run_load, warm_up
    from bld_serving.local_server import LocalTriton, install
    from bld_serving.repository import write_repository

    if not (args.bundle / "bld.json").is_file():
        print(
            f"error: {args.bundle} is not a bundle (make demo writes runs/digits/bundle)",
            file=sys.stderr,
        )
        return 1
    pipe = Pipeline.load(args.bundle)
    seeds = np.arange(256, dtype=np.uint64)
    classes = (seeds % max(pipe.num_classes, 1)).astype(np.int64) if pipe.num_classes else None
    local = pipe.generate(seeds=seeds, classes=classes, guidance=args.guidance, temperature=1.0)
    expected = dict(zip(seeds.tolist(), pack_bits(local.bits), strict=True))

    inst = install(log=lambda line: print(line, file=sys.stderr))
    serving = Serving(
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
        threads=args.threads,
        python_env=str(inst.python_env),
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        write_repository(args.bundle, repo, serving)
        with LocalTriton(repo, inst, log_path=Path(tmp) / "tritonserver.log") as server:
            load = dict(classes=max(pipe.num_classes, 1), guidance=args.guidance)
            warm_up(server.http_url, args.max_batch, load["classes"])  # every batch size
            report = run_load(
                server.http_url,
                expected,
                args.clients,
                args.duration,
                rss=lambda: server.rss_bytes()[1],
                **load,
            )
            alive = server.alive()
    print(report.summary())
    result = {
        "bundle": str(args.bundle),
        "clients": args.clients,
        "duration_s": report.duration_s,
        "max_batch": args.max_batch,
        "queue_delay_us": args.queue_delay_us,
        "instances": args.instances,
        "threads": args.threads,
        "requests": report.requests,
        "throughput_images_per_s": report.throughput,
        "p50_ms": report.percentile(50),
        "p99_ms": report.percentile(99),
        "errors": len(report.errors),
        "wrong_images": report.mismatches,
        "rss_start_bytes": report.rss_start,
        "rss_end_bytes": report.rss_end,
        "rss_growth": report.rss_growth,
        "machine": platform.processor() or platform.machine(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"| {args.clients} | {report.duration_s:.0f} s | {report.percentile(50):.1f} ms | "
        f"{report.percentile(99):.1f} ms | {report.throughput:.1f} images/s | "
        f"{report.rss_start / 2**20:.0f} -> {report.rss_end / 2**20:.0f} MiB |"
    )
    failed = report.errors or report.mismatches or report.rss_growth >= 0.10 or not alive
    for error in report.errors[:3]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
