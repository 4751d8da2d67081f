"""Which code draws the host loop's bits (backends/cpu.py): compiled or numpy, the same bits.

The package builds `bld_runtime._host` from csrc/host.c (setup.py), the C source the C++
runtime's draws come from too (csrc/bld_draw_host.h over csrc/bld_philox.h): the Philox words
made on the fly in SIMD registers, one call per step for the whole batch. Where it was not
built (no C compiler at install time; the build is optional), or with `BLD_DRAWS=numpy` in the
environment, the loop draws with `philox.BernoulliDrawer`, numpy's passes over uint64 arrays:
the contract's reference here, and the slower path (its initial pass of all steps' uniforms
took 1.2-1.4 ms of a batch-16 generation of the digits model on the README's machine, the
compiled initial draw 0.03-0.04 ms). Tests hold the two to the same bits.
"""

from __future__ import annotations

import os
from types import ModuleType

_compiled: ModuleType | None
try:
    from . import _host as _compiled
except ImportError:  # not built: numpy draws
    _compiled = None

ENV = "BLD_DRAWS"  # "numpy": draw with numpy even where the compiled draws are built


def compiled() -> ModuleType | None:
    """The compiled draws' module, or None where the loop draws with numpy."""
    return None if os.environ.get(ENV) == "numpy" else _compiled


def implementation() -> str:
    """What a loop made now draws with, "compiled" or "numpy" (bld bench records it)."""
    return "numpy" if compiled() is None else "compiled"
