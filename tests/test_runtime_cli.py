"""The `bld` CLI of the runtime: sample/encode/decode/inpaint, and every request error.

Each error must print `error: <message>` (no traceback), exit 1 and leave no output file.
"""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bld_runtime import cli as cli_module
from bld_runtime.bits import load_bits, save_bits
from bld_runtime.cli import cli
from bld_runtime.images import load_png, save_png
from bld_runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def bld(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_error(result, message, *absent):
    """Exit 1, one `error:` line containing `message`, no traceback, none of `absent` exist."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    for path in absent:
        assert not path.exists(), f"{path} was left behind"
        leftovers = list(path.parent.glob(f".{path.name}*"))
        assert leftovers == [], f"temporary files left: {leftovers}"


@pytest.fixture
def digit_png(pipe, tmp_path):
    path = tmp_path / "digit.png"
    save_png(path, pipe.generate(n=1, seeds=3, classes=7).images[0])
    return path


# --- what the commands write -------------------------------------------------------------


def test_sample_writes_pngs_bits_and_grid(pipe, tiny_bundle, tmp_path):
    out = tmp_path / "samples"
    result = bld(
        "sample",
        tiny_bundle,
        "--seed",
        12,
        "-n",
        12,
        "--class",
        "all",
        "--guidance",
        1.0,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == (
        [f"{i:05d}.png" for i in range(12)] + ["bits.bldz", "grid.png", "samples.json"]
    )
    want = pipe.generate(n=12, seeds=12, classes=np.arange(12) % 10, guidance=1.0)
    latent = pipe.manifest.latent
    np.testing.assert_array_equal(
        load_bits(out / "bits.bldz", (latent.height, latent.width, latent.bits)), want.bits
    )
    H, W, ch = pipe.image_shape
    for i in (0, 11):
        np.testing.assert_array_equal(load_png(out / f"{i:05d}.png", H, W, ch), want.images[i])
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[1] > 9 * W  # one column per class


def test_encode_then_decode_through_files(pipe, tiny_bundle, digit_png, tmp_path):
    for suffix in (".bldz", ".npy"):
        bits_file = tmp_path / f"bits{suffix}"
        result = bld("encode", tiny_bundle, digit_png, digit_png, "-o", bits_file)
        assert result.exit_code == 0, result.output
        latent = pipe.manifest.latent
        bits = load_bits(bits_file, (latent.height, latent.width, latent.bits))
        H, W, ch = pipe.image_shape
        image = load_png(digit_png, H, W, ch)
        np.testing.assert_array_equal(bits, pipe.encode(np.stack([image, image])))
        out = tmp_path / f"decoded{suffix}"
        result = bld("decode", tiny_bundle, bits_file, "-o", out)
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(load_png(out / "00001.png", H, W, ch), pipe.decode(bits)[1])
    result = bld("encode", tiny_bundle, digit_png, "--seed", 5, "-o", tmp_path / "s.bldz")
    assert result.exit_code == 0, result.output
    latent = pipe.manifest.latent
    seeded = load_bits(tmp_path / "s.bldz", (latent.height, latent.width, latent.bits))
    np.testing.assert_array_equal(seeded, pipe.encode(image[None], seed=5))


def test_inpaint_writes_one_png(pipe, tiny_bundle, digit_png, tmp_path):
    H, W, ch = pipe.image_shape
    mask = np.zeros((H, W), np.uint8)
    mask[H // 2 :] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "inpainted.png"
    result = bld(
        "inpaint",
        tiny_bundle,
        digit_png,
        "--mask",
        tmp_path / "mask.png",
        "--seed",
        4,
        "--class",
        7,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    want = pipe.inpaint(load_png(digit_png, H, W, ch), mask >= 128, seed=4, classes=7)
    np.testing.assert_array_equal(load_png(out, H, W, ch), want.images[0])


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seed", "-1"], "--seed must be an integer in [0, 2^64), got '-1'"),
        (["--seed", str(2**64)], f"--seed must be an integer in [0, 2^64), got '{2**64}'"),
        (["--seed", "1.5"], "--seed must be an integer in [0, 2^64), got '1.5'"),
        (["--seed", "seven"], "--seed must be an integer in [0, 2^64), got 'seven'"),
        (["--class", "10"], "class 10 is out of range: this bundle has classes 0..9"),
        (["--class", "-2"], "class -2 is out of range"),
        (["--class", "cat"], "--class must be a class index, 'all' or 'none', got 'cat'"),
        (["--guidance", "nan"], "guidance must be finite and >= 0, got nan"),
        (["--guidance", "inf"], "guidance must be finite and >= 0, got inf"),
        (["--guidance", "-1"], "guidance must be finite and >= 0, got -1"),
        (["--temperature", "0"], "temperature must be finite and > 0, got 0"),
        (["--temperature", "-0.5"], "temperature must be finite and > 0, got -0.5"),
        (["--temperature", "nan"], "temperature must be finite and > 0, got nan"),
        (["-n", "0"], "Invalid value for '-n': 0 is not in the range x>=1"),
        (["-n", "65", "--no-chunk"], "batch size 65 is above this bundle's max_batch of 64"),
        (["-n", "two"], "Invalid value for '-n': 'two' is not a valid integer"),
        (["--backend", "metal"], "Invalid value for '--backend'"),
        (["--threads", "-1"], "Invalid value for '--threads': -1 is not in the range x>=0"),
        (["--threads", "1000"], "intra_op_threads is 1000, more than the"),
        (["--dla", "0"], "--dla applies to --backend tensorrt only"),
        (
            ["--dla", "-1", "--backend", "tensorrt"],
            "Invalid value for '--dla': -1 is not in the range x>=0",
        ),
        (["--rebuild-if-stale"], "--rebuild-if-stale applies to --backend tensorrt only"),
        (
            ["--engine-cache", "somewhere"],
            "--engine-cache applies to --backend tensorrt and tensorrt-ep",
        ),
    ],
)
def test_sample_errors(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "out"
    assert_error(bld("sample", tiny_bundle, *args, "-o", out), message, out)


def test_missing_bundle_and_unavailable_backend(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert_error(bld("sample", tmp_path / "nope", "-o", out), "bundle directory", out)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert_error(
            bld("sample", tiny_bundle, "--backend", "cuda", "-o", out),
            "backend 'cuda' needs onnxruntime's CUDAExecutionProvider",
            out,
        )


def test_encode_errors(pipe, tiny_bundle, digit_png, tmp_path):
    H, W, _ = pipe.image_shape
    big, rgb = tmp_path / "big.png", tmp_path / "rgb.png"
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(big)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    out = tmp_path / "bits.bldz"
    assert_error(
        bld("encode", tiny_bundle, digit_png, big, "-o", out),
        f"image {big} is {W}x{H + 2}; it must be {W}x{H}",
        out,
    )
    assert_error(
        bld("encode", tiny_bundle, rgb, "-o", out),
        f"image {rgb} has mode RGB; this bundle needs L images",
        out,
    )
    assert_error(
        bld("encode", tiny_bundle, *[digit_png] * 65, "--no-chunk", "-o", out),
        "batch size 65 is above this bundle's max_batch of 64",
        out,
    )
    assert_error(
        bld("encode", tiny_bundle, digit_png, "--seed", "-3", "-o", out),
        "--seed must be an integer in [0, 2^64), got '-3'",
        out,
    )
    txt = tmp_path / "bits.txt"
    assert_error(
        bld("encode", tiny_bundle, digit_png, "-o", txt), "-o must end in .bldz or .npy", txt
    )


def test_decode_errors(pipe, tiny_bundle, tmp_path):
    latent = pipe.manifest.latent
    good = tmp_path / "good.bldz"
    save_bits(good, np.ones((2,) + pipe.latent_shape, np.uint8), (latent.height, latent.width))
    data = bytearray(good.read_bytes())
    out = tmp_path / "out"

    corrupt = tmp_path / "corrupt.bldz"
    data[-1] ^= 0x01
    corrupt.write_bytes(bytes(data))
    assert_error(
        bld("decode", tiny_bundle, corrupt, "-o", out), "is corrupt: the payload's crc32", out
    )

    truncated = tmp_path / "truncated.bldz"
    truncated.write_bytes(bytes(data[:-5]))
    assert_error(bld("decode", tiny_bundle, truncated, "-o", out), "is truncated", out)

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"definitely not numpy")
    assert_error(bld("decode", tiny_bundle, garbage, "-o", out), "is not a readable .npy file", out)

    other = tmp_path / "other.bldz"
    save_bits(other, np.ones((1, 4, 8), np.uint8), (2, 2))
    assert_error(
        bld("decode", tiny_bundle, other, "-o", out),
        "holds 2x2x8 latents but the bundle expects",
        out,
    )

    many = tmp_path / "many.bldz"
    save_bits(many, np.zeros((65,) + pipe.latent_shape, np.uint8), (latent.height, latent.width))
    assert_error(
        bld("decode", tiny_bundle, many, "--no-chunk", "-o", out),
        "batch size 65 is above this bundle's max_batch of 64",
        out,
    )


def test_inpaint_errors(pipe, tiny_bundle, digit_png, tmp_path):
    H, W, _ = pipe.image_shape
    small = tmp_path / "small_mask.png"
    Image.fromarray(np.zeros((H // 2, W), np.uint8)).save(small)
    rgba = tmp_path / "rgba_mask.png"
    Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(rgba)
    out = tmp_path / "out.png"
    assert_error(
        bld("inpaint", tiny_bundle, digit_png, "--mask", small, "-o", out),
        f"mask {small} is {W}x{H // 2}; it must be {W}x{H}",
        out,
    )
    assert_error(
        bld("inpaint", tiny_bundle, digit_png, "--mask", rgba, "-o", out),
        f"mask {rgba} has mode RGBA",
        out,
    )
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(mask)
    assert_error(
        bld("inpaint", tiny_bundle, digit_png, "--mask", mask, "--temperature", "0", "-o", out),
        "temperature must be finite and > 0",
        out,
    )


def test_a_real_process_exits_1_without_a_traceback(tiny_bundle, tmp_path, subprocess_env):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bld_runtime.cli",
            "sample",
            str(tiny_bundle),
            "--seed",
            "-5",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --seed must be an integer in [0, 2^64), got '-5'"
    assert not out.exists()


# --- plugin commands ---------------------------------------------------------------------


def test_plugin_commands_load_lazily(tmp_path, monkeypatch):
    (tmp_path / "fake_bld_plugin.py").write_text(
        "import click\n"
        "@click.command()\n"
        "def hello():\n"
        "    '''Say hello.'''\n"
        "    click.echo('hello from the plugin')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        metadata.EntryPoint("hello", "fake_bld_plugin:hello", "bld.commands"),
        metadata.EntryPoint("broken", "no_such_module_xyz:cmd", "bld.commands"),
        metadata.EntryPoint("sample", "fake_bld_plugin:hello", "bld.commands"),
    ]
    fake = types.SimpleNamespace(
        entry_points=lambda group: [p for p in points if p.group == group],
        EntryPoint=metadata.EntryPoint,
    )
    monkeypatch.setattr(cli_module, "metadata", fake)

    result = bld("--help")
    assert result.exit_code == 0
    assert "hello" in result.output and "Say hello." in result.output  # its own description
    assert (
        "broken" in result.output and "(needs no_such_module_xyz, not installed)" in result.output
    )
    result = bld("hello")
    assert result.exit_code == 0 and "hello from the plugin" in result.output
    assert "Generate images" in bld("sample", "--help").output  # built-ins win over plugins
    assert_error(
        bld("broken"),
        "`bld broken` comes from no_such_module_xyz:cmd, which cannot be imported here",
    )
    assert_error(bld("nosuchcommand"), "No such command 'nosuchcommand'")


def test_encode_decode_encode_through_files_gives_the_same_bits(
    pipe, tiny_bundle, digit_png, tmp_path
):
    """--canonical: encoding a decoded image gives its bits back exactly."""
    latent = pipe.manifest.latent
    shape = (latent.height, latent.width, latent.bits)
    result = bld("encode", tiny_bundle, digit_png, "--canonical", "-o", tmp_path / "a.bldz")
    assert result.exit_code == 0 and "note:" not in result.output, result.output  # it settled
    assert bld("decode", tiny_bundle, tmp_path / "a.bldz", "-o", tmp_path / "a").exit_code == 0
    result = bld(
        "encode",
        tiny_bundle,
        tmp_path / "a" / "00000.png",
        "--canonical",
        "-o",
        tmp_path / "b.bldz",
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        load_bits(tmp_path / "b.bldz", shape), load_bits(tmp_path / "a.bldz", shape)
    )
    result = bld("encode", tiny_bundle, digit_png, "-o", tmp_path / "raw.bldz")  # the default
    assert result.exit_code == 0, result.output
    H, W, ch = pipe.image_shape
    probs = pipe.encode_probs(load_png(digit_png, H, W, ch)[None])
    np.testing.assert_array_equal(
        load_bits(tmp_path / "raw.bldz", shape), (probs > 0.5).astype(np.uint8)
    )


def test_encode_notes_latents_that_did_not_settle(pipe, tiny_bundle, tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, pipe.image_shape, dtype=np.uint8)
    save_png(tmp_path / "noise.png", noise)
    result = bld(
        "encode",
        tiny_bundle,
        tmp_path / "noise.png",
        "--canonical",
        "--rounds",
        1,
        "-o",
        tmp_path / "n.bldz",
    )
    assert result.exit_code == 0, result.output
    assert "note: 1 of 1 latents did not settle" in result.stderr
    assert (tmp_path / "n.bldz").is_file()


def test_encode_help_states_the_runtime_default_rounds():
    from bld_runtime.pipeline import CANONICAL_ROUNDS

    result = bld("encode", "--help")
    assert result.exit_code == 0
    assert f"[default: {CANONICAL_ROUNDS}]" in " ".join(result.output.split())


def test_progress_counts_steps_whether_called_per_step_or_once_per_chunk():
    """A backend that replays all K steps as one CUDA graph calls back once per chunk with
    step = K; the bar advances by the steps done since the last call either way."""
    advanced = []
    progress = cli_module.Progress(3 * 16, "sampling")
    progress.advance = advanced.append
    for step in range(1, 17):  # a chunk step by step
        progress(step, 16, None)
    progress(16, 16, None)  # two chunks as CUDA graphs
    progress(16, 16, None)
    assert advanced == [1] * 16 + [16, 16]


@pytest.mark.parametrize("script", ["bld", "bld-export"])
def test_version_and_short_help_on_every_cli(script):
    """`--version` names the package, the bundle format and onnxruntime, exit 0; `-h` is help,
    at the top and on a subcommand (the console scripts, as a user's shell runs them)."""
    exe = Path(sys.executable).with_name(script)
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{script} {metadata.version('bld')} (bundle format bld-bundle v1; "
        f"onnxruntime {metadata.version('onnxruntime')})\n"
    )
    sub = "sample" if script == "bld" else "onnx"
    for args in (["-h"], [sub, "-h"]):
        done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Usage: {script} "), done.stdout
