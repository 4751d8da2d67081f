"""Where the time of one generation goes on the demo-sized model: ONNX Runtime's profiler on
the runtime's step and decoder graphs, PyTorch's profiler on the bench's torch contender.

    python benchmarks/profile_demo.py                      # digits-random, batches 1 and 16
    python benchmarks/profile_demo.py --run runs/digits --bundle runs/digits/bundle

One generation is K step-graph calls and one decoder call. Both sides run the same request
(seeds 0.., classes cycling, guidance 0, temperature 1) after a warm-up generation; time is
given per operator:

- ONNX Runtime: kernel times of the step and decoder graphs' nodes by op type (its
  profiler's "Node" events); what lies outside them is the session's own work per Run()
  (binding, the executor, allocations, waking its threads). The runtime's Python loop
  (arguments, Philox draws, copies) is not in here: `bld bench` reports it as "overhead".
- PyTorch: self CPU time of each aten operator under torch.profiler; what lies outside them is
  Python (the sampler's loop, module calls) and the dispatcher.

Wall times come from unprofiled generations; the profilers' own cost inflates short operators,
so shares of operator time are the figures to read.

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
    "aten::addmm": "linear (addmm)",
    "aten::mm": "linear (mm)",
    "aten::bmm": "bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (SDPA kernel)",
    "aten::native_layer_norm": "layer norm",
    "aten::gelu": "gelu",
    "aten::mkldnn_convolution": "conv",
    "aten::native_group_norm": "group norm",
}
SHAPE_OPS = {
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
    "Concat",
    "Gather",
    "GatherND",
    "GatherElements",
    "Shape",
    "Cast",
    "Expand",
    "Identity",
}
SHAPE_OPS_NAME = "shape and layout ops (Reshape, Transpose, Squeeze, Split, Gather, ...)"
PHILOX_OPS = (
    "aten::bitwise_and",
    "aten::bitwise_xor",
    "aten::__rshift__",
    "aten::__lshift__",
    "aten::flip",
)
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
    bits = np.random.default_rng(0).integers(0, 2, (batch, L, C)).astype(np.float32)
    feeds = [
        {
            "bits": bits,
            "step": np.full(batch, i, np.int64),
            "class_label": classes,
            "temperature": np.ones(batch, np.float32),
        }
        for i in range(K)
    ]

    def sessions(profile_dir: str | None) -> dict:
        out = {}
        for graph in ("step", "decoder"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.log_severity_level = 3
            if profile_dir:
                so.enable_profiling = True
                so.profile_file_prefix = os.path.join(profile_dir, graph)
            out[graph] = ort.InferenceSession(
                str(bundle / manifest["graphs"][graph]["file"]),
                so,
                providers=["CPUExecutionProvider"],
            )
        return out

    def generation(s: dict) -> None:
        for feed in feeds:
            s["step"].run(None, feed)
        s["decoder"].run(None, {"bits": bits})

    plain = sessions(None)
    wall = timed_generations(lambda: generation(plain), rounds)
    groups: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        profiled = sessions(tmp)
        generation(profiled)  # warm-up: its runs are dropped below
        for _ in range(rounds):
            generation(profiled)
        warmup_runs = {"step": K, "decoder": 1}
        for graph, session in profiled.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            runs = sorted(
                (e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"]
            )[warmup_runs[graph] :]
            windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
            for e in events:
                if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                    continue
                if any(a <= e["ts"] <= b for a, b in windows):
                    op = e["args"].get("op_name", "?")
                    name = SHAPE_OPS_NAME if op in SHAPE_OPS else op
                    groups[f"{graph}: {name}"] += e["dur"] * 1e-6 / rounds
    return {"wall": wall, "groups": dict(groups)}


def timed_generations(generate, rounds: int) -> float:
    """Seconds per generation, unprofiled, after one warm-up generation."""
    generate()
    start = time.perf_counter()
    for _ in range(rounds):
        generate()
    return (time.perf_counter() - start) / rounds


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
    wall = timed_generations(lambda: sampler.generate(seeds, classes), rounds)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            sampler.generate(seeds, classes)
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            name = (
                "Philox (int64 ops)"
                if event.key in PHILOX_OPS
                else TORCH_NAMES.get(event.key, event.key)
            )
            groups[name] += event.self_cpu_time_total * 1e-6 / rounds
    return {"wall": wall, "groups": dict(groups)}


# --- report ------------------------------------------------------------------------------------


def section(title: str, result: dict) -> list[str]:
    """Operator time as measured under the profiler; the wall time and what lies outside the
    operators from unprofiled runs (the profilers' own cost inflates short operators)."""
    wall, groups = result["wall"], result["groups"]
    inside = sum(groups.values())
    lines = [
        f"**{title}**: {wall * 1e3:.1f} ms per generation (unprofiled); operators "
        f"{inside * 1e3:.1f} ms under the profiler, so about "
        f"{max(0.0, wall - inside) * 1e3:.1f} ms ({max(0.0, 1 - inside / wall):.0%}) "
        "outside them",
        "",
        "| operator | ms | share of operator time |",
        "|---|---:|---:|",
    ]
    ranked = sorted(groups.items(), key=lambda kv: -kv[1])
    rest = sum(seconds for _, seconds in ranked[TOP:])
    for name, seconds in ranked[:TOP] + ([("other operators", rest)] if rest else []):
        lines.append(f"| {name} | {seconds * 1e3:.2f} | {seconds / inside:.1%} |")
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=RUNS / "bench" / "digits-random")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="Default: RUN/bundle, created (preset digits) if missing.",
    )
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="Profiled generations per batch.")
    args = parser.parse_args()
    bundle = args.bundle or ensure_bundle(args.run.name, args.run, "digits")
    lines = [
        f"# Profile: {bundle} ({args.threads} threads, {args.rounds} generations per batch)",
        "",
    ]
    for batch in (int(b) for b in args.batches.split(",")):
        lines += [f"## batch {batch}", ""]
        lines += section(
            "runtime graphs (ONNX Runtime)", ort_profile(bundle, batch, args.threads, args.rounds)
        )
        lines += section(
            "PyTorch (the bench's `torch` contender, eager)",
            torch_profile(args.run, batch, args.threads, args.rounds),
        )
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{args.run.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
