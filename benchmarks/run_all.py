"""Reproduce the README's speed table: the runtime against PyTorch (eager and compiled), same run,
same machine, same request, in one `bld bench` run per model.

    python benchmarks/run_all.py                 # everything (tens of minutes on 2 cores)
    python benchmarks/run_all.py --only digits-random --batches 1,16

Configurations:
- demo            runs/digits, trained by `make demo` (skipped until it exists), exported with
                  its int8 graphs to runs/bench/demo/bundle
- digits-random   the demo's architecture (preset "digits") with random weights
- paper256-random the paper's ImageNet 256px setting (preset "paper256") with random weights

Speed does not depend on the weights, so the random-weight runs stand in for trained ones. All
steps use the project's commands: `bld train init` (an untrained run), `bld-export onnx`,
`bld bench`. Each benchmark waits until the machine is quiet (load average and other busy
processes), since timings taken on shared, busy cores are noise.

Results: benchmarks/results/<config>.json (schema bld-bench/1), <config>.png, and
benchmarks/results/table.md, the README table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
RESULTS = REPO / "benchmarks" / "results"


class Config(NamedTuple):
    run_dir: Path  # the run the bundle is exported from
    preset: str | None  # the preset to create it from with random weights (None: trained)
    batches: str
    warmup: int
    iters: int
    bundle: Path  # where the script exports it (its own cache under runs/bench)
    export_args: tuple[str, ...] = ()


# The 256px model is ~93 GFLOP per image per step and its decoder ~250 GFLOP per image: one
# generation at batch 16 takes minutes on 2 cores, so few rounds (the per-step figures still pool
# K = 16 steps per round), and no int8 graphs (their calibration samples hundreds of images).
# The demo's bundle is re-exported with its int8 graphs (the fp32 graphs come out the same).
BENCH = RUNS / "bench"
CONFIGS = {
    "demo": Config(RUNS / "digits", None, "1,4,16", 2, 10, BENCH / "demo" / "bundle", ("--int8",)),
    "digits-random": Config(
        BENCH / "digits-random", "digits", "1,4,16", 2, 10, BENCH / "digits-random" / "bundle"
    ),
    "paper256-random": Config(
        BENCH / "paper256-random", "paper256", "1,16", 1, 1, BENCH / "paper256-random" / "bundle"
    ),
}


def command(script: str, module: str) -> list[str]:
    """An installed console script (next to this Python), else the module through Python."""
    exe = Path(sys.executable).parent / script
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", f"from {module} import main; main()"]


def stale(run_dir: Path, preset_name: str) -> bool:
    """Whether a random-weight run was made from an older version of its preset (its saved
    model configs differ from the preset's now): its bundle would time another model."""
    from bld_train import config as C

    preset = C.preset(preset_name)
    for stage, model in (("autoencoder", preset.autoencoder), ("prior", preset.prior)):
        path = run_dir / stage / "config.json"
        if not path.is_file():
            return True
        saved = json.loads(path.read_text())["model"]
        if C.from_dict(type(model), saved, str(path)) != model:
            return True
    return False


def ensure_bundle(name: str, config: Config) -> Path | None:
    run_dir, preset_name, bundle = config.run_dir, config.preset, config.bundle
    if preset_name is not None and run_dir.exists() and stale(run_dir, preset_name):
        print(
            f"[{name}] {run_dir} was made from an older {preset_name!r} preset; recreating it",
            flush=True,
        )
        shutil.rmtree(run_dir)  # the script's own cache under runs/bench
    if (bundle / "bld.json").is_file():
        return bundle
    if preset_name is None and not (run_dir / "prior" / "model.safetensors").is_file():
        print(f"[{name}] {run_dir} does not exist (run `make demo`); skipped", flush=True)
        return None
    if preset_name is not None and not (run_dir / "prior" / "model.safetensors").is_file():
        print(f"[{name}] creating a random-weight run at {run_dir}", flush=True)
        subprocess.run(
            command("bld", "bld_runtime.cli")
            + ["train", "init", "--preset", preset_name, "--run", str(run_dir)],
            check=True,
        )
    print(f"[{name}] exporting {bundle}", flush=True)
    subprocess.run(
        command("bld-export", "bld_export.cli")
        + ["onnx", str(run_dir), "-o", str(bundle), "--force", *config.export_args],
        check=True,
    )
    return bundle


def busy_processes() -> list[str]:
    """Other processes using a lot of CPU right now (from ps), excluding ourselves."""
    ours = {os.getpid(), os.getppid()}
    out = subprocess.run(["ps", "-eo", "pid=,pcpu=,args="], capture_output=True, text=True).stdout
    busy = []
    for line in out.splitlines():
        pid, cpu, args = line.split(None, 2)
        if int(pid) not in ours and float(cpu) > 20 and "ps -eo" not in args:
            busy.append(f"{pid} {cpu}% {args[:80]}")
    return busy


def wait_until_quiet(max_wait: float, load_limit: float = 0.5, interval: float = 20) -> bool:
    """Wait (up to max_wait seconds) for a 1-minute load average below load_limit with no other
    busy process. Returns whether the machine became quiet."""
    deadline = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        busy = busy_processes()
        if load < load_limit and not busy:
            return True
        if time.monotonic() > deadline:
            print(
                f"machine still busy after {max_wait:.0f}s (load {load:.2f}; "
                f"{'; '.join(busy) or 'no single busy process'}); measuring anyway",
                flush=True,
            )
            return False
        print(
            f"waiting for a quiet machine (load {load:.2f}, {len(busy)} busy processes)", flush=True
        )
        time.sleep(interval)


def run_bench(
    results: Path,
    name: str,
    bundle: Path,
    run_dir: Path,
    batches: str,
    warmup: int,
    iters: int,
    backends: str,
    threads: int | None,
    max_wait: float,
) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    quiet = wait_until_quiet(max_wait)
    cmd = (
        command("bld", "bld_runtime.cli")
        + [
            "bench",
            str(bundle),
            "--run",
            str(run_dir),
            "--backend",
            backends,
            "--batch",
            batches,
            "--warmup",
            str(warmup),
            "--iters",
            str(iters),
            "--json",
            "--plot",
            str(results / f"{name}.png"),
        ]
        + (["--threads", str(threads)] if threads else [])
    )
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    report = json.loads(out)
    report["measured_on_quiet_machine"] = quiet  # not part of bld-bench/1: the script's note
    (results / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


# The contenders of the README's table: the Python runtime on onnxruntime ("cpu") and OpenVINO,
# the C++ runtime ("cpp", libbld through its C ABI), PyTorch eager and compiled; bf16 where the
# engines have it (OpenVINO, torch.autocast compiled); int8 where the bundle has int8 graphs.
FP32_BACKENDS = "cpu,cpp,openvino,torch,torch-compile"
BF16_BACKENDS = "openvino:bf16,torch-compile:bf16"
# PyTorch's int8 eager only: compiled, its dynamically quantized Linear layers recompiled in the
# timed rounds (p50 276 ms against eager's 37 ms at batch 1, torch 2.13).
INT8_BACKENDS = "cpu:int8,cpp:int8,openvino:int8,torch:int8"


def default_backends(bundle: Path) -> str:
    graphs = json.loads((bundle / "bld.json").read_text())["graphs"]
    return ",".join(
        [FP32_BACKENDS, BF16_BACKENDS] + ([INT8_BACKENDS] if "step_int8" in graphs else [])
    )


def torch_gemm_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of torch.matmul on [size, size] at `threads` threads (best of repeats)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best / 1e9


def machine_record(reports: dict[str, dict], threads: int) -> dict:
    """The machine of the table: CPU model, ISA flags, cores, and the fp32 GEMM peaks of numpy,
    onnxruntime (both from `bld bench`) and torch, at the benchmark's thread count."""
    first = next(iter(reports.values()))
    peaks: dict[str, float] = {}
    for report in reports.values():
        for engine in (report.get("gemm_peak") or {}).get("engines", []):
            peaks[engine["engine"]] = max(peaks.get(engine["engine"], 0.0), engine["gflops"])
    peaks["torch"] = torch_gemm_peak(threads)
    machine = dict(first["machine"])
    machine.pop("rss_scope", None)
    return {**machine, "threads": threads, "gemm_peak_gflops": peaks}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def _ratio(best: float | None, p50: float) -> str:
    return f"{best / p50:.2f}x" if best else "-"


def table(reports: dict[str, dict], machine: dict) -> str:
    """The README table: every contender per model and batch size. "vs best fp32 PyTorch": the
    faster of eager and compiled fp32 PyTorch's p50 over the row's (> 1: the row is faster);
    "vs PyTorch, same precision": the same against the PyTorch rows of the row's precision.
    GFLOP/s of the step graph against onnxruntime's own measured GEMM peak."""
    ort_peak = machine["gemm_peak_gflops"].get("onnxruntime")
    lines = [
        "| model | batch | contender | precision | images/s | p50 | p99/p50 | overhead "
        "| step GFLOP/s (% of ORT peak) | vs best fp32 PyTorch | vs PyTorch, same precision |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in reports.items():
        backends = {b["name"]: b for b in report["backends"]}
        for batch in report["settings"]["batches"]:
            rows = [r for r in report["results"] if r["batch"] == batch]
            torch_p50: dict[str, float] = {}  # precision -> the faster PyTorch row's p50
            for r in rows:
                b = backends[r["backend"]]
                if b["kind"] == "torch":
                    key = b.get("precision", "fp32")
                    torch_p50[key] = min(torch_p50.get(key, math.inf), r["latency"]["p50"])
            for r in rows:
                precision = backends[r["backend"]].get("precision", "fp32")
                p50, step_rate = r["latency"]["p50"], r["step_gflops_per_second"]
                cells = [
                    name,
                    str(batch),
                    r["backend"].split(":")[0],
                    precision,
                    f"{r['images_per_second']:.{1 if r['images_per_second'] >= 10 else 3}f}",
                    _ms(p50),
                    f"{r['latency']['p99'] / p50:.2f}",
                    f"{r['overhead_share']:.1%}",
                    "-"
                    if step_rate is None or not ort_peak
                    else f"{step_rate:.0f} ({step_rate / ort_peak:.0%})",
                    _ratio(torch_p50.get("fp32"), p50),
                    _ratio(torch_p50.get(precision), p50),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["gemm_peak_gflops"].items())
    isa = ", ".join(machine.get("isa", [])) or "not recorded"
    lines += [
        "",
        f"{machine['processor']} ({machine['usable_cores']} cores used, {machine['threads']} "
        f"threads for every contender; ISA: {isa}); "
        f"fp32 GEMM peak, GFLOP/s: {peaks}. K = {next(iter(reports.values()))['bundle']['steps']}"
        " steps. p50/p99: latency of a whole generation (initial draw, K steps, decode to uint8)"
        "; overhead: everything but the graph calls.",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CONFIGS),
        help="Run only this configuration (repeatable).",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="Contenders for `bld bench` (default: the fp32 and bf16 contenders, and the int8 "
        "ones where the bundle has int8 graphs).",
    )
    parser.add_argument("--batches", default=None, help="Override every configuration's batches.")
    parser.add_argument("--warmup", type=int, default=None, help="Override the warm-up rounds.")
    parser.add_argument("--iters", type=int, default=None, help="Override the timed rounds.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Threads for every backend (default: all usable cores). On a "
        "machine shared with other work, 1 thread is the steadier figure.",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=1200,
        help="Seconds to wait for a quiet machine before each benchmark.",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="Folder of the reports and table (default: benchmarks/results, the README's).",
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="Measure nothing: write table.md and machine.json from the reports in --results.",
    )
    args = parser.parse_args()
    if shutil.which("ps") is None:
        sys.exit("error: this script needs `ps` to see whether the machine is quiet")
    reports = {}
    for name in [] if args.table_only else args.only or CONFIGS:
        config = CONFIGS[name]
        bundle = ensure_bundle(name, config)
        if bundle is None:
            continue
        reports[name] = run_bench(
            args.results,
            name,
            bundle,
            config.run_dir,
            args.batches or config.batches,
            config.warmup if args.warmup is None else args.warmup,
            args.iters or config.iters,
            args.backends or default_backends(bundle),
            args.threads,
            args.max_wait,
        )
    # The table covers every report in results/ (<config>*.json, e.g. a single-batch run saved
    # as paper256-random-batch16-1thread.json), so `--only` refreshes just its own rows.
    for name in CONFIGS:
        for path in sorted(args.results.glob(f"{name}*.json")):
            reports.setdefault(path.stem, json.loads(path.read_text()))
    if not reports:
        sys.exit("error: nothing measured and no results to tabulate")
    threads = args.threads or next(iter(reports.values()))["settings"]["threads"]
    machine = machine_record(reports, threads)
    (args.results / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    text = table(reports, machine)
    (args.results / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
