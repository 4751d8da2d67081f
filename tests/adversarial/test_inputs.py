"""Bad input through the command line and through the Python API: every value refused by what
it is, with one clear sentence, before any output is written."""

from __future__ import annotations

import os
import resource
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bld_runtime.bits import save_bits
from bld_runtime.errors import InvalidRequestError, PackedBitsError
from bld_runtime.pipeline import Pipeline

from .conftest import check_refused, run, snapshot

U64 = 2**64


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


# --- bld sample ------------------------------------------------------------------------------

SAMPLE_ARGS = [
    (["--seed", "-1"], "--seed must be an integer in [0, 2^64), got '-1'"),
    (["--seed", str(U64)], f"--seed must be an integer in [0, 2^64), got '{U64}'"),
    (["--seed", "1" * 400], "--seed must be an integer in [0, 2^64)"),
    (["--seed", "1.5"], "--seed must be an integer in [0, 2^64), got '1.5'"),
    (["--seed", "0x10"], "--seed must be an integer in [0, 2^64), got '0x10'"),
    (["--seed", "١٢"], "--seed must be an integer in [0, 2^64)"),  # Arabic-Indic digits
    (["--seed", ""], "--seed must be an integer in [0, 2^64), got ''"),
    (["--class", "10"], "class 10 is out of range: this bundle has classes 0..9"),
    (["--class", "-2"], "class -2 is out of range"),
    (["--class", "3.0"], "--class must be a class index, 'all' or 'none', got '3.0'"),
    (["--class", "ALL"], "--class must be a class index, 'all' or 'none', got 'ALL'"),
    (["--class", "9" * 50], "is out of range: this bundle has classes 0..9"),
    (["--guidance", "nan"], "guidance must be finite and >= 0, got nan"),
    (["--guidance", "inf"], "guidance must be finite and >= 0, got inf"),
    (["--guidance", "-1"], "guidance must be finite and >= 0, got -1"),
    (["--guidance", "1e39"], "guidance must be at most 3.403e+38 (float32), got 1e+39"),
    (["--guidance", "x"], "Invalid value for '--guidance': 'x' is not a valid float"),
    (["--temperature", "0"], "temperature must be finite and > 0, got 0"),
    (["--temperature", "-0.5"], "temperature must be finite and > 0, got -0.5"),
    (["--temperature", "nan"], "temperature must be finite and > 0, got nan"),
    (["--temperature", "1e39"], "temperature must be at most 3.403e+38 (float32), got 1e+39"),
    (["--temperature", "1e999"], "temperature must be finite and > 0, got inf"),
    (["-n", "0"], "Invalid value for '-n': 0 is not in the range x>=1"),
    (["-n", "-3"], "Invalid value for '-n': -3 is not in the range x>=1"),
    (["-n", "two"], "Invalid value for '-n': 'two' is not a valid integer"),
    # Unicode digits: Python's int()/float() take them, bld (like bld-cpp) does not
    (["-n", "३"], "Invalid value for '-n': '३' is not a valid integer range."),
    (["--guidance", "१"], "Invalid value for '--guidance': '१' is not a valid float."),
    (["--temperature", "१.५"], "Invalid value for '--temperature': '१.५' is not a valid float."),
    (["-n", "65", "--no-chunk"], "batch size 65 is above this bundle's max_batch of 64"),
    (["--backend", "metal"], "Invalid value for '--backend'"),
    (["--precision", "int4"], "Invalid value for '--precision'"),
    (["--threads", "-1"], "Invalid value for '--threads': -1 is not in the range x>=0"),
    (["--threads", "1000"], "intra_op_threads is 1000, more than the"),
    (["--nonsense"], "No such option '--nonsense'"),
]


@pytest.mark.parametrize(
    "args,fragment", SAMPLE_ARGS, ids=[" ".join(a)[:30] for a, _ in SAMPLE_ARGS]
)
def test_sample_arguments(tiny_bundle, tmp_path, args, fragment):
    out = tmp_path / "out"
    check_refused(run("bld", "sample", tiny_bundle, *args, "-o", out), fragment, [out])


def test_sample_without_fp16_graphs(tiny_bundle, tmp_path):
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    from .conftest import edit_manifest

    edit_manifest(
        bundle, lambda d: [d["graphs"].pop(n) for n in list(d["graphs"]) if n.endswith("_fp16")]
    )
    out = tmp_path / "out"
    check_refused(
        run("bld", "sample", bundle, "--precision", "fp16", "-o", out),
        "has no 'decoder_fp16' graph, which precision 'fp16' needs",
        [out],
    )


def test_missing_bundle(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    check_refused(
        run("bld", "sample", tmp_path / "nope", "-o", out),
        f"bundle directory {tmp_path / 'nope'} does not exist",
        [out],
    )
    check_refused(
        run("bld", "sample", tiny_bundle / "bld.json", "-o", out),
        "Invalid value for 'BUNDLE'",
        [out],
    )


def test_nul_in_a_path_through_the_api(tmp_path):
    from bld_runtime.errors import BundleIntegrityError

    with pytest.raises(BundleIntegrityError, match="does not exist"):
        Pipeline.load(str(tmp_path) + "/bundle\u0000x")


# --- output paths ----------------------------------------------------------------------------


def test_output_folder_rules(tiny_bundle, tmp_path, previous_samples):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    kept = snapshot(a_file)
    check_refused(
        run("bld", "sample", tiny_bundle, "-o", a_file), "Invalid value for '-o'", kept=kept
    )

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    kept = snapshot(foreign)
    check_refused(
        run("bld", "sample", tiny_bundle, "-o", foreign, "--force"),
        "is not empty and holds files bld did not write there",
        kept=kept,
    )

    kept = snapshot(previous_samples)
    check_refused(
        run("bld", "sample", tiny_bundle, "-o", previous_samples),
        "holds an earlier run's output; pass --force",
        kept=kept,
    )
    check_refused(
        run("bld", "decode", tiny_bundle, previous_samples / "bits.bldz", "-o", previous_samples),
        "holds an earlier run's output",
        kept=kept,
    )


def test_force_replaces_an_earlier_output_completely(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert run("bld", "sample", tiny_bundle, "-n", 5, "-o", out).returncode == 0
    result = run("bld", "sample", tiny_bundle, "-n", 2, "--seed", 9, "-o", out, "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.png",
        "00001.png",
        "bits.bldz",
        "grid.png",
        "samples.json",
    ]


# --- images ----------------------------------------------------------------------------------


def _png_header_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims a huge image (its pixel data is a few bytes): a bomb."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _images(tmp: Path, H: int, W: int) -> dict[str, tuple[Path, str]]:
    cases = {}
    big = tmp / "big.png"
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(big)
    cases["wrong size"] = (big, f"is {W}x{H + 2}; it must be {W}x{H}")
    rgb = tmp / "rgb.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    cases["wrong mode"] = (rgb, "has mode RGB; this bundle needs L images")
    text = tmp / "notes.png"
    text.write_text("not an image")
    cases["not an image"] = (text, "cannot read image")
    truncated = tmp / "truncated.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    cases["truncated"] = (truncated, "cannot read image")
    bomb = tmp / "bomb.png"
    _png_header_claiming(bomb, 100_000, 100_000)
    cases["decompression bomb"] = (bomb, "is too large to decode safely")
    huge = tmp / "huge.png"
    _png_header_claiming(huge, 10_000, 5_000)  # below Pillow's bomb limit: refused by size
    cases["huge header"] = (huge, f"is 10000x5000; it must be {W}x{H}")
    return cases


@pytest.mark.parametrize(
    "case",
    ["wrong size", "wrong mode", "not an image", "truncated", "decompression bomb", "huge header"],
)
def test_encode_refuses_bad_images(pipe, tiny_bundle, tmp_path, case):
    H, W, _ = pipe.image_shape
    image, fragment = _images(tmp_path, H, W)[case]
    out = tmp_path / "bits.bldz"
    check_refused(run("bld", "encode", tiny_bundle, image, "-o", out), fragment, [out])


@pytest.mark.parametrize("case", ["not an image", "decompression bomb"])
def test_encode_fit_refuses_bad_images_too(pipe, tiny_bundle, tmp_path, case):
    H, W, _ = pipe.image_shape
    image, fragment = _images(tmp_path, H, W)[case]
    out = tmp_path / "bits.bldz"
    check_refused(run("bld", "encode", tiny_bundle, image, "--fit", "-o", out), fragment, [out])


def _memory_cap(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_encode_fit_refuses_by_the_header_what_fitting_would_blow_up(pipe, tiny_bundle, tmp_path):
    """A 1 x 10^7 strip is a small PNG, but fitted to 16x16 it is resized to 16 x 1.6 x 10^8
    before its crop: refused from the header, before decoding (tested under a memory cap, which
    the resize would exceed)."""
    strip = tmp_path / "strip.png"
    Image.new("L", (1, 10_000_000)).save(strip)
    assert strip.stat().st_size < 100_000
    H, W, _ = pipe.image_shape
    out = tmp_path / "bits.bldz"
    result = run(
        "bld",
        "encode",
        tiny_bundle,
        strip,
        "--fit",
        "-o",
        out,
        preexec_fn=_memory_cap(2 << 30),
    )
    check_refused(
        result,
        f"is 1x10000000: fitting it to {W}x{H} resizes it to {W}x{10_000_000 * W}, more than",
        [out],
    )


def test_an_impossible_n_is_refused_by_name_before_anything_is_written(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    for n in (2**62, 2**32):
        check_refused(
            run("bld", "sample", tiny_bundle, "-n", n, "-o", out),
            f"-n must be at most 4294967295 (the most images one bits.bldz holds), got {n}",
            [out],
        )


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


FIFO_TIMEOUT = 120  # a reader that blocks on a FIFO never returns: the case fails by timeout


@pytest.mark.parametrize("case", ["encode image", "encode --fit image", "inpaint image", "mask"])
def test_a_fifo_as_input_is_refused_without_blocking(pipe, tiny_bundle, tmp_path, case):
    H, W, _ = pipe.image_shape
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(image)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(mask)
    fifo = _fifo(tmp_path / "fifo.png")
    bits, png = tmp_path / "bits.bldz", tmp_path / "out.png"
    args = {
        "encode image": ["encode", tiny_bundle, image, fifo, "-o", bits],
        "encode --fit image": ["encode", tiny_bundle, fifo, "--fit", "-o", bits],
        "inpaint image": ["inpaint", tiny_bundle, fifo, "--mask", mask, "-o", png],
        "mask": ["inpaint", tiny_bundle, image, "--mask", fifo, "-o", png],
    }[case]
    what = "mask" if case == "mask" else "image"
    check_refused(
        run("bld", *args, timeout=FIFO_TIMEOUT),
        f"{what} {fifo} is a FIFO (named pipe), not a regular file",
        [bits, png],
    )


def test_a_socket_or_a_nameless_stream_as_image_is_refused_by_name(tiny_bundle, tmp_path):
    """A socket cannot even be opened ("[Errno 6] No such device or address" once): refused by
    what it is, as a FIFO is; a file PIL cannot identify is named by its path, never as
    "<_io.BufferedReader name=3>"."""
    sock, bits = tmp_path / "image.png", tmp_path / "bits.bldz"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(sock))
        check_refused(
            run("bld", "encode", tiny_bundle, sock, "-o", bits),
            f"image {sock} is a socket, not a regular file",
            [bits],
        )
    check_refused(
        run("bld", "encode", tiny_bundle, "/proc/self/environ", "-o", bits),
        "cannot read image /proc/self/environ: not an image file (its format cannot be identified)",
        [bits],
    )


def test_a_fifo_as_bits_is_refused_without_blocking(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    for bits in (_fifo(tmp_path / "fifo.bldz"), _fifo(tmp_path / "fifo.npy")):
        check_refused(
            run("bld", "decode", tiny_bundle, bits, "-o", out, timeout=FIFO_TIMEOUT),
            f"bits file {bits} is a FIFO (named pipe), not a regular file",
            [out],
        )


def test_encode_options(pipe, tiny_bundle, tmp_path):
    H, W, _ = pipe.image_shape
    image = tmp_path / "ok.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(image)
    out = tmp_path / "bits.bldz"
    cases = [
        (["-o", tmp_path / "bits.txt"], "-o must end in .bldz or .npy"),
        (["--rounds", "3", "-o", out], "--rounds applies to --canonical encoding only"),
        (["--canonical", "--seed", "3", "-o", out], "canonical encoding is deterministic"),
        (["--canonical", "--rounds", "0", "-o", out], "0 is not in the range x>=1"),
        (["--seed", "-3", "-o", out], "--seed must be an integer in [0, 2^64), got '-3'"),
        (["--no-chunk", "-o", out], None),  # fine: one image
    ]
    for args, fragment in cases:
        result = run("bld", "encode", tiny_bundle, image, *args)
        if fragment is None:
            assert result.returncode == 0, result.stderr
            out.unlink()
            continue
        check_refused(result, fragment, [out, tmp_path / "bits.txt"])
    check_refused(
        run("bld", "encode", tiny_bundle, tmp_path, "-o", out),
        "Invalid value for 'IMAGES...'",
        [out],
    )
    check_refused(
        run("bld", "encode", tiny_bundle, *[image] * 65, "--no-chunk", "-o", out),
        "batch size 65 is above this bundle's max_batch of 64",
        [out],
    )


@pytest.mark.parametrize(
    "case",
    ["mask size", "mask mode", "mask not an image", "image size", "output suffix", "temperature"],
)
def test_inpaint_refuses_bad_input(pipe, tiny_bundle, tmp_path, case):
    H, W, _ = pipe.image_shape
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(image)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(mask)
    out, extra = tmp_path / "out.png", []
    if case == "mask size":
        Image.fromarray(np.zeros((H // 2, W), np.uint8)).save(mask)
        fragment = f"is {W}x{H // 2}; it must be {W}x{H}, the size of the image"
    elif case == "mask mode":
        Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(mask)
        fragment = "has mode RGBA; it must be a black-and-white or grayscale image"
    elif case == "mask not an image":
        mask.write_bytes(b"GIF89a garbage")
        fragment = "cannot read mask"
    elif case == "image size":
        Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(image)
        fragment = "it must be"
    elif case == "output suffix":
        out = tmp_path / "out.jpg"
        fragment = "-o must end in .png"
    else:
        extra, fragment = ["--temperature", "0"], "temperature must be finite and > 0"
    check_refused(
        run("bld", "inpaint", tiny_bundle, image, "--mask", mask, *extra, "-o", out),
        fragment,
        [out],
    )


# --- packed bits files -----------------------------------------------------------------------


def _bldz(tmp: Path, pipe, name: str, mutate) -> Path:
    latent = pipe.manifest.latent
    path = tmp / name
    save_bits(path, np.ones((2,) + pipe.latent_shape, np.uint8), (latent.height, latent.width))
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(mutate(data)))
    return path


def _header(batch=2, height=8, width=8, bits=8, magic=b"BLDZ", version=1, crc=0):
    return struct.pack("<4sB4II", magic, version, batch, height, width, bits, crc)


BLDZ = {
    "bad magic": (lambda d: b"PK\x03\x04" + d[4:], "is not a .bldz bits file (bad magic bytes)"),
    "future version": (lambda d: d[:4] + b"\x07" + d[5:], ".bldz version 7"),
    "short header": (lambda d: d[:10], "is truncated: its header has 10 of 25 bytes"),
    "batch 0": (lambda d: _header(batch=0) + d[25:], "holds no latents (its header says batch 0)"),
    "terabytes": (
        lambda d: _header(batch=2**32 - 1, height=2**16, width=2**16) + d[25:],
        "holds 65536x65536x8 latents but the bundle expects 8x8x8",
    ),
    "claims more": (lambda d: _header(batch=10**9) + d[25:], "is truncated: its payload has"),
    "empty shape": (lambda d: _header(height=0) + d[25:], "has an empty latent shape"),
    "other shape": (lambda d: _header(bits=16) + d[25:], "holds 8x8x16 latents"),
    "crc": (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "is corrupt: the payload's crc32"),
    "too long": (lambda d: d + b"\0", "is too long"),
    "empty file": (lambda d: b"", "is truncated: its header has 0 of 25 bytes"),
}


@pytest.mark.parametrize("case", list(BLDZ))
def test_decode_refuses_bad_bldz(pipe, tiny_bundle, tmp_path, case):
    mutate, fragment = BLDZ[case]
    path = _bldz(tmp_path, pipe, "bits.bldz", mutate)
    out = tmp_path / "out"
    check_refused(run("bld", "decode", tiny_bundle, path, "-o", out), fragment, [out])


def _npy(tmp: Path, name: str, array: np.ndarray, mutate=None) -> Path:
    path = tmp / name
    np.save(path, array, allow_pickle=True)
    if mutate:
        path.write_bytes(mutate(path.read_bytes()))
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"definitely not numpy")
    return path


NPY = {
    "pickled objects": (
        lambda t: _npy(t, "a.npy", np.array([{"x": 1}], dtype=object)),
        "must hold a 2-D uint8 array",
    ),
    "floats": (
        lambda t: _npy(t, "a.npy", np.zeros((2, 64), np.float32)),
        "must hold a 2-D uint8 array",
    ),
    "3-D": (
        lambda t: _npy(t, "a.npy", np.zeros((2, 8, 8), np.uint8)),
        "must hold a 2-D uint8 array",
    ),
    "wrong row size": (
        lambda t: _npy(t, "a.npy", np.zeros((2, 63), np.uint8)),
        "has 63 bytes per image",
    ),
    "fortran order": (
        lambda t: _npy(t, "a.npy", np.asfortranarray(np.zeros((2, 64), np.uint8))),
        "must hold a 2-D uint8 array",
    ),
    "huge header": (
        lambda t: _npy(
            t,
            "a.npy",
            np.zeros((2, 64), np.uint8),
            lambda b: b.replace(b"(2, 64)", b"(9999999999, 64)"),
        ),
        "is truncated or too long",
    ),
    "zero rows": (lambda t: _npy(t, "a.npy", np.zeros((0, 64), np.uint8)), "holds no latents"),
    "garbage": (lambda t: _garbage(t / "a.npy"), "is not a readable .npy file"),
    "padding bits": (lambda t: _npy(t, "a.npy", np.full((1, 64), 255, np.uint8)), None),
}


@pytest.mark.parametrize("case", list(NPY))
def test_decode_refuses_bad_npy(tiny_bundle, tmp_path, case):
    make, fragment = NPY[case]
    path = make(tmp_path)
    out = tmp_path / "out"
    result = run("bld", "decode", tiny_bundle, path, "-o", out)
    if fragment is None:  # 8x8x8 = 512 bits = 64 whole bytes: no padding bits, so it is valid
        assert result.returncode == 0, result.stderr
        return
    check_refused(result, fragment, [out])


def test_bits_suffix(tiny_bundle, tmp_path):
    path = tmp_path / "bits.txt"
    path.write_bytes(b"BLDZ")
    out = tmp_path / "out"
    check_refused(
        run("bld", "decode", tiny_bundle, path, "-o", out), "bits files end in .bldz or .npy", [out]
    )


# --- the Python API ----------------------------------------------------------------------------

API = [
    (dict(n=0), "batch size must be at least 1, got 0"),
    (dict(n=2.0), "n must be an integer"),
    (dict(n=True), "n must be an integer"),
    (dict(seeds=-1), "seed must be an integer in [0, 2^64), got -1"),
    (dict(seeds=U64), f"seed must be an integer in [0, 2^64), got {U64}"),
    (dict(seeds=1.5), "seed must be an integer in [0, 2^64), got 1.5"),
    (dict(seeds="7"), "seed must be an integer in [0, 2^64), got '7'"),
    (dict(seeds=[0, -1]), "seed must be an integer in [0, 2^64), got -1"),
    (dict(seeds=[0, 1.0]), "seed must be an integer in [0, 2^64), got 1.0"),
    (dict(seeds=np.array([1.0, 2.0])), "seeds must be integers, got an array of float64"),
    (dict(seeds=np.zeros((2, 2), np.int64)), "seeds must be one-dimensional"),
    (dict(seeds=[]), "got 0 seeds"),
    (dict(n=3, seeds=[1, 2]), "got 2 seeds for n=3 images"),
    (dict(classes=10.0), "classes must be integers"),
    (dict(classes=11), "class 11 is out of range"),
    (dict(classes=-1), "class -1 is out of range"),
    (dict(n=2, classes=[1, 2, 3]), "got 3 classes for 2 images"),
    (dict(guidance=float("nan")), "guidance must be finite and >= 0"),
    (dict(guidance="strong"), "guidance must be a number"),
    (dict(n=2, guidance=[1.0, 2.0, 3.0]), "guidance must be one number or one per image"),
    (dict(temperature=1e39), "temperature must be at most"),
    (dict(temperature=0), "temperature must be finite and > 0"),
    (dict(mask=np.ones((64, 8), np.uint8)), "both mask and known_bits"),
    (
        dict(mask=np.ones((64, 7), np.uint8), known_bits=np.ones((64, 7), np.uint8)),
        "mask must be 0/1 integers shaped (N, 64, 8)",
    ),
    (
        dict(mask=np.full((64, 8), 2, np.uint8), known_bits=np.ones((64, 8), np.uint8)),
        "mask must hold only 0 and 1",
    ),
    (
        dict(n=2, mask=np.ones((3, 64, 8), np.uint8), known_bits=np.ones((64, 8), np.uint8)),
        "mask has 3 rows for 2 images",
    ),
    (dict(n=65, chunk=False), "batch size 65 is above this bundle's max_batch of 64"),
    (dict(n=10**12), "use iter_generate"),
    (dict(teacher_states=np.zeros((3, 1, 64, 8), np.uint8)), "teacher_states must have shape"),
]


@pytest.mark.parametrize("kwargs,fragment", API, ids=[str(k)[:40] for k, _ in API])
def test_generate_refuses(pipe, kwargs, fragment):
    with pytest.raises(InvalidRequestError) as info:
        pipe.generate(**kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call,fragment",
    [
        (
            lambda p: p.step_probs(np.zeros((1, 64, 8), np.uint8), step=1.5),
            "step must be an integer",
        ),
        (lambda p: p.step_probs(np.zeros((1, 64, 8), np.uint8), step=16), "step must be in 0..15"),
        (
            lambda p: p.step_probs(np.zeros((1, 64, 8), np.uint8), step="3"),
            "step must be an integer",
        ),
        (lambda p: p.encode(np.zeros((1, 16, 16, 1), np.float32)), "images must be uint8"),
        (lambda p: p.encode(np.zeros((1, 16, 16, 3), np.uint8)), "images must be uint8 shaped"),
        (
            lambda p: p.encode(np.zeros((1, 16, 16, 1), np.uint8), seed=3, canonical=True),
            "takes no seed",
        ),
        (lambda p: p.decode(np.zeros((1, 64, 9), np.uint8)), "bits must be 0/1 integers shaped"),
        (lambda p: p.decode(np.full((1, 64, 8), 3)), "bits must hold only 0 and 1"),
        (lambda p: p.decode(np.zeros((0, 64, 8), np.uint8)), "batch size must be at least 1"),
        (lambda p: p.latent_mask(np.zeros((15, 16))), "the mask must be 16x16"),
    ],
)
def test_other_api_calls_refuse(pipe, call, fragment):
    with pytest.raises(InvalidRequestError, match=None) as info:
        call(pipe)
    assert fragment in str(info.value)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=U64 - 1), min_size=1, max_size=6),
    st.sampled_from(["list", "tuple", "uint64", "object"]),
)
def test_every_valid_seed_is_accepted_in_every_form(pipe, seeds, form):
    values = {
        "list": list(seeds),
        "tuple": tuple(seeds),
        "uint64": np.array(seeds, np.uint64),
        "object": np.array(seeds, dtype=object),
    }[form]
    from bld_runtime import philox

    np.testing.assert_array_equal(philox.request_seeds(values), np.array(seeds, np.uint64))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=0, max_value=U64 - 1),
    st.sampled_from(
        [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
    ),
)
def test_seeds_of_any_integer_dtype(pipe, value, dtype):
    from bld_runtime import philox

    info = np.iinfo(dtype)
    value %= int(info.max) + 1  # a non-negative value the dtype holds
    array = np.array([value], dtype)
    assert philox.request_seeds(array).tolist() == [value]


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=U64),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.booleans(),
    )
)
def test_every_invalid_seed_is_refused_by_value(value):
    from bld_runtime import philox

    with pytest.raises(InvalidRequestError, match="seed must be an integer in"):
        philox.request_seeds([value])
    with pytest.raises(InvalidRequestError, match="seed must be an integer in"):
        philox.request_seeds(value)


def test_a_real_mix_of_huge_seeds_generates(pipe):
    out = pipe.generate(seeds=[0, 2**63 + 5, 2**64 - 1])
    assert out.seeds.tolist() == [0, 2**63 + 5, 2**64 - 1]
    alone = pipe.generate(seeds=2**64 - 1)
    np.testing.assert_array_equal(out.bits[2], alone.bits[0])


def test_packed_bits_api_refuses_without_allocating(tmp_path):
    from bld_runtime.bits import load_bits

    path = tmp_path / "x.bldz"
    path.write_bytes(_header(batch=2**32 - 1, height=2**16, width=2**16, bits=2**16))
    with pytest.raises(PackedBitsError, match="is truncated"):
        load_bits(path)
