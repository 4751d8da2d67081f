"""The C++ native TensorRT backend's build, as far as a machine without a GPU can take it.

- The draw kernels: the C++ backend's own NVRTC build (runtime/cpp/src/nvrtc_draw.cpp, the one
  place its NVRTC options are made) compiled into a small program against the nvidia-cuda-nvrtc
  wheel, asked for sm_80, sm_87 and sm_90: each must come back a cubin (ELF for EM_CUDA) of that
  very sm, never PTX a driver older than NVRTC refuses. Runs wherever `make test` installed the
  wheel.
- The backend itself against TensorRT's headers (scripts/check_tensorrt_build.sh). No package
  registry carries NvInfer.h, so CI has none and skips it; it runs on a developer's machine with
  headers from NVIDIA's public repository: BLD_TENSORRT_INCLUDE (folders, os.pathsep between
  them), TENSORRT_INCLUDE, TENSORRT_ROOT/include, or /tmp/trt-headers/*/include.
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPP = REPO / "runtime" / "cpp"
CSRC = REPO / "runtime" / "bld_runtime" / "csrc"
EM_CUDA = 190


def _nvrtc_wheel() -> Path | None:
    """The nvidia-cuda-nvrtc wheel's folder (include/nvrtc.h, lib/libnvrtc.so.*) in this env."""
    for root in glob.glob(str(Path(sys.prefix) / "lib" / "python3*" / "site-packages")):
        wheel = Path(root) / "nvidia" / "cuda_nvrtc"
        libs = glob.glob(str(wheel / "lib" / "libnvrtc.so*"))
        if (wheel / "include" / "nvrtc.h").is_file() and libs:
            return wheel
    return None


def _cuda_include() -> Path | None:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    inc = Path(os.environ.get("CUDA_INCLUDE") or Path(home) / "include")
    return inc if (inc / "cuda.h").is_file() else None


def _tensorrt_includes() -> list[Path]:
    if os.environ.get("BLD_TENSORRT_INCLUDE"):
        found = [Path(p) for p in os.environ["BLD_TENSORRT_INCLUDE"].split(os.pathsep) if p]
    elif os.environ.get("TENSORRT_INCLUDE"):
        found = [Path(os.environ["TENSORRT_INCLUDE"])]
    elif os.environ.get("TENSORRT_ROOT"):
        found = [Path(os.environ["TENSORRT_ROOT"]) / "include"]
    else:
        found = [Path(p) for p in sorted(glob.glob("/tmp/trt-headers/*/include"))]
    return [p for p in found if (p / "NvInfer.h").is_file()]


@pytest.fixture(scope="module")
def nvrtc_targets(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Build the C++ NVRTC program and run it for sm_80, sm_87, sm_90 and a GPU newer than
    every architecture this NVRTC knows (99.9)."""
    wheel = _nvrtc_wheel()
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if wheel is None:
        pytest.skip("no nvidia-cuda-nvrtc wheel in this environment (`make test` installs it)")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("nvrtc")
    lib = sorted(glob.glob(str(wheel / "lib" / "libnvrtc.so*")))[0]
    exe = out / "nvrtc_targets"
    subprocess.run(
        [cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{CPP / 'include'}",
         f"-I{CPP / 'src'}", "-isystem", str(wheel / "include"),
         str(CPP / "tests" / "nvrtc_targets.cpp"), str(CPP / "src" / "nvrtc_draw.cpp"), lib,
         f"-Wl,-rpath,{Path(lib).parent}", "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    run = subprocess.run(
        [str(exe), str(CSRC / "bld_philox.h"), str(CSRC / "bld_kernels.cu"), str(out),
         "8.0", "8.7", "9.0", "99.9"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout, out


@pytest.mark.parametrize("sm", [80, 87, 90])
def test_cpp_draw_kernels_are_cubins_for_the_devices_sm(nvrtc_targets, sm):
    stdout, out = nvrtc_targets
    line = next(x for x in stdout.splitlines() if x.startswith(f"sm_{sm} "))
    assert line.split()[1] == "cubin", line
    assert f"--gpu-architecture=sm_{sm}" in line.split(), line
    elf = (out / f"sm_{sm}.cubin").read_bytes()
    assert elf[:4] == b"\x7fELF"
    (machine,) = struct.unpack_from("<H", elf, 18)
    (flags,) = struct.unpack_from("<I", elf, 48)  # e_flags of a 64-bit ELF
    assert machine == EM_CUDA
    # EF_CUDA_SM: the low byte up to ELF ABI version 7, the second byte from version 8 on
    assert sm in (flags & 0xFF, (flags >> 8) & 0xFF), hex(flags)


def test_cpp_draw_kernels_fall_back_to_ptx_only_for_an_unknown_sm_and_say_so(nvrtc_targets):
    stdout, out = nvrtc_targets
    line = next(x for x in stdout.splitlines() if x.startswith("sm_999 "))
    assert line.split()[1] == "ptx", line
    arch = next(o for o in line.split() if o.startswith("--gpu-architecture="))
    assert arch.startswith("--gpu-architecture=compute_"), line
    assert "NVRTC does not know sm_999" in line
    ptx = (out / "sm_999.ptx").read_bytes().rstrip(b"\0").decode()
    assert f".target sm_{arch.rsplit('_', 1)[1]}" in ptx


def test_cpp_tensorrt_backend_compiles_against_tensorrt_headers():
    includes = _tensorrt_includes()
    if not includes:
        pytest.skip(
            "no TensorRT headers (no package registry carries NvInfer.h, so CI has none): set "
            "BLD_TENSORRT_INCLUDE to include/ folders of github.com/NVIDIA/TensorRT release tags"
        )
    cuda = _cuda_include()
    if cuda is None:
        pytest.skip("no CUDA headers (cuda.h): set CUDA_INCLUDE or CUDA_HOME")
    wheel = _nvrtc_wheel()
    env = {**os.environ, "CUDA_INCLUDE": str(cuda)}
    if not (cuda / "nvrtc.h").is_file() and wheel is not None:
        env["NVRTC_INCLUDE"] = str(wheel / "include")
    run = subprocess.run(
        [str(CPP / "scripts" / "check_tensorrt_build.sh"), *map(str, includes)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": compiled") == len(includes), run.stdout
