"""The runtime on arm64 under QEMU user emulation: set-up, install, runs, agreement.

Used by tests/test_arm64.py (`make arm64-check`, and CI through `make test`) and by
benchmarks/arm64_agreement.py. Everything heavy runs at nice 10.

- `setup()`: scripts/arm64/setup.sh (the cached arm64 root; see there) -> Arm64;
- `Arm64.venv()`: a venv of the root's python3 with --system-site-packages (the aarch64 wheels
  of numpy, onnxruntime, pillow, click and rich sit there, as JetPack or pip put them on a
  Jetson), and the project installed into it from the checkout with pip: torch-free, no extras;
- `Arm64.build_cpp()`: scripts/arm64/build_cpp.sh (the cross-built C++ runtime);
- `grid()`, `agreement()`: the requests and the measure of x86-vs-arm64 agreement.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
QEMU_CPU = "cortex-a76"  # ARMv8.2 without SVE/SME, like a Jetson Orin's Cortex-A78AE
PROBE_PY = HERE / "probe_py.py"


def nice(argv: list[str]) -> list[str]:
    return ["nice", "-n", "10", *argv]


def run(argv, env=None, timeout=1800, check=True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if check and done.returncode:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@dataclass
class Arm64:
    root: Path
    mode: str  # "binfmt": aarch64 programs start directly; "explicit": via qemu-aarch64-static

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "QEMU_LD_PREFIX": str(self.root), "QEMU_CPU": QEMU_CPU}
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the x86 side's
            env.pop(key, None)
        return env

    def cmd(self, argv) -> list[str]:
        """argv for an aarch64 program (argv[0] an ELF or a script with an aarch64 #!)."""
        argv = [str(a) for a in argv]
        return nice(argv if self.mode == "binfmt" else ["qemu-aarch64-static", *argv])

    def run(self, argv, check=True, **kwargs) -> subprocess.CompletedProcess:
        return run(self.cmd(argv), env=self.env, check=check, **kwargs)

    def venv(self, dest: Path, python: str) -> Path:
        """A venv at `dest` with the project installed from this checkout; its python."""
        shutil.rmtree(dest, ignore_errors=True)
        # --without-pip: pip comes from the system site-packages, as python3-pip would
        self.run([self.root / "usr/bin/python3", "-m", "venv", "--system-site-packages",
                  "--without-pip", dest])  # fmt: skip
        py = dest / "bin" / "python"
        src = dest / "src"  # the checkout's files (tracked and new, not ignored), built there
        files = run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO).stdout
        for name in filter(None, files.split("\0")):
            if (REPO / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, src / name)
        if self.mode == "binfmt":  # pip on the arm64 python builds and installs, as on a Jetson
            target = src
        else:  # without binfmt pip cannot start the build backend: the host builds the wheel,
            # without the compiled draws (they would be the host's; the arm64 runtime draws
            # with numpy, as it does where the arm64 root has no C compiler)
            run([python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                 dest / "wheel", src], env=os.environ | {"BLD_PURE_PYTHON": "1"})  # fmt: skip
            target = next((dest / "wheel").glob("bld-*.whl"))
        self.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                  "--no-index", target])  # fmt: skip
        return py

    def build_cpp(self, build: Path | None = None) -> Path:
        argv = [HERE / "build_cpp.sh", self.root]
        if build is not None:
            argv.append(build)
        return Path(run(argv).stdout.strip().splitlines()[-1])


def setup(python: str) -> Arm64:
    done = run([HERE / "setup.sh", "--python", python])
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Arm64(Path(values["ROOT"]), values["MODE"])


# --- requests and agreement ------------------------------------------------------------------


def grid(seeds, num_classes: int, guidance=(0.0, 1.5), temperature=(1.0, 0.8)) -> list[dict]:
    """One traced request per (guidance, temperature), the seeds over the classes."""
    seeds = [int(s) for s in seeds]
    return [
        {
            "name": f"g{g}_t{t}",
            "seeds": seeds,
            "classes": [i % num_classes for i in range(len(seeds))],
            "guidance": [g],
            "temperature": [t],
            "trace": True,
        }
        for g in guidance
        for t in temperature
    ]


def write_spec(requests: list[dict], out: Path, options: dict | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "spec.json"
    spec.write_text(json.dumps({"options": options or {}, "requests": requests}))
    return spec


def agreement(a: Path, b: Path, requests: list[dict]) -> dict:
    """How far the outputs in folders a and b (probe layout) agree, over all requests.

    identical_images/latents: the share of images whose pixels/final bits are all identical;
    identical_bits/pixels: the share of identical bits/pixels; max_abs_diff_pixels; steps: per
    sampling step, the share of images whose step input is identical and the share of identical
    input bits (step 0 is the seeded start: always 1); max_abs_diff_probs_step0: the largest
    difference of the first step's probabilities (the same input on both sides)."""
    same_img = same_lat = total = 0
    same_bits = bits = 0
    step_same, step_bits, step_all = None, None, 0
    max_dp0 = 0.0
    same_px = pixels = max_px = 0
    for request in requests:
        name = request["name"]
        ia, ib = np.load(a / f"{name}.images.npy"), np.load(b / f"{name}.images.npy")
        ba, bb = np.load(a / f"{name}.bits.npy"), np.load(b / f"{name}.bits.npy")
        n = len(ba)
        total += n
        same_img += int((ia == ib).reshape(n, -1).all(1).sum())
        same_lat += int((ba == bb).reshape(n, -1).all(1).sum())
        same_bits += int((ba == bb).sum())
        same_px += int((ia == ib).sum())
        pixels += ia.size
        max_px = max(max_px, int(np.abs(ia.astype(np.int16) - ib).max()))
        bits += ba.size
        if (a / f"{name}.states.npy").exists():
            sa, sb = np.load(a / f"{name}.states.npy"), np.load(b / f"{name}.states.npy")
            k = sa.shape[0]
            eq = (sa == sb).reshape(k, n, -1)
            if step_same is None:
                step_same, step_bits = np.zeros(k), np.zeros(k)
            step_same += eq.all(2).sum(1)
            step_bits += eq.mean(2).sum(1)
            step_all += n
            pa, pb = np.load(a / f"{name}.probs.npy"), np.load(b / f"{name}.probs.npy")
            max_dp0 = max(max_dp0, float(np.abs(pa[0] - pb[0]).max()))
    out = {
        "images": total,
        "identical_images": same_img / total,
        "identical_latents": same_lat / total,
        "identical_bits": same_bits / bits,
        "identical_pixels": same_px / pixels,
        "max_abs_diff_pixels": max_px,
    }
    if step_same is not None:
        out["steps"] = {
            "identical_inputs": (step_same / step_all).round(6).tolist(),
            "identical_bits": (step_bits / step_all).round(8).tolist(),
        }
        out["max_abs_diff_probs_step0"] = max_dp0
    return out
