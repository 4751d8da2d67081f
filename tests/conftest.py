"""Shared fixtures. Helpers add theirs here; keep each one small and documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The CLIs default to onnxruntime's one shared thread pool per process (--thread-pool shared),
# after which onnxruntime refuses sessions with their own pools; this one process runs the CLIs
# (click's CliRunner) beside thousands of library pipelines with other thread counts, so its CLIs
# and its child processes use pools per session. tests/test_thread_pool.py covers "shared".
os.environ["BLD_THREAD_POOL"] = "session"


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes that import the project (installed or not)."""
    paths = [
        str(REPO / name)
        for name in ("runtime", "train", "export", "bench", "serving", "engines", "workflows")
    ]
    paths.append(str(REPO))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _cached(name: str, tmp_path_factory) -> tuple[Path, bool]:
    """(directory, exists): under $BLD_TEST_CACHE when set (a developer's shortcut across test
    runs: delete it after changing training or export), else a fresh temporary directory."""
    cache = os.environ.get("BLD_TEST_CACHE")
    if not cache:
        return tmp_path_factory.mktemp(name), False
    path = Path(cache) / name
    return path, (path / ".complete").is_file()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory with the tiny preset trained (autoencoder, then prior; 20 steps each).

    Session-scoped and shared: treat it as read-only (copy it to modify it).
    """
    from bld_train.train_autoencoder import train_autoencoder
    from bld_train.train_prior import train_prior

    run, done = _cached("tiny_run", tmp_path_factory)
    if not done:
        train_autoencoder(run, "tiny", progress=False)
        train_prior(run, progress=False)
        (run / ".complete").touch()
    return run


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """tiny_run exported by bld_export (fp32 and fp16 graphs, opset 17) and validated.

    Session-scoped and shared: treat it as read-only (copy it to modify it).
    """
    from bld_export.export import export_bundle

    parent, done = _cached("tiny_bundle", tmp_path_factory)
    bundle = parent / "bundle"
    if not done:
        export_bundle(tiny_run, bundle, fp16=True, force=True)
        (parent / ".complete").touch()
    return bundle


@pytest.fixture(scope="session")
def tiny_int8_bundle(tiny_run, tmp_path_factory) -> Path:
    """tiny_run exported with --int8 (fp32 graphs and the int8 step graphs, calibrated on 32
    images, a quick export), validated. Read-only: copy it to modify it."""
    from bld_export.export import export_bundle

    bundle = tmp_path_factory.mktemp("tiny_int8_bundle") / "bundle"
    export_bundle(tiny_run, bundle, int8=True, calibration_images=32)
    return bundle


@pytest.fixture(scope="session")
def rtx_engines(tiny_bundle, tmp_path_factory) -> Path:
    """An engine cache with real TensorRT-RTX plans of every tiny_bundle graph, fp32 and fp16,
    batch profile 1:2:4 (TensorRT-RTX builds without a GPU). Read-only: copy it to modify it.
    Skipped where tensorrt_rtx is not installed (`make test` installs it)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (make test does)")
    from bld_engines.builder import BuildOptions, build_bundle
    from bld_runtime.engine_cache import BatchProfile

    cache = tmp_path_factory.mktemp("rtx_engines") / "cache"
    for precision in ("fp32", "fp16"):
        build_bundle(
            tiny_bundle,
            cache,
            BuildOptions(
                precision=precision, flavour="tensorrt_rtx", profiles=(BatchProfile(1, 2, 4),)
            ),
        )
    return cache


def pytest_collection_modifyitems(config, items):
    """The C++ runtime's tests (marker `cpp`) run after the others: they build it first. The
    OpenVINO backend's tests run last of all: in a process where OpenVINO has run a model,
    torch training with DataLoader workers then crashed the process (SIGSEGV, seen with
    tests/test_training.py's image-folder test after tests/test_openvino.py), so no test that
    trains may come after them (README, OpenVINO backend)."""

    def rank(item: pytest.Item) -> tuple[bool, bool]:
        return item.path.name == "test_openvino.py", item.get_closest_marker("cpp") is not None

    items.sort(key=rank)  # a stable sort


@pytest.fixture(scope="session")
def cpp_build() -> dict[str, Path]:
    """Build the C++ runtime, release and sanitizer builds (`make cpp`); their folders. Every
    C++ test (tests/test_cpp_runtime.py, tests/adversarial/test_cpp_cli.py) builds through it."""
    done = subprocess.run(
        ["make", "--no-print-directory", "cpp", f"PY={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail(f"make cpp failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpp = REPO / "runtime" / "cpp"
    return {"release": cpp / "build", "asan": cpp / "build-asan"}
