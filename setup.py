"""The one thing pyproject.toml cannot declare without an experimental table: the Python
runtime's host loop in compiled code, bld_runtime._host (its draws, bld_runtime/draws.py, and
the decoder's pixels, bld_runtime/images.py). The extension is optional, so that a machine
without a C compiler still installs the runtime, which then does both with numpy (the same
bits, slower). BLD_PURE_PYTHON=1 leaves it out: a wheel for another
architecture than the building machine's (scripts/arm64 without binfmt)."""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "runtime/bld_runtime/csrc"

# GCC and Clang: -O3 runs the 64 Philox lanes in SIMD registers (csrc/bld_draw_host.h); no
# fast-math, and no contraction of a*b+c, as the C++ runtime builds the same source.
# -fno-trapping-math changes no value (nothing here traps on floating-point exceptions); it
# lets the clipping comparisons of the pixels (csrc/bld_image_host.h) become SIMD selects.
# MSVC's defaults are already exact (/fp:precise).
GNU_FLAGS = ["-O3", "-fno-fast-math", "-ffp-contract=off", "-fno-trapping-math"]


class BuildHost(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = GNU_FLAGS
        super().build_extensions()


HOST = Extension(
    "bld_runtime._host",
    sources=[f"{CSRC}/host.c"],
    include_dirs=[CSRC],
    depends=[
        f"{CSRC}/bld_draw_host.h",
        f"{CSRC}/bld_philox.h",
        f"{CSRC}/bld_image_host.h",
        f"{CSRC}/bld_simd.h",
    ],
    optional=True,
)

setup(
    ext_modules=[] if os.environ.get("BLD_PURE_PYTHON") == "1" else [HOST],
    cmdclass={"build_ext": BuildHost},
)
