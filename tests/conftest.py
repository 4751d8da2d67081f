"""Shared fixtures. Helpers add theirs here; keep each one small and documented."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes that import the project (installed or not)."""
    paths = [str(REPO / "runtime"), str(REPO / "export"), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory with the tiny preset trained (autoencoder, then prior; 20 steps each).

    Session-scoped and shared: treat it as read-only (copy it to modify it).
    """
    from bld_train.train_autoencoder import train_autoencoder
    from bld_train.train_prior import train_prior

    run = tmp_path_factory.mktemp("tiny_run")
    train_autoencoder(run, "tiny", progress=False)
    train_prior(run, progress=False)
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

    bundle = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    export_bundle(tiny_run, bundle, fp16=True)
    return bundle
