"""The GPU install matrix: pyproject's pins, what pip resolves them to, and the README's table.

pyproject.toml is the one place the pins live (the GPU extras, and [tool.bld.onnxruntime-gpu]
for the package no extra can carry); the README's "GPU installs" table quotes them. Each extra
is resolved with `pip install --dry-run --ignore-installed --report -` against the configured
index and the result is held to what the README promises: one CUDA major per extra, NVRTC
where kernels are compiled, TensorRT 10 (onnxruntime's TensorRT provider is built for 10), and
onnxruntime-gpu builds of the right CUDA. Skipped, saying why, only where pip cannot reach an
index with these packages.

The `tensorrt-cu12/cu13` meta packages get their libraries' metadata from NVIDIA's own index
(wheel-stub sdists), so their full tree cannot always be resolved; their direct requirements
are resolved without dependencies then, and their exact library pins read from the metadata.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
ORT_GPU: dict[str, str] = PYPROJECT["tool"]["bld"]["onnxruntime-gpu"]
#: extra -> the CUDA major every package it installs must be built for.
CUDA_MAJOR = {
    "tensorrt-cu12": 12,
    "tensorrt-cu13": 13,
    "tensorrt-rtx": 12,
    "jetpack6": 12,
    "jetpack7": 13,
    "cupy-cuda12": 12,
    "cupy-cuda13": 13,
    "gpu": 12,
}
#: Extras whose packages compile the draw kernels: NVRTC must come with them.
NEEDS_NVRTC = ("tensorrt-cu12", "tensorrt-cu13", "tensorrt-rtx", "cupy-cuda12", "cupy-cuda13")
NVRTC = {12: "nvidia-cuda-nvrtc-cu12", 13: "nvidia-cuda-nvrtc"}
#: Network failures of pip or of a wheel-stub sdist fetching from NVIDIA's index.
OFFLINE = re.compile(r"URLError|Connection|urlopen|Temporary failure|Max retries|No route")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def requirements(extra: str) -> list[str]:
    """The extra's requirement strings, `bld[...]` references expanded."""
    out = []
    for text in EXTRAS[extra]:
        req = Requirement(text)
        if _name(req.name) == "bld":
            for inner in sorted(req.extras):
                out += requirements(inner)
        else:
            out.append(text)
    return out


def pip_report(reqs: list[str], no_deps: bool = False) -> tuple[dict | None, str]:
    """(pip's installation report, or None with pip's error output)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + (["--no-deps"] if no_deps else [])
        + ["--report", "-", *reqs],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return None, done.stderr
    return json.loads(done.stdout), ""


@cache
def resolve(extra: str) -> tuple[dict[str, Version], dict[str, list[str]], bool]:
    """(name -> version, name -> requires_dist, full) of what pip installs for the extra; full
    is False where only the direct requirements could be resolved (see the module doc)."""
    reqs = requirements(extra)
    report, error = pip_report(reqs)
    full = report is not None
    if report is None:
        if not OFFLINE.search(error):
            pytest.fail(f"pip cannot resolve bld[{extra}]: {error.strip()[-600:]}")
        report, error = pip_report(reqs, no_deps=True)
        if report is None:
            pytest.skip(f"pip cannot reach an index with bld[{extra}]'s packages: {error[-200:]}")
    versions, requires = {}, {}
    for item in report["install"]:
        meta = item["metadata"]
        versions[_name(meta["name"])] = Version(meta["version"])
        requires[_name(meta["name"])] = meta.get("requires_dist") or []
    return versions, requires, full


@pytest.fixture(scope="module", autouse=True)
def index_reachable():
    done = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "cuda-python"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.skip(f"pip cannot reach a package index: {done.stderr.strip()[-200:]}")


def _readme_gpu_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## GPU installs")
    return text[start : text.index("\n## ", start + 5)]


def test_the_readme_quotes_every_gpu_pin():
    section = _readme_gpu_section()
    for extra in CUDA_MAJOR:
        if extra == "gpu":
            continue
        assert f"bld[{extra}]" in section, extra
        for text in EXTRAS[extra]:
            assert f"`{text}`" in section, f"README does not quote {extra}'s {text}"
    for pin in ORT_GPU.values():
        assert f"'{pin}'" in section, f"README does not quote {pin}"


@pytest.mark.parametrize("extra", sorted(CUDA_MAJOR))
def test_each_gpu_extra_resolves_to_one_cuda_major(extra):
    versions, requires, full = resolve(extra)
    major = CUDA_MAJOR[extra]
    for text in requirements(extra):  # every pin resolved, inside its range
        req = Requirement(text)
        assert _name(req.name) in versions, f"{req.name} not resolved for bld[{extra}]"
        assert versions[_name(req.name)] in req.specifier
    if "cuda-python" in versions:
        assert versions["cuda-python"].major == major
    other = 13 if major == 12 else 12
    for name, version in versions.items():
        assert not name.endswith(f"-cu{other}"), f"bld[{extra}] pulls {name} (CUDA {other})"
        if name.startswith("nvidia-cuda-") or name == "cuda-toolkit":  # CUDA's own wheels
            assert version.major == major, f"bld[{extra}] pulls {name} {version}"
    for name, version in versions.items():
        # The meta package only (tensorrt-cu12), not its -libs/-bindings when the tree resolves.
        if re.fullmatch(r"tensorrt-cu1\d", name):  # onnxruntime's TensorRT provider needs 10
            assert version.major == 10, f"bld[{extra}] resolves {name} {version}"
            libs = [r for r in requires[name] if _name(r).startswith(name + "-libs")]
            assert libs and Requirement(libs[0]).specifier.contains(str(version)), libs
    if extra in NEEDS_NVRTC:
        if NVRTC[major] in versions:
            assert versions[NVRTC[major]].major == major
        else:  # only the direct requirements resolved: an extra of theirs must bring it
            assert not full, f"bld[{extra}] brings no NVRTC {major}"
            assert any("nvrtc" in r for rs in requires.values() for r in rs), extra


def ort_cuda_major(item: dict) -> tuple[str, int | None]:
    """(version, CUDA major) of an onnxruntime-gpu build in a pip report: the major of the CUDA
    runtime it declares (its [cuda] extra): from the name's -cuNN suffix, else (CUDA 13's
    unsuffixed wheels) from the version range; None where it declares none."""
    version = item["metadata"]["version"]
    for text in item["metadata"].get("requires_dist") or []:
        req = Requirement(text)
        name = _name(req.name)
        if not name.startswith("nvidia-cuda-runtime"):
            continue
        suffix = name.removeprefix("nvidia-cuda-runtime")
        if suffix:
            assert re.fullmatch(r"-cu1\d", suffix), f"{version} needs {req.name}"
            return version, int(suffix[3:])
        for major in (13, 12):
            if req.specifier.contains(f"{major}.0", prereleases=True):
                return version, major
        pytest.fail(f"onnxruntime-gpu {version} needs {text}: no CUDA major in its range")
    return version, None


def ort_bound(cuda: str, operator: str) -> str:
    """The version of the pin's `operator` clause (">=" lower bound, "<" upper bound)."""
    (clause,) = [c for c in Requirement(ORT_GPU[cuda]).specifier if c.operator == operator]
    return clause.version


def test_onnxruntime_gpu_ranges_meet():
    """No gap and no overlap between the two pins: CUDA 12's range ends where CUDA 13's starts."""
    assert ort_bound("cuda12", "<") == ort_bound("cuda13", ">=")


@pytest.mark.parametrize(
    ("cuda", "end"), [("cuda12", "newest"), ("cuda13", "newest"), ("cuda13", "lowest")]
)
def test_onnxruntime_gpu_pins_fit_their_cuda(cuda, end):
    """PyPI's onnxruntime-gpu needs CUDA 13 from 1.27 on. The newest build in each range (for
    CUDA 12: the upper end of its range) and the lowest release of CUDA 13's (its lower bound,
    resolved as `==1.27.*`) must declare the CUDA runtime of the pin's major, so a bound on the
    wrong side of 1.27 fails here. (CUDA 12's lower end, 1.20, declares no CUDA runtime at all:
    its [cuda] extra came later, so its major cannot be read from its metadata.)"""
    major = int(cuda.removeprefix("cuda"))
    pin = ORT_GPU[cuda]
    if end == "lowest":
        pin = f"onnxruntime-gpu=={ort_bound(cuda, '>=')}.*"
    report, error = pip_report([pin], no_deps=True)
    assert report is not None, error
    (item,) = report["install"]
    assert Version(item["metadata"]["version"]) in Requirement(ORT_GPU[cuda]).specifier
    version, found = ort_cuda_major(item)
    assert found == major, f"onnxruntime-gpu {version} ({end} of {ORT_GPU[cuda]}) is CUDA {found}"
