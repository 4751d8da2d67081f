"""Reproduce the README's speed table: the runtime against PyTorch (eager and compiled), same run,
same machine, same request, in one `bld bench` run per model.

    python benchmarks/run_all.py                 # everything (tens of minutes on 2 cores)
    python benchmarks/run_all.py --only digits-random --batches 1,16

Configurations:
- demo            runs/digits/bundle, trained by `make demo` (skipped until it exists)
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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
RESULTS = REPO / "benchmarks" / "results"

# name -> (run directory, preset to create it from with random weights (None: trained), batches,
#          warmup, iters). The 256px model is ~93 GFLOP per image per step and its decoder ~250
#          GFLOP per image: one generation at batch 16 takes minutes on 2 cores, so few rounds
#          (the per-step figures still pool K = 16 steps per round).
CONFIGS = {
    "demo": (RUNS / "digits", None, "1,4,16", 2, 10),
    "digits-random": (RUNS / "bench" / "digits-random", "digits", "1,4,16", 2, 10),
    "paper256-random": (RUNS / "bench" / "paper256-random", "paper256", "1,16", 1, 1),
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


def ensure_bundle(name: str, run_dir: Path, preset_name: str | None) -> Path | None:
    bundle = run_dir / "bundle"
    if preset_name is not None and run_dir.exists() and stale(run_dir, preset_name):
        print(
            f"[{name}] {run_dir} was made from an older {preset_name!r} preset; recreating it",
            flush=True,
        )
        shutil.rmtree(run_dir)  # the script's own cache under runs/bench
    if (bundle / "bld.json").is_file():
        return bundle
    if preset_name is None:
        print(f"[{name}] {bundle} does not exist (run `make demo`); skipped", flush=True)
        return None
    if not (run_dir / "prior" / "model.safetensors").is_file():
        print(f"[{name}] creating a random-weight run at {run_dir}", flush=True)
        subprocess.run(
            command("bld", "bld_runtime.cli")
            + ["train", "init", "--preset", preset_name, "--run", str(run_dir)],
            check=True,
        )
    print(f"[{name}] exporting {bundle}", flush=True)
    subprocess.run(
        command("bld-export", "bld_export.cli")
        + ["onnx", str(run_dir), "-o", str(bundle), "--force"],
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
    RESULTS.mkdir(parents=True, exist_ok=True)
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
            str(RESULTS / f"{name}.png"),
        ]
        + (["--threads", str(threads)] if threads else [])
    )
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    report = json.loads(out)
    report["measured_on_quiet_machine"] = quiet  # not part of bld-bench/1: the script's note
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


# bld_bench.torch_contenders: eager and compiled TorchSampler
TORCH_ROWS = ("torch", "torch-compile")


def table(reports: dict[str, dict]) -> str:
    """The README table: the runtime ("cpu") against the PyTorch contenders per model and batch
    size; "vs best PyTorch" is the faster PyTorch row's p50 over the runtime's (> 1: the
    runtime is faster)."""
    lines = [
        "| model | threads | batch | runtime p50 | PyTorch eager p50 | PyTorch compiled p50 "
        "| vs best PyTorch | runtime overhead | step GFLOP/s (% of GEMM peak) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in reports.items():
        rows = {(r["backend"], r["batch"]): r for r in report["results"]}
        for batch in report["settings"]["batches"]:
            rt = rows.get(("cpu", batch))
            if rt is None:
                continue
            torch_rows = [rows.get((backend, batch)) for backend in TORCH_ROWS]
            best = min((r["latency"]["p50"] for r in torch_rows if r), default=None)
            cells = [
                name,
                str(report["settings"]["threads"]),
                str(batch),
                _ms(rt["latency"]["p50"]),
                *(_ms(r["latency"]["p50"]) if r else "-" for r in torch_rows),
                f"{best / rt['latency']['p50']:.2f}x" if best else "-",
                f"{rt['overhead_share']:.1%}",
                "-"
                if rt["gemm_peak_share"] is None
                else f"{rt['step_gflops_per_second']:.0f} ({rt['gemm_peak_share']:.0%})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if reports:
        first = next(iter(reports.values()))
        peaks = ", ".join(
            f"{r['gemm_peak']['gflops']:.0f} ({r['settings']['threads']} threads)"
            for r in reports.values()
            if r.get("gemm_peak")
        )
        lines += [
            "",
            f"{first['machine']['processor']}, K = {first['bundle']['steps']} steps; "
            f"measured fp32 GEMM peak, GFLOP/s: {peaks}. p50: median latency of a "
            "whole generation (initial draw, K steps, decode to uint8).",
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
        default="cpu," + ",".join(TORCH_ROWS),
        help="Contenders for `bld bench` (torch-reference: the reference sampler, for comparison).",
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
    args = parser.parse_args()
    if shutil.which("ps") is None:
        sys.exit("error: this script needs `ps` to see whether the machine is quiet")
    reports = {}
    for name in args.only or CONFIGS:
        run_dir, preset_name, batches, warmup, iters = CONFIGS[name]
        bundle = ensure_bundle(name, run_dir, preset_name)
        if bundle is None:
            continue
        reports[name] = run_bench(
            name,
            bundle,
            run_dir,
            args.batches or batches,
            warmup if args.warmup is None else args.warmup,
            args.iters or iters,
            args.backends,
            args.threads,
            args.max_wait,
        )
    # The table covers every report in results/ (<config>*.json, e.g. a single-batch run saved
    # as paper256-random-batch16-1thread.json), so `--only` refreshes just its own rows.
    for name in CONFIGS:
        for path in sorted(RESULTS.glob(f"{name}*.json")):
            reports.setdefault(path.stem, json.loads(path.read_text()))
    text = table(reports)
    (RESULTS / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
