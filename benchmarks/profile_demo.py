"""Where the time of one generation goes on the demo-sized model: ONNX Runtime's profiler on
the runtime's step and decoder graphs, PyTorch's profiler on the bench's torch contender.

    python benchmarks/profile_demo.py                      # digits-random, batches 1 and 16
    python benchmarks/profile_demo.py --run runs/digits --bundle runs/digits/bundle

One generation is K step-graph calls and one decoder call. Both sides run the same request
(seeds 0.., classes cycling, guidance 0, temperature 1) after a warm-up generation; time is
grouped by kind of operator, as a share of the wall time of the profiled generations:

- ONNX Runtime: kernel times of the step and decoder graphs' nodes by op type (its
  profiler's "Node" events); "session overhead" is the rest of each Run() call (input binding, the
  executor, allocations). The runtime's own Python loop (arguments, Philox draws, copies) is
  not in here: `bld bench` reports it as "overhead".
- PyTorch: self CPU time of each aten operator under torch.profiler; "Python and dispatch" is
  the rest of the wall time (the sampler's loop, module calls, the dispatcher).

Speed does not depend on the weights: the default run is `bld train init --preset digits`
(random weights), exported as run_all.py does. Writes benchmarks/results/profile-<name>.md and
prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from run_all import RESULTS, RUNS, ensure_bundle

# aten operators whose self time is reported under another name (the rest keep their own).
TORCH_NAMES = {
    "aten::addmm": "linear (addmm)", "aten::mm": "linear (mm)", "aten::bmm": "bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (SDPA kernel)",
    "aten::native_layer_norm": "layer norm", "aten::gelu": "gelu",
    "aten::mkldnn_convolution": "conv", "aten::native_group_norm": "group norm",
}
PHILOX_OPS = ("aten::bitwise_and", "aten::bitwise_xor", "aten::__rshift__", "aten::__lshift__",
              "aten::flip")
TOP = 12  # rows per table; the rest are summed as "other ops"


def request(batch: int, num_classes: int):
    seeds = np.arange(batch, dtype=np.uint64)
    classes = (np.arange(batch) % num_classes if num_classes else np.zeros(batch)).astype(np.int64)
    return seeds, classes


# --- ONNX Runtime ------------------------------------------------------------------------------

def ort_profile(bundle: Path, batch: int, threads: int, rounds: int) -> dict:
    import onnxruntime as ort

    manifest = json.loads((bundle / "bld.json").read_text())
    K = len(manifest["schedule"]["timesteps"])
    latent = manifest["latent"]
    L, C = latent["height"] * latent["width"], latent["bits"]
    _, classes = request(batch, manifest["classes"]["count"])
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (batch, L, C)).astype(np.float32)
    groups: dict[str, float] = defaultdict(float)
    wall = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for graph in ("step", "decoder"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, graph)
            so.log_severity_level = 3
            sessions[graph] = ort.InferenceSession(str(bundle / manifest["graphs"][graph]["file"]),
                                                   so, providers=["CPUExecutionProvider"])

        def generation():
            for i in range(K):
                sessions["step"].run(None, {
                    "bits": bits, "step": np.full(batch, i, np.int64), "class_label": classes,
                    "temperature": np.ones(batch, np.float32)})
            sessions["decoder"].run(None, {"bits": bits})

        generation()  # warm-up: its runs are dropped from the profile below
        start = time.perf_counter()
        for _ in range(rounds):
            generation()
        wall = time.perf_counter() - start
        warmup_runs = {"step": K, "decoder": 1}
        for graph, session in sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            runs = sorted((e for e in events if e.get("name") == "model_run"),
                          key=lambda e: e["ts"])[warmup_runs[graph]:]
            windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
            kernels = 0.0
            for e in events:
                if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                    continue
                if not any(a <= e["ts"] <= b for a, b in windows):
                    continue
                groups[f"{graph}: {e['args'].get('op_name', '?')}"] += e["dur"] * 1e-6
                kernels += e["dur"] * 1e-6
            groups[f"{graph}: session overhead"] += sum(b - a for a, b in windows) * 1e-6 - kernels
    return {"wall": wall / rounds, "groups": {k: v / rounds for k, v in groups.items()}}


# --- PyTorch -----------------------------------------------------------------------------------

def torch_profile(run_dir: Path, batch: int, threads: int, rounds: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bld_train.checkpoint import load_autoencoder, load_prior
    from bld_train.torch_sampler import TorchSampler

    torch.set_num_threads(threads)
    denoiser, cfg = load_prior(run_dir)
    sampler = TorchSampler(denoiser, load_autoencoder(run_dir))
    seeds, classes = request(batch, cfg.num_classes)
    sampler.generate(seeds, classes)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(rounds):
            sampler.generate(seeds, classes)
        wall = time.perf_counter() - start
    groups: dict[str, float] = defaultdict(float)
    inside = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total * 1e-6
        if not event.key.startswith("aten::"):
            continue
        group = ("Philox (int64 ops)" if event.key in PHILOX_OPS
                 else TORCH_NAMES.get(event.key, event.key))
        groups[group] += seconds
        inside += seconds
    groups["Python and dispatch"] = max(0.0, wall - inside)
    return {"wall": wall / rounds, "groups": {k: v / rounds for k, v in groups.items()}}


# --- report ------------------------------------------------------------------------------------

def section(title: str, result: dict) -> list[str]:
    wall = result["wall"]
    lines = [f"**{title}**: {wall * 1e3:.1f} ms per generation", "",
             "| where | ms | share |", "|---|---:|---:|"]
    ranked = sorted(result["groups"].items(), key=lambda kv: -kv[1])
    rest = sum(seconds for _, seconds in ranked[TOP:])
    for name, seconds in ranked[:TOP] + ([("other ops", rest)] if rest else []):
        lines.append(f"| {name} | {seconds * 1e3:.2f} | {seconds / wall:.1%} |")
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=RUNS / "bench" / "digits-random")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="Default: RUN/bundle, created (preset digits) if missing.")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="Profiled generations per batch.")
    args = parser.parse_args()
    bundle = args.bundle or ensure_bundle(args.run.name, args.run, "digits")
    lines = [f"# Profile: {bundle} ({args.threads} threads, {args.rounds} generations per batch)",
             ""]
    for batch in (int(b) for b in args.batches.split(",")):
        lines += [f"## batch {batch}", ""]
        lines += section("runtime graphs (ONNX Runtime)",
                         ort_profile(bundle, batch, args.threads, args.rounds))
        lines += section("PyTorch (the bench's `torch` contender, eager)",
                         torch_profile(args.run, batch, args.threads, args.rounds))
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{args.run.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
