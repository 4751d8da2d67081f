"""The runtime on arm64 (a Jetson's CPU) under QEMU user emulation, against x86.

scripts/arm64/setup.sh builds (once, cached in ~/.cache/bld/arm64) an arm64 Debian root with
the aarch64 wheels of the runtime's dependencies; here the project is installed from this
checkout into an arm64 venv with pip (torch-free, no extras), the C++ runtime is cross-built
for aarch64 (scripts/arm64/build_cpp.sh), and the same requests run on both architectures on
the tiny bundle exported on x86. `make arm64-check` runs this module alone.

Exact on both (bit for bit): the Philox words and uniforms, the draws given fixed
probabilities, packing and the .bldz file, PNG encoding of given pixels, samples.json, the
error lines. Measured, held as floors a little under what was measured (the graphs'
arithmetic differs between onnxruntime's ARM and x86 kernels, and a probability within an ulp
of its uniform flips a bit; docs/jetson.md and benchmarks/results/arm64_agreement.md have the
figures): the share of identical images, latents and bits, per step as well.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bld_runtime.cli import cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "arm64"))
import arm64 as a64  # noqa: E402

# Runs after the other tests (conftest.py) beside the C++ runtime's: it builds that too.
pytestmark = [pytest.mark.cpp, pytest.mark.slow]

# Floors, a little under the agreement measured on the tiny bundle (208 images: 52 seeds x
# guidance {0, 1.5} x temperature {1, 0.8}; QEMU 7.2 cortex-a76, onnxruntime 1.32): identical
# images 99.04% (2 images had one pixel 1 level apart), identical latents and bits 100%, at every
# step. benchmarks/results/arm64_agreement.md has the figures.
FLOOR = {"identical_images": 0.95, "identical_latents": 0.98, "identical_bits": 0.9999}
PNG_MISMATCHES = 2  # at most this many of a command's PNGs may differ in pixels (never in bytes)
SEEDS = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 1000, 2**32, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def arm() -> a64.Arm64:
    return a64.setup(sys.executable)


@pytest.fixture(scope="module")
def arm_py(arm, tmp_path_factory) -> Path:
    """The arm64 venv's python, the project installed from this checkout."""
    return arm.venv(tmp_path_factory.mktemp("arm64") / "venv", sys.executable)


@pytest.fixture(scope="module")
def arm_cpp(arm) -> Path:
    return arm.build_cpp()


@pytest.fixture(scope="module")
def x86_cpp() -> Path:
    """The x86 C++ build (`make cpp`, as tests/test_cpp_runtime.py builds it)."""
    a64.run(["make", "--no-print-directory", "cpp", f"PY={sys.executable}"], cwd=REPO)
    return REPO / "runtime" / "cpp" / "build"


def bld(arm: a64.Arm64, py: Path, *args) -> list:
    """argv of the arm64 venv's `bld` command."""
    if arm.mode == "binfmt":
        return [py.parent / "bld", *args]
    return [py, "-c", "import sys; sys.argv[0] = 'bld'; from bld_runtime.cli import main; main()",
            *args]  # fmt: skip


def x86_bld(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def same_pngs(a: Path, b: Path) -> tuple[int, int]:
    """(identical pixels, identical bytes) over the PNGs in a; bytes must be identical wherever
    the pixels are (PNG encoding is exact)."""
    pixels = files = 0
    for png in sorted(a.glob("*.png")):
        with Image.open(png) as x, Image.open(b / png.name) as y:
            equal = (x.mode, x.size) == (y.mode, y.size) and np.array_equal(
                np.asarray(x), np.asarray(y)
            )
        pixels += equal
        if equal:
            assert png.read_bytes() == (b / png.name).read_bytes(), png.name
            files += 1
    return pixels, files


def test_the_venv_is_arm64_torch_free_and_from_this_checkout(arm, arm_py):
    code = (
        "import importlib.util, platform, bld_runtime, onnxruntime;"
        "print(platform.machine(), importlib.util.find_spec('torch') is None,"
        " bld_runtime.__file__, onnxruntime.get_available_providers())"
    )
    out = arm.run([arm_py, "-c", code]).stdout.split()
    assert out[:2] == ["aarch64", "True"]
    assert out[2].startswith(str(arm_py.parents[1])), out  # installed in the venv, not the tree
    assert "CPUExecutionProvider" in " ".join(out[3:])


EXACT = """
import io, json, sys
import numpy as np
from bld_runtime import philox
from bld_runtime.bits import pack_bits, save_bits
from bld_runtime.images import save_png
out = sys.argv[1]
seeds = np.array([0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1], np.uint64)
words = philox.random_words(seeds, 7, 1027)
u = philox.uniforms(seeds, 2**40 + 3, 1027)
rng = np.random.default_rng(0)
p = rng.random((6, 1027), dtype=np.float32)
p[:, ::7] = u[:, ::7]  # u <= p exactly at the boundary
p[:, 1::7] = np.nextafter(u[:, 1::7], np.float32(0))
p[:, 2] = 0.0
p[:, 3] = 1.0
draws = philox.bernoulli(p, seeds, 2**40 + 3)
bits = rng.integers(0, 2, (3, 16, 12), dtype=np.uint8)
save_bits(out + "/bits.bldz", bits, (4, 4))
image = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
save_png(out + "/rgb.png", image)
save_png(out + "/gray.png", image[:, :, :1])
np.savez(out + "/exact.npz", words=words, u=u, p=p, draws=draws, packed=pack_bits(bits))
"""


def test_philox_draws_packing_and_png_are_bit_exact(arm, arm_py, arm_cpp, tmp_path):
    x86, arm_out = tmp_path / "x86", tmp_path / "arm"
    for folder in (x86, arm_out):
        folder.mkdir()
    (tmp_path / "exact.py").write_text(EXACT)
    a64.run([sys.executable, tmp_path / "exact.py", x86])
    arm.run([arm_py, tmp_path / "exact.py", arm_out])
    a, b = np.load(x86 / "exact.npz"), np.load(arm_out / "exact.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for name in ("bits.bldz", "rgb.png", "gray.png"):
        assert (x86 / name).read_bytes() == (arm_out / name).read_bytes(), name
    # the C++ side: Philox known answers, cuRAND mapping, uniforms, packing (Catch2)
    done = arm.run([arm_cpp / "tests" / "bld_unit_tests"], check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_bld_sample_encode_decode_inpaint(arm, arm_py, tiny_bundle, tmp_path):
    x86, arm_out = tmp_path / "x86", tmp_path / "arm"
    sample = ["sample", tiny_bundle, "--seed", 2**64 - 8, "-n", 16, "--class", "all",
              "--guidance", 1.5, "--temperature", 0.8]  # fmt: skip
    inpaint = ["--seed", 3, "--class", 2, "--guidance", 1.0]

    def both(args):
        """args(folder) on x86 (in-process) and on arm64, each with its own output folder."""
        x86_bld(*args(x86))
        arm.run(bld(arm, arm_py, *map(str, args(arm_out))))

    both(lambda out: [*sample, "-o", out / "sample"])
    pngs = sorted((x86 / "sample").glob("0*.png"))
    mask = np.zeros(np.asarray(Image.open(pngs[0])).shape[:2], np.uint8)
    mask[: mask.shape[0] // 2] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    both(lambda out: ["encode", tiny_bundle, *pngs, "-o", out / "enc.bldz"])
    both(lambda out: ["decode", tiny_bundle, x86 / "sample" / "bits.bldz", "-o", out / "dec"])
    both(lambda out: ["inpaint", tiny_bundle, pngs[0], "--mask", tmp_path / "mask.png",
                      *inpaint, "-o", out / "inpaint.png"])  # fmt: skip
    record = json.loads((arm_out / "sample" / "samples.json").read_text())
    assert record == json.loads((x86 / "sample" / "samples.json").read_text())
    assert record["status"] == "complete" and record["written"] == 16
    from bld_runtime.bits import load_bits

    for name in ("sample/bits.bldz", "enc.bldz"):
        a, b = load_bits(x86 / name), load_bits(arm_out / name)
        assert (a == b).mean() >= FLOOR["identical_bits"], name
        if (a == b).all():  # the packed file is exact
            assert (x86 / name).read_bytes() == (arm_out / name).read_bytes()
    pixels, _ = same_pngs(x86 / "sample", arm_out / "sample")
    assert pixels >= 17 - PNG_MISMATCHES  # 16 images and the grid
    pixels, _ = same_pngs(x86 / "dec", arm_out / "dec")
    assert pixels >= 16 - PNG_MISMATCHES
    same_pngs(x86, arm_out)  # the inpainted image: its bytes if its pixels agree


def test_generation_agrees_per_step_python_and_cpp(arm, arm_py, arm_cpp, tiny_bundle, tmp_path):
    requests = a64.grid(SEEDS, 10)
    spec = a64.write_spec(requests, tmp_path)
    x86, arm_out, arm_c = tmp_path / "x86", tmp_path / "arm-py", tmp_path / "arm-cpp"
    a64.run([sys.executable, a64.PROBE_PY, tiny_bundle, spec, x86])
    arm.run([arm_py, a64.PROBE_PY, tiny_bundle, spec, arm_out])
    arm_c.mkdir()  # bld-probe writes into an existing folder
    arm.run([arm_cpp / "tests" / "bld-probe", tiny_bundle, spec, arm_c])
    for other in (arm_out, arm_c):
        measured = a64.agreement(x86, other, requests)
        for key, floor in FLOOR.items():
            assert measured[key] >= floor, (other.name, key, measured)
        steps = measured["steps"]
        assert steps["identical_inputs"][0] == 1.0  # the seeded start
        assert min(steps["identical_bits"]) >= FLOOR["identical_bits"], steps
        assert measured["max_abs_diff_probs_step0"] < 1e-4, measured
    # the two arm64 runtimes: the C++ one reproduces the Python one on the same machine
    both = a64.agreement(arm_out, arm_c, requests)
    assert both["identical_bits"] == 1.0 and both["identical_images"] == 1.0, both


def test_cpp_sample_writes_the_files_x86_writes(arm, arm_cpp, x86_cpp, tiny_bundle, tmp_path):
    args = ["sample", tiny_bundle, "--seed", 2**64 - 8, "-n", 16, "--class", "all",
            "--guidance", 1.5, "--temperature", 0.8, "-o"]  # fmt: skip
    a64.run([x86_cpp / "bld-cpp", *args, tmp_path / "x86"])
    arm.run([arm_cpp / "bld-cpp", *args, tmp_path / "arm"])
    x86, arm_out = tmp_path / "x86", tmp_path / "arm"
    assert sorted(p.name for p in x86.iterdir()) == sorted(p.name for p in arm_out.iterdir())
    assert (x86 / "samples.json").read_bytes() == (arm_out / "samples.json").read_bytes()
    from bld_runtime.bits import load_bits

    a, b = load_bits(x86 / "bits.bldz"), load_bits(arm_out / "bits.bldz")
    assert (a == b).mean() >= FLOOR["identical_bits"]
    pixels, _ = same_pngs(x86, arm_out)
    assert pixels >= 17 - PNG_MISMATCHES


def broken(tiny_bundle: Path, where: Path, change) -> Path:
    bundle = where / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    change(bundle)
    return bundle


def edit(key, value):
    def change(bundle: Path):
        data = json.loads((bundle / "bld.json").read_text())
        node = data
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = value
        (bundle / "bld.json").write_text(json.dumps(data, indent=2))

    return change


def tamper(bundle: Path):
    data = bytearray((bundle / "step.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "step.onnx").write_bytes(bytes(data))


BAD = {
    "tampered graph": (tamper, []),
    "missing file": (lambda b: (b / "decoder.onnx").unlink(), []),
    "bad sha": (edit(["graphs", "step", "sha256"], "ABC"), []),
    "new schema": (edit(["schema_version"], 2), []),
    "seed too large": (None, ["--seed", str(2**64)]),
    "class too large": (None, ["--class", "10"]),
    "NaN guidance": (None, ["--guidance", "nan"]),
    "zero images": (None, ["-n", "0"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_errors_are_the_same_lines(arm, arm_py, arm_cpp, tiny_bundle, tmp_path, case):
    change, args = BAD[case]
    bundle = broken(tiny_bundle, tmp_path, change) if change else tiny_bundle
    result = CliRunner().invoke(cli, ["sample", str(bundle), *args, "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    for argv in (
        bld(arm, arm_py, "sample", bundle, *args, "-o", tmp_path / "py"),
        [arm_cpp / "bld-cpp", "sample", bundle, *args, "-o", tmp_path / "cpp"],
    ):
        done = arm.run(argv, check=False)
        assert (done.returncode, done.stderr) == (1, result.stderr), argv[0]
