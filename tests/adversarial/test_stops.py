"""Stopping and replacing: signals in quick succession, `--force` over an earlier output, and
a `bld sample --server` interrupted.

Whatever signals arrive, and whenever, a stopped `bld sample` exits 1 with exactly one `error:`
line saying where it stopped, and leaves a final samples.json, the bits of exactly its finished
images and a grid.png. `--force` keeps the earlier output intact until the new one is complete.
The cases synchronise on files the run writes (samples.json), never on sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bld_runtime.bits import load_bits
from bld_runtime.pipeline import Pipeline

from .conftest import check_refused, child_env, command, leftovers, run, snapshot

WAIT = 300  # seconds: generous, for a loaded 2-core machine


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        command("bld", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def _wait_for_images(record: Path, at_least: int, proc: subprocess.Popen) -> None:
    """Until `record` (a samples.json) says `at_least` images were written."""
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{record} never reached {at_least} images"
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(record.read_text())["written"] >= at_least:
                return
        time.sleep(0.02)


def _signal(proc: subprocess.Popen, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(number)


def _barrage(proc: subprocess.Popen, first: list[int], then: int | None) -> None:
    """Send `first` back to back, then `then` over and over until the process exits: signals
    land everywhere, in the run and all through its stop path."""
    for number in first:
        _signal(proc, number)
    while then is not None and proc.poll() is None:
        _signal(proc, then)
        time.sleep(0.001)


SIGNALS = {
    "two SIGINTs": ([signal.SIGINT, signal.SIGINT], None),
    "SIGTERM then SIGINT": ([signal.SIGTERM, signal.SIGINT], None),
    "20 SIGINTs": ([signal.SIGINT] * 20, None),
    "SIGINT, then SIGTERMs until it exits": ([signal.SIGINT], signal.SIGTERM),
    "SIGTERM, then SIGINTs until it exits": ([signal.SIGTERM], signal.SIGINT),
    # the terminal closed: the same stop path, once
    "SIGHUP": ([signal.SIGHUP], None),
    "SIGTERM, then SIGHUPs until it exits": ([signal.SIGTERM], signal.SIGHUP),
    "SIGHUP, then SIGINTs until it exits": ([signal.SIGHUP], signal.SIGINT),
}


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


@pytest.mark.parametrize("case", list(SIGNALS))
def test_signals_in_quick_succession_stop_once(pipe, tiny_bundle, tmp_path, case):
    out = tmp_path / "out"
    proc = _start("sample", tiny_bundle, "-n", 100_000, "--seed", 4, "-o", out)
    _wait_for_images(out / "samples.json", 64, proc)
    _barrage(proc, *SIGNALS[case])
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, (proc.returncode, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; stopped after "), lines
    assert "Traceback" not in stdout + stderr
    record = json.loads((out / "samples.json").read_text())
    done = record["written"]
    assert record["status"] == "stopped" and done >= 64
    assert lines[0] == (
        f"error: interrupted; stopped after {done} of 100000 images: {out} holds images "
        f"00000..{done - 1:05d}.png (of 100000) and their bits (bits.bldz)"
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(done)] + [
        "bits.bldz",
        "grid.png",
        "samples.json",
    ]
    latent = pipe.manifest.latent
    bits = load_bits(out / "bits.bldz", (latent.height, latent.width, latent.bits))
    np.testing.assert_array_equal(bits, pipe.generate(n=done, seeds=4).bits)
    assert leftovers(out) == []


# --- --force ------------------------------------------------------------------------------------


@pytest.fixture
def earlier(tiny_bundle, tmp_path) -> tuple[Path, dict]:
    """An output folder holding an earlier run's 6 images, and its snapshot."""
    out = tmp_path / "out"
    assert run("bld", "sample", tiny_bundle, "-n", 6, "-o", out).returncode == 0
    return out, snapshot(out)


def test_force_over_a_folder_bld_did_not_fill_alone_changes_nothing(tiny_bundle, earlier):
    """The issue's case: an image replaced by a folder of the same name."""
    out, _ = earlier
    (out / "00004.png").unlink()
    (out / "00004.png").mkdir()
    kept = snapshot(out)
    check_refused(
        run("bld", "sample", tiny_bundle, "-n", 2, "-o", out, "--force"),
        "is not empty and holds files bld did not write there",
        kept=kept,
    )
    assert (out / "00004.png").is_dir() and leftovers(out) == []


@pytest.mark.parametrize("command", ["sample", "decode"])
def test_force_over_a_read_only_folder_is_refused_before_anything_is_written(
    tiny_bundle, earlier, command
):
    """A read-only folder can be renamed aside but not emptied: the swap could not finish, so
    --force refuses it up front, in one line, the earlier output as it was and nothing beside
    it (it once published the new output, said the old one was kept, left .out.old behind and
    broke every later run)."""
    out, _ = earlier
    if command == "decode":
        args = ["decode", tiny_bundle, out / "bits.bldz", "-o", out, "--force"]
    else:
        args = ["sample", tiny_bundle, "-n", 2, "-o", out, "--force"]
    out.chmod(0o555)
    try:
        kept = snapshot(out)
        check_refused(
            run("bld", *args, permissions=True),
            f"output folder {out} cannot be replaced: it is read-only, so the earlier files "
            "in it cannot be removed; nothing was written",
            kept=kept,
        )
        assert leftovers(out) == []
    finally:
        out.chmod(0o755)
    result = run("bld", "sample", tiny_bundle, "-n", 2, "-o", out, "--force", permissions=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "samples.json").read_text())["status"] == "complete"
    assert leftovers(out) == []


def test_a_stop_removes_its_own_temporaries(tiny_bundle, tmp_path):
    """SIGINT right after an image's temporary file is made, before the code that would
    remove it on an error runs: the stop path removes it (and any other in-flight one)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "crash_at.py"),
            "tempfile.mkstemp",
            "4",
            "after:INT",
            "bld_runtime.cli",
            "sample",
            str(tiny_bundle),
            "-n",
            "200",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=WAIT,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; stopped after "), lines
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert json.loads((out / "samples.json").read_text())["status"] == "stopped"
    assert leftovers(out) == []


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_force_run_that_fails_keeps_the_earlier_output(tiny_bundle, earlier):
    """bits.bldz grows 4 kB per chunk of 64: the new run fails at its third chunk."""
    out, kept = earlier
    result = run(
        "bld",
        "sample",
        tiny_bundle,
        "-n",
        500,
        "-o",
        out,
        "--force",
        preexec_fn=_fsize_limit(10_000),
    )
    check_refused(
        result,
        f"File too large; stopped after 128 of 500 images: {out} still holds the earlier "
        "output (--force replaces it only with a complete one)",
        kept=kept,
    )
    assert leftovers(out) == []


def test_a_force_run_interrupted_keeps_the_earlier_output(tiny_bundle, earlier):
    out, kept = earlier
    proc = _start("sample", tiny_bundle, "-n", 100_000, "-o", out, "--force")
    deadline = time.monotonic() + WAIT
    while not list(out.parent.glob(f".{out.name}.partial-*/samples.json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    (staged,) = out.parent.glob(f".{out.name}.partial-*/samples.json")
    _wait_for_images(staged, 64, proc)
    _barrage(proc, [signal.SIGTERM], signal.SIGINT)
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; stopped after "), lines
    assert f"{out} still holds the earlier output" in lines[0]
    assert snapshot(out) == kept and leftovers(out) == []


def test_a_force_run_killed_is_swept_by_the_next(tiny_bundle, earlier):
    out, kept = earlier
    proc = _start("sample", tiny_bundle, "-n", 100_000, "-o", out, "--force")
    deadline = time.monotonic() + WAIT
    while not list(out.parent.glob(f".{out.name}.partial-*/samples.json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=WAIT)
    assert snapshot(out) == kept
    result = run("bld", "sample", tiny_bundle, "-n", 2, "--seed", 7, "-o", out, "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.png",
        "00001.png",
        "bits.bldz",
        "grid.png",
        "samples.json",
    ]
    assert leftovers(out) == []


# --- bld sample --server, interrupted ----------------------------------------------------------


CONFIG = {  # the `bld` model's config, with the parameters bld-export triton writes
    "name": "bld",
    "max_batch_size": 16,
    "parameters": {
        name: {"string_value": value}
        for name, value in (
            ("bld_image", "16x16x1"),
            ("bld_latent", "8x8x8"),
            ("bld_classes", "10"),
            ("bld_steps", "16"),
            ("bld_default_guidance", "1.0"),
            ("bld_default_temperature", "1.0"),
        )
    },
}


class _Triton(BaseHTTPRequestHandler):
    """Just enough of Triton's HTTP API: the `bld` model's config, and inference requests that
    are never answered (the client waits in gevent's hub, where the signal lands)."""

    asked = threading.Event()
    release = threading.Event()

    def do_GET(self):
        body = json.dumps(CONFIG).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).asked.set()
        type(self).release.wait(WAIT)

    def log_message(self, *args):
        pass


@pytest.fixture
def silent_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    server.daemon_threads = True
    _Triton.asked.clear()
    _Triton.release.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Triton.release.set()
    server.shutdown()
    server.server_close()


def test_sample_on_a_server_interrupted_says_one_line(silent_server, tmp_path):
    pytest.importorskip("tritonclient.http", reason="needs tritonclient (bld[serving])")
    out = tmp_path / "out"
    proc = _start("sample", "--server", silent_server, "-n", 3000, "-o", out)
    assert _Triton.asked.wait(WAIT), proc.communicate()
    _signal(proc, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, stderr
    assert stderr.splitlines() == ["error: interrupted"]
    assert "Traceback" not in stdout
    assert not out.exists() and leftovers(out) == []


@pytest.fixture
def mute_server():
    """A TCP server that accepts connections and never says a byte."""
    listening = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listening.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listening.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listening.close()


def test_sample_on_a_server_that_never_answers_gives_up_in_one_line(mute_server, tmp_path):
    """It once waited forever (well, tritonclient's 300 s): --server-timeout (60 s by default)
    bounds the wait for the connection and for every answer."""
    pytest.importorskip("tritonclient.http", reason="needs tritonclient (bld[serving])")
    out = tmp_path / "out"
    check_refused(
        run("bld", "sample", "--server", mute_server, "--server-timeout", 2, "-n", 2, "-o", out),
        f"the Triton server at {mute_server} did not answer within 2 s (--server-timeout)",
        [out],
    )


# --- a signal while the CLI is still being imported ---------------------------------------------


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_the_cli_is_imported_says_one_line(tmp_path, name):
    """The console script (bld_runtime.entry) installs its handlers before it imports the CLI:
    a signal during those imports (held there by a stand-in `click` that waits) is one line and
    exit 1, not a KeyboardInterrupt traceback or a silent -15."""
    fake, reached = tmp_path / "fake", tmp_path / "importing"
    (fake / "click").mkdir(parents=True)
    (fake / "click" / "__init__.py").write_text(
        f"import os, time\nopen({str(reached)!r}, 'w').close()\ntime.sleep(600)\n"
    )
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env["PYTHONPATH"]])
    proc = subprocess.Popen(
        [sys.executable, "-m", "bld_runtime.entry", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + WAIT
    while not reached.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    _signal(proc, getattr(signal, name))
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert (proc.returncode, stderr.splitlines(), stdout) == (1, ["error: interrupted"], "")
