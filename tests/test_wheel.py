"""The package as users get it: `python -m build` makes an sdist and a wheel from it; the wheel
holds every bld_* package of the checkout with all its files (the CUDA sources, py.typed, the
Triton models, the engines' probe graph) and the compiled draws, and nothing else (no tests/,
no runs/); installed into a clean virtual environment without torch, `bld --version` and
`bld-export --version` answer, the runtime draws with its compiled draws, and `bld sample`
writes the same images and bits as the checkout's runtime.

The build runs on a copy of the files git sees (tracked, and untracked ones not ignored), so it
leaves nothing in the checkout, and without build isolation where setuptools is installed here
(nothing to download). One build and one environment serve the whole module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DIST_INFO = "bld-{}.dist-info"

pytestmark = pytest.mark.slow

# Checkout folders that are never part of a package (what .gitignore lists), for a copy that
# is not a git checkout.
_NOT_SOURCE = (".*", "runs", "build*", "dist", "out", "__pycache__", "*.egg-info")


def _run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run a command; fail the test with its output's tail unless it exits 0."""
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _source_files() -> list[str]:
    """The checkout's files as git sees them (tracked, or untracked and not ignored), relative
    to REPO; every file but the ignore patterns' where this is not a git checkout."""
    if shutil.which("git") and (REPO / ".git").exists():
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=True,
        )
        names = [name.decode() for name in proc.stdout.split(b"\0") if name]
        return [name for name in names if (REPO / name).is_file()]  # not deleted ones
    ignore = shutil.ignore_patterns(*_NOT_SOURCE)
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = sorted(set(dirs) - ignore(folder, dirs))
        keep = [n for n in names if not n.endswith((".pyc", ".onnx")) or n == "probe.onnx"]
        files += [os.path.relpath(os.path.join(folder, n), REPO) for n in keep]
    return files


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, list[str]]:
    """(a copy of the checkout to build from, its files)."""
    src = tmp_path_factory.mktemp("wheel") / "src"
    files = _source_files()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    return src, files


@pytest.fixture(scope="module")
def wheel(source) -> Path:
    """The wheel `python -m build` makes (through the sdist, as it does by default)."""
    src, _ = source
    dist = src.parent / "dist"
    # Where the build backend is installed here, build with it: nothing to download.
    isolation = ["--no-isolation"] if importlib.util.find_spec("setuptools") else []
    _run(sys.executable, "-m", "build", *isolation, "--outdir", dist, src)
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1 and len(sorted(dist.glob("*.tar.gz"))) == 1, sorted(dist.iterdir())
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def _clean_env() -> dict[str, str]:
    """The environment without anything that would import the checkout instead of the venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONNOUSERSITE": "1"}


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment (no system site-packages) with the wheel pip-installed: its
    dependencies come from the configured index, torch is not among them."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    env = _clean_env()
    _run(sys.executable, "-m", "venv", venv, env=env)
    py = venv / "bin" / "python"
    _run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, env=env)
    return venv


def _top_level_packages(files: list[str]) -> set[str]:
    """`bld_*` packages (a folder with __init__.py) in the checkout that no package holds."""
    packages = set()
    for name in files:
        parts = Path(name).parts
        if parts[-1] != "__init__.py":
            continue
        top = [i for i, part in enumerate(parts[:-1]) if part.startswith("bld_")]
        if top and "tests" not in parts[: top[0]]:
            packages.add("/".join(parts[: top[0] + 1]))
    return packages


def test_the_wheel_holds_every_package_with_its_files_and_nothing_else(source, wheel_names):
    """Each bld_* package folder of the checkout, all its files (modules and data) and no
    others; the only other entry is the dist-info."""
    _, files = source
    folders = _top_level_packages(files)
    packages = {Path(folder).name for folder in folders}
    assert len(packages) == len(folders), f"two packages of one name: {sorted(folders)}"
    tops = {name.split("/")[0] for name in wheel_names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and tops - dist_info == packages
    expected = set()
    for folder in folders:
        prefix = folder + "/"
        for name in files:
            if name.startswith(prefix) and "__pycache__" not in name:
                expected.add(Path(folder).name + "/" + name[len(prefix) :])
    expected.add("bld_runtime/_host" + sysconfig.get_config_var("EXT_SUFFIX"))  # setup.py's
    shipped = {name for name in wheel_names if name.split("/")[0] in packages}
    assert sorted(expected - shipped) == [], "files of the packages missing from the wheel"
    assert sorted(shipped - expected) == [], "files in the wheel that the checkout lacks"


def test_the_wheel_has_the_data_users_need_and_no_tests_or_runs(wheel_names):
    names = set(wheel_names)
    for required in ("bld_runtime/py.typed", "bld_runtime/csrc/bld_kernels.cu"):
        assert required in names
    for folder, suffix in (
        ("bld_runtime/csrc/", ".h"),  # the kernel's header, compiled with it by NVRTC
        ("bld_serving/models/", "_model.py"),  # the Triton python-backend models
        ("bld_engines/data/", ".onnx"),  # the probe graph `bld-export doctor` builds
    ):
        assert any(n.startswith(folder) and n.endswith(suffix) for n in names), folder
    for name in names:
        parts = name.split("/")
        assert not {"tests", "runs", "__pycache__"} & set(parts), name
        assert not name.endswith((".pyc", ".pt", ".safetensors")), name


def test_entry_points_name_modules_in_the_wheel(wheel, wheel_names):
    """Console scripts and plug-ins point at modules the wheel ships."""
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as z:
        text = z.read(DIST_INFO.format(version) + "/entry_points.txt").decode()
    targets = [
        line.split("=", 1)[1].strip()
        for line in text.splitlines()
        if "=" in line and not line.startswith("[")
    ]
    assert any(t == "bld_runtime.entry:bld" for t in targets), text
    for target in targets:
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in wheel_names or f"{module}/__init__.py" in wheel_names, target


def test_the_venv_has_no_torch_and_imports_the_installed_package(venv, tmp_path):
    py = venv / "bin" / "python"
    code = (
        "import importlib.util as u, bld_runtime; from bld_runtime import draws; "
        "print([m for m in ('torch', 'onnx') if u.find_spec(m)]); print(bld_runtime.__file__); "
        "print(draws.implementation())"
    )
    out = _run(py, "-c", code, env=_clean_env(), cwd=tmp_path).stdout.splitlines()
    assert out[0] == "[]", f"importable in the wheel's venv: {out[0]}"  # the train extra's
    assert Path(out[1]).is_relative_to(venv), out[1]  # the venv's copy, not the checkout
    assert out[2] == "compiled"  # the wheel's own bld_runtime._host


def test_help_lists_every_command_and_a_torch_command_fails_in_one_line(venv, tmp_path):
    """Without torch, `bld --help` still lists the plugin commands; one that needs torch works
    (importing it lazily) or says so in one line, never a traceback."""
    bld = venv / "bin" / "bld"
    help_text = _run(bld, "--help", env=_clean_env(), cwd=tmp_path).stdout
    for command in ("sample", "encode", "decode", "inpaint", "train", "demo", "bench"):
        assert command in help_text
    train = subprocess.run(
        [bld, "train", "--help"], capture_output=True, text=True, env=_clean_env(), cwd=tmp_path
    )
    assert "Traceback" not in train.stderr
    assert train.returncode == 0 or (train.returncode == 1 and train.stderr.startswith("error: "))


def _version_line(venv: Path, prog: str, cwd: Path) -> str:
    return _run(venv / "bin" / prog, "--version", env=_clean_env(), cwd=cwd).stdout


@pytest.mark.parametrize("prog", ["bld", "bld-export"])
def test_version_of_each_command(venv, wheel, tmp_path, prog):
    """Both console scripts answer --version on a plain install (no torch, no onnx)."""
    version = wheel.name.split("-")[1]
    py = venv / "bin" / "python"
    code = "import onnxruntime; print(onnxruntime.__version__)"
    ort = _run(py, "-c", code, env=_clean_env(), cwd=tmp_path).stdout.strip()
    line = _version_line(venv, prog, tmp_path)
    assert line.startswith(f"{prog} {version} (bundle format ") and f"onnxruntime {ort})" in line


def test_bld_sample_from_the_wheel_matches_the_checkout(
    venv, tiny_bundle, tmp_path, subprocess_env
):
    """The installed `bld sample` writes the images and bits the checkout's runtime writes."""
    args = ["sample", str(tiny_bundle), "-n", "2", "--class", "all", "--guidance", "1"]
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    _run(venv / "bin" / "bld", *args, "-o", installed, env=_clean_env(), cwd=tmp_path)
    here = ["-c", "import sys; from bld_runtime.entry import bld; sys.argv[0] = 'bld'; bld()"]
    _run(sys.executable, *here, *args, "-o", checkout, env=subprocess_env, cwd=tmp_path)
    pngs = sorted(p.name for p in installed.glob("0*.png"))
    assert len(pngs) == 2, pngs
    assert pngs == sorted(p.name for p in checkout.glob("0*.png"))
    for name in [*pngs, "grid.png"]:
        with Image.open(installed / name) as a, Image.open(checkout / name) as b:
            assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b)), name
    assert (installed / "bits.bldz").read_bytes() == (checkout / "bits.bldz").read_bytes()
    assert (installed / "samples.json").is_file()
