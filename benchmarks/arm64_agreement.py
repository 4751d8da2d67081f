"""x86 vs ARM64 agreement of the runtime's outputs, Python and C++ runtimes, per step.

    python benchmarks/arm64_agreement.py [--bundle NAME=DIR ...] [--seeds N]

For each bundle (default: the tiny bundle, exported here from a fresh tiny run, and the demo's
runs/digits/bundle when it exists) the same traced requests (N seeds over the classes, for
each of guidance {0, 1.5} x temperature {1, 0.8}; 4N images) run through four runtimes: the
Python runtime on x86 (.venv) and on arm64 under QEMU (scripts/arm64: the cached arm64 root, a
venv with the project pip-installed from this checkout), the C++ runtime on x86
(runtime/cpp/build, `make cpp`) and cross-built for aarch64 (runtime/cpp/build-aarch64). It
reports for each pair the share of identical images, latents and bits, per step the share of
identical step inputs (images, bits), and the largest difference of the first step's
probabilities (both sides see the same input there).

Writes benchmarks/results/arm64_agreement.json and .md. Emulated onnxruntime is 150-500x
slower than native: this measures agreement, never speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "arm64"))
import arm64 as a64  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PAIRS = [
    ("python x86 vs arm64", "x86-py", "arm-py"),
    ("C++ x86 vs arm64", "x86-cpp", "arm-cpp"),
    ("x86: C++ vs Python", "x86-py", "x86-cpp"),
    ("arm64: C++ vs Python", "arm-py", "arm-cpp"),
]


def tiny_bundle(where: Path) -> Path:
    from bld_export.export import export_bundle
    from bld_train.train_autoencoder import train_autoencoder
    from bld_train.train_prior import train_prior

    run = where / "tiny_run"
    train_autoencoder(run, "tiny", progress=False)
    train_prior(run, progress=False)
    export_bundle(run, where / "tiny", fp16=True, force=True)
    return where / "tiny"


def measure(arm, arm_py, arm_cpp, name: str, bundle: Path, seeds: int, work: Path) -> dict:
    manifest = json.loads((bundle / "bld.json").read_text())
    classes = manifest["classes"]["count"]
    requests = a64.grid(range(seeds), classes)
    spec = a64.write_spec(requests, work / name)
    out = {key: work / name / key for key in ("x86-py", "x86-cpp", "arm-py", "arm-cpp")}
    seconds = {}
    x86_probe, x86_py = REPO / "runtime/cpp/build/tests/bld-probe", out["x86-py"]
    runs = {
        "x86-py": lambda: a64.run(a64.nice([sys.executable, a64.PROBE_PY, bundle, spec, x86_py])),
        "x86-cpp": lambda: a64.run(a64.nice([x86_probe, bundle, spec, out["x86-cpp"]])),
        "arm-py": lambda: arm.run([arm_py, a64.PROBE_PY, bundle, spec, out["arm-py"]]),
        "arm-cpp": lambda: arm.run([arm_cpp / "tests/bld-probe", bundle, spec, out["arm-cpp"]]),
    }
    for key, go in runs.items():
        if (out[key] / f"{requests[-1]['name']}.bits.npy").exists():  # --work reused
            print(f"{name}: {key} reused from {out[key]}", flush=True)
            continue
        out[key].mkdir(parents=True, exist_ok=True)  # bld-probe writes into an existing folder
        start = time.monotonic()
        go()
        seconds[key] = round(time.monotonic() - start, 1)
        print(f"{name}: {key} done in {seconds[key]} s", flush=True)
    return {
        "bundle": str(bundle),
        "classes": classes,
        "seeds_per_setting": seeds,
        "settings": [(r["guidance"][0], r["temperature"][0]) for r in requests],
        "steps": manifest["schedule"]["sampling_steps"],
        "latent": manifest["latent"],
        "image": manifest["image"],
        "seconds": seconds,
        "pairs": {label: a64.agreement(out[a], out[b], requests) for label, a, b in PAIRS},
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def markdown(report: dict) -> str:
    lines = [
        "# x86 vs ARM64 agreement",
        "",
        f"Measured {report['date']} by `benchmarks/arm64_agreement.py`: x86 = {report['x86']}; "
        f"ARM64 = {report['arm64']}. Each bundle: {report['settings']}.",
        "",
        "| bundle | pair | images | identical images | identical latents | identical bits "
        "| identical pixels | max pixel diff | max abs diff of step-0 probs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report["bundles"].items():
        for label, m in r["pairs"].items():
            lines.append(
                f"| {name} | {label} | {m['images']} | {m['identical_images']:.2%} "
                f"| {m['identical_latents']:.2%} | {m['identical_bits']:.5%} "
                f"| {m['identical_pixels']:.5%} | {m['max_abs_diff_pixels']} "
                f"| {m['max_abs_diff_probs_step0']:.2g} |"
            )
    lines += ["", "Per step (the input of step k), python x86 vs arm64 and C++ x86 vs arm64:", ""]
    for name, r in report["bundles"].items():
        for label in ("python x86 vs arm64", "C++ x86 vs arm64"):
            if label not in r["pairs"]:
                continue
            steps = r["pairs"][label]["steps"]
            images = " ".join(f"{v:.3f}" for v in steps["identical_inputs"])
            bits = " ".join(f"{v:.5f}" for v in steps["identical_bits"])
            lines += [f"- {name}, {label}: identical inputs {images}; identical bits {bits}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--seeds", type=int, default=64, help="seeds per setting (4 settings)")
    parser.add_argument("--arm-python", help="an arm64 venv's python to reuse (Arm64.venv)")
    parser.add_argument("--arm-build", help="a cross build to reuse (scripts/arm64/build_cpp.sh)")
    parser.add_argument("--work", help="working folder; outputs already there are reused")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other bundles of the results file"
    )
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bld-arm64-"))
    bundles = dict(b.split("=", 1) for b in args.bundle)
    if not bundles:
        bundles["tiny"] = str(tiny_bundle(work))  # a fresh tiny run (seconds to train)
        if (REPO / "runs/digits/bundle/bld.json").exists():
            bundles["digits"] = str(REPO / "runs/digits/bundle")
    start = time.monotonic()
    arm = a64.setup(sys.executable)
    setup_s = time.monotonic() - start
    arm_py = Path(args.arm_python) if args.arm_python else arm.venv(work / "venv", sys.executable)
    arm_cpp = Path(args.arm_build) if args.arm_build else arm.build_cpp()
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True)
    import onnxruntime

    report = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "x86": f"{cpu_model()}, onnxruntime {onnxruntime.__version__}",
        "arm64": f"{qemu.stdout.splitlines()[0]} user emulation, QEMU_CPU={a64.QEMU_CPU}, "
        f"{arm.mode}, the same onnxruntime's aarch64 wheel",
        "settings": "N seeds (per bundle) x guidance (0, 1.5) x temperature (1, 0.8), classes "
        "cycling; fp32, CPU execution provider",
        "setup_seconds_this_run": round(setup_s, 1),
        "bundles": {},
    }
    if args.merge and (RESULTS / "arm64_agreement.json").exists():
        report["bundles"] = json.loads((RESULTS / "arm64_agreement.json").read_text())["bundles"]
    for name, bundle in bundles.items():
        report["bundles"][name] = measure(
            arm, arm_py, arm_cpp, name, Path(bundle), args.seeds, work
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arm64_agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "arm64_agreement.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
