"""CUDA source of the device-side draw, built from the project's one Philox C source.

`CORE` is csrc/bld_philox.h (plain C: Philox4x32-10, curand_uniform and the contract's draw of
one block), the same file the C++ runtime includes; a test compiles it with the host C compiler
and checks it against bld_runtime.philox bit for bit. `KERNELS` adds csrc/bld_kernels.cu, the
two __global__ functions every GPU backend launches (CuPy here; NVRTC for the native TensorRT
backends, Python's and C++'s).
"""

from importlib.resources import files

PHILOX_HEADER = "bld_philox.h"
CORE = files("bld_runtime").joinpath("csrc", PHILOX_HEADER).read_text(encoding="utf-8")

KERNELS = (
    "#define BLD_DEVICE __device__\n"
    + CORE
    + files("bld_runtime").joinpath("csrc", "bld_kernels.cu").read_text(encoding="utf-8")
)
