"""Faults: processes killed at every write, a full disk, read-only and unreadable files, and
concurrent writers. Nothing is lost: an output is the old one or the new one, finished images
are complete files, and every failure is one line."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bld_runtime.bits import load_bits
from bld_runtime.pipeline import Pipeline

from .conftest import (
    check_refused,
    child_env,
    command,
    copy_bundle,
    edit_manifest,
    leftovers,
    run,
    snapshot,
)

HERE = Path(__file__).parent
CRASH = str(HERE / "crash_at.py")


def crash(target: str, count: int, when: str, module: str, *args, timeout=600):
    """Run `module args` killed (SIGKILL) at call `count` of `target`; returns the exit code."""
    proc = subprocess.run(
        [sys.executable, CRASH, target, str(count), when, module, *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )
    return proc


# --- replacing a bundle, killed at every step ---------------------------------------------------


@pytest.fixture(scope="module")
def two_bundles(tiny_bundle, tmp_path_factory):
    """(old, new): two valid bundles that differ (their max_batch), to tell them apart."""
    root = tmp_path_factory.mktemp("two")
    old = copy_bundle(tiny_bundle, root / "old")
    new = copy_bundle(tiny_bundle, root / "new")
    edit_manifest(new, lambda d: d.update(max_batch=7))
    return old, new


# Every file-system step of a replacement: os.replace (the staged tree becoming `.NAME.new`, the
# old bundle moved aside, the new one moved in) and shutil.rmtree (the old one removed), each
# killed just before and just after it happens.
KILL_POINTS = [("os.replace", n, when) for n in (1, 2, 3) for when in ("before", "after")] + [
    ("shutil.rmtree", 1, "before"),
    ("shutil.rmtree", 1, "after"),
    ("shutil.copytree", 1, "after"),
]


@pytest.mark.parametrize("target,count,when", KILL_POINTS)
def test_a_replacement_killed_anywhere_leaves_old_or_new(
    two_bundles, tmp_path, target, count, when
):
    old, new = two_bundles
    out = copy_bundle(old, tmp_path / "bundle")
    publish = str(HERE / "publish.py")
    proc = crash(target, count, when, publish, new, out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    result = run("bld-export", "verify", out)  # the one further command
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "bld.json").read_text())
    assert manifest["max_batch"] in (64, 7)
    expected = old if manifest["max_batch"] == 64 else new
    assert {Path(p).relative_to(out) for p in snapshot(out)} == {
        Path(p).relative_to(expected) for p in snapshot(expected)
    }
    assert [p.name for p in tmp_path.iterdir() if p.name != ".bundle.lock"] == ["bundle"]


def test_a_real_export_killed_between_its_renames_recovers(tiny_run, tiny_bundle, tmp_path):
    out = copy_bundle(tiny_bundle, tmp_path / "bundle")
    before = snapshot(out)
    # Killed right after the old bundle was moved aside (the os.replace that moves `bundle`).
    proc = crash(
        f"os.replace~{out}",
        1,
        "after",
        "bld_export.cli",
        "onnx",
        tiny_run,
        "-o",
        out,
        "--fp16",
        "--force",
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()  # killed with the old bundle moved aside, the new one not yet in
    result = run("bld", "sample", out, "-n", 2, "-o", tmp_path / "s")
    assert result.returncode == 0, result.stderr  # any command that loads it finishes the swap
    assert run("bld-export", "verify", out).returncode == 0
    assert snapshot(out).keys() == before.keys()  # a whole bundle (re-exported: the same run)
    assert leftovers(out) == []


def test_a_real_export_killed_while_validating_keeps_the_old_bundle(
    tiny_run, tiny_bundle, tmp_path
):
    out = copy_bundle(tiny_bundle, tmp_path / "bundle")
    before = snapshot(out)
    proc = crash(
        "bld_export.validate.validate_graph",
        2,
        "before",
        "bld_export.cli",
        "onnx",
        tiny_run,
        "-o",
        out,
        "--force",
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot(out) == before
    assert any(p.name.startswith(".bundle.partial-") for p in tmp_path.iterdir())
    assert run("bld-export", "verify", out).returncode == 0  # and it sweeps the staging folder
    assert not any(p.name.startswith(".bundle.partial-") for p in tmp_path.iterdir())


# --- bld sample, killed, interrupted, stopped by a full disk -------------------------------------


def _complete_images(out: Path, pipe: Pipeline, seed: int) -> int:
    """Check every NNNNN.png in `out` is complete and right; return how many there are."""
    names = sorted(p.name for p in out.glob("[0-9]*.png"))
    assert names == [f"{i:05d}.png" for i in range(len(names))]
    if names:
        want = pipe.generate(n=len(names), seeds=seed).images
        for i, name in enumerate(names):
            with Image.open(out / name) as img:
                np.testing.assert_array_equal(np.asarray(img)[..., None], want[i])
    return len(names)


def test_sample_killed_midway_keeps_complete_images(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    proc = crash(
        "os.replace",
        150,
        "before",
        "bld_runtime.cli",
        "sample",
        tiny_bundle,
        "-n",
        5000,
        "--seed",
        3,
        "-o",
        out,
    )
    assert proc.returncode == -signal.SIGKILL
    pipe = Pipeline.load(tiny_bundle)
    done = _complete_images(out, pipe, 3)
    assert 64 <= done < 150
    record = json.loads((out / "samples.json").read_text())
    assert record["status"] == "running" and record["written"] <= done
    result = run("bld", "sample", tiny_bundle, "-n", 3, "-o", out, "--force")
    assert result.returncode == 0, result.stderr  # the next run sweeps the temporaries
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers(out) == []


def test_sample_interrupted_keeps_what_it_finished_and_says_where(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        command("bld", "sample", tiny_bundle, "-n", 100_000, "--seed", 8, "-o", out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = out / "samples.json"
        if record.is_file() and json.loads(record.read_text())["written"] >= 128:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; stopped after "), lines
    assert "Traceback" not in stdout + stderr
    pipe = Pipeline.load(tiny_bundle)
    done = _complete_images(out, pipe, 8)
    assert f"stopped after {done} of 100000 images" in lines[0]
    latent = pipe.manifest.latent
    bits = load_bits(out / "bits.bldz", (latent.height, latent.width, latent.bits))
    np.testing.assert_array_equal(bits, pipe.generate(n=done, seeds=8).bits)
    record = json.loads((out / "samples.json").read_text())
    assert record["status"] == "stopped" and record["written"] == done


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_sample_on_a_full_disk_stops_with_one_line(tiny_bundle, tmp_path):
    """bits.bldz grows 4 kB per chunk of 64 images: the third chunk does not fit in 10 kB."""
    out = tmp_path / "out"
    result = run(
        "bld", "sample", tiny_bundle, "-n", 500, "-o", out, preexec_fn=_fsize_limit(10_000)
    )
    line = check_refused(result, "File too large; stopped after 128 of 500 images")
    assert "and their bits (bits.bldz)" in line
    pipe = Pipeline.load(tiny_bundle)
    assert _complete_images(out, pipe, 0) == 128
    latent = pipe.manifest.latent
    bits = load_bits(out / "bits.bldz", (latent.height, latent.width, latent.bits))
    np.testing.assert_array_equal(bits, pipe.generate(n=128, seeds=0).bits)


def test_encode_on_a_full_disk_leaves_no_file(tiny_bundle, tmp_path):
    pipe = Pipeline.load(tiny_bundle)
    images = []
    for i, image in enumerate(pipe.generate(n=64, seeds=1).images):
        Image.fromarray(image[..., 0]).save(tmp_path / f"{i}.png")
        images.append(tmp_path / f"{i}.png")
    out = tmp_path / "codes.npy"
    result = run("bld", "encode", tiny_bundle, *images, "-o", out, preexec_fn=_fsize_limit(1000))
    check_refused(result, "File too large", [out])


def test_export_on_a_full_disk_keeps_the_old_bundle(tiny_run, tiny_bundle, tmp_path):
    out = copy_bundle(tiny_bundle, tmp_path / "bundle")
    before = snapshot(out)
    result = run(
        "bld-export", "onnx", tiny_run, "-o", out, "--force", preexec_fn=_fsize_limit(20_000)
    )
    check_refused(result, "File too large", kept=before)
    assert leftovers(out) == []


def test_training_on_a_full_disk_fails_with_one_line(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    result = run(
        "bld-train",
        "autoencoder",
        "--preset",
        "tiny",
        "--run",
        run_dir,
        "--quiet",
        preexec_fn=_fsize_limit(5000),
    )
    check_refused(result, "File too large")
    assert not [p for p in (run_dir / "autoencoder").iterdir() if p.name.endswith(".tmp")]


def test_a_killed_training_leaves_temporaries_the_next_one_sweeps(tmp_path):
    run_dir = tmp_path / "run"
    # os.replace calls: config.json, then per checkpoint (every 5 steps) the weights and the
    # training state; the 4th is the second checkpoint's weights, after a whole checkpoint.
    proc = crash(
        "os.replace",
        4,
        "before",
        "bld_train.cli",
        "autoencoder",
        "--preset",
        "tiny",
        "--run",
        run_dir,
        "--quiet",
    )
    assert proc.returncode == -signal.SIGKILL
    stage = run_dir / "autoencoder"
    assert [p for p in stage.iterdir() if p.name.endswith(".tmp")]  # a torn write's temporary
    result = run(
        "bld-train", "autoencoder", "--preset", "tiny", "--run", run_dir, "--quiet", "--resume"
    )
    assert result.returncode == 0, result.stderr
    assert not [p for p in stage.iterdir() if p.name.endswith(".tmp")]


# --- permissions -------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    """A folder the permission cases can use (pytest's own is private to its user)."""
    path = Path(tmp_path) / "world"
    path.mkdir()
    return path


def test_a_read_only_output_folder(tiny_bundle, world, previous_samples):
    parent = world / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        out = parent / "out"
        check_refused(
            run("bld", "sample", tiny_bundle, "-o", out, permissions=True),
            "Permission denied",
            [out],
        )
        bits = parent / "x.bldz"
        check_refused(
            run(
                "bld",
                "encode",
                tiny_bundle,
                previous_samples / "00000.png",
                "-o",
                bits,
                permissions=True,
            ),
            "Permission denied",
            [bits],
        )
    finally:
        parent.chmod(0o755)


def test_an_unreadable_graph(tiny_bundle, world):
    bundle = copy_bundle(tiny_bundle, world / "b")
    (bundle / "step.onnx").chmod(0o000)
    out = world / "out"
    check_refused(
        run("bld", "sample", bundle, "-o", out, permissions=True), "Permission denied", [out]
    )


def test_an_unreadable_manifest_and_bits(tiny_bundle, world, previous_samples):
    bundle = copy_bundle(tiny_bundle, world / "b")
    (bundle / "bld.json").chmod(0o000)
    out = world / "out"
    check_refused(
        run("bld", "sample", bundle, "-o", out, permissions=True), "Permission denied", [out]
    )
    bits = world / "bits.bldz"
    shutil.copy(previous_samples / "bits.bldz", bits)
    bits.chmod(0o000)
    check_refused(
        run("bld", "decode", tiny_bundle, bits, "-o", out, permissions=True),
        "is not readable",
        [out],
    )


def test_a_home_that_is_not_writable_prints_nothing_extra(tiny_bundle, world):
    home = world / "home"
    home.mkdir()
    home.chmod(0o555)
    out = world / "out"
    result = run(
        "bld",
        "sample",
        tiny_bundle,
        "-o",
        out,
        permissions=True,
        env={"HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# --- concurrent writers -----------------------------------------------------------------------


def _wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_two_samplers_into_one_folder(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        command("bld", "sample", tiny_bundle, "-n", 3000, "--seed", 1, "-o", out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    _wait_for(out / "samples.json")
    second = run("bld", "sample", tiny_bundle, "-n", 5, "--seed", 2, "-o", out, "--force")
    check_refused(second, "is being written by another bld process")
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    record = json.loads((out / "samples.json").read_text())
    assert record["request"]["seed"] == 1 and record["written"] == 3000
    assert len(list(out.glob("*.png"))) == 3000 + 1  # and grid.png: nothing of the second


def test_two_exports_to_one_bundle(tiny_run, tiny_bundle, tmp_path):
    out = copy_bundle(tiny_bundle, tmp_path / "bundle")
    first = subprocess.Popen(
        command("bld-export", "onnx", tiny_run, "-o", out, "--force"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".bundle.partial-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = run("bld-export", "onnx", tiny_run, "-o", out, "--force")
    check_refused(second, "bundle " + str(out) + " is being written by another bld process")
    _, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stderr
    assert run("bld-export", "verify", out).returncode == 0


def test_two_trainers_of_one_stage(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        command(
            "bld-train",
            "autoencoder",
            "--preset",
            "tiny",
            "--run",
            run_dir,
            "--steps",
            100_000,
            "--quiet",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        _wait_for(run_dir / ".autoencoder.lock")
        time.sleep(0.5)
        second = run(
            "bld-train", "autoencoder", "--preset", "tiny", "--run", run_dir, "--resume", "--quiet"
        )
        check_refused(second, "(training) is being written by another bld process")
    finally:
        first.kill()
        first.communicate()
