"""The one thing pyproject.toml cannot declare without an experimental table: the Python
runtime's draws in compiled code, bld_runtime._draws (bld_runtime/draws.py). The extension is
optional, so that a machine without a C compiler still installs the runtime, which then draws
with numpy (the same bits, slower). -O3 vectorises the Philox lanes (csrc/bld_draw_host.h); no
fast-math. BLD_PURE_PYTHON=1 leaves it out: a wheel for another architecture than the
building machine's (scripts/arm64 without binfmt)."""

import os

from setuptools import Extension, setup

CSRC = "runtime/bld_runtime/csrc"

DRAWS = Extension(
    "bld_runtime._draws",
    sources=[f"{CSRC}/draws.c"],
    include_dirs=[CSRC],
    extra_compile_args=["-O3", "-fno-fast-math"],
    optional=True,
)

setup(ext_modules=[] if os.environ.get("BLD_PURE_PYTHON") == "1" else [DRAWS])
