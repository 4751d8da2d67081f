"""Whether this CPU runs the bundle's int8 graphs natively: the "cpu" backend's check.

The *_int8 step graphs are QDQ graphs (QuantizeLinear / DequantizeLinear around MatMul and
Gemm); onnxruntime's CPU provider fuses them into integer kernels (QLinearMatMul, QGemm). On
x86 these accumulate 8-bit products exactly with VNNI (AVX512_VNNI or AVX_VNNI) or AMX-INT8;
without them, onnxruntime's own quantization guide (quantize.py, "x86/x64 CPU without VNNI")
warns of integer saturation and suggests 7-bit weights, so the probabilities (and the bits)
could differ from a VNNI CPU's. On ARM64 the dot-product instructions (asimddp, i8mm) play
VNNI's part. Rather than run int8 that way, such a CPU is refused in one line ("never silently":
issue 20), as --precision bf16 is refused without AVX512_BF16/AMX; a CPU whose flags cannot be
read (no /proc/cpuinfo: macOS, Windows) is refused too, for the same reason.
"""

from __future__ import annotations

import platform

from ..cpuinfo import cpu_flags
from ..errors import BackendUnavailableError

# Flag names as Linux's /proc/cpuinfo spells them (bld_runtime.cpuinfo)
X86_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM64_INT8 = ("asimddp", "i8mm")
X86 = ("x86_64", "amd64", "i386", "i686")
ARM64 = ("aarch64", "arm64")


def int8_refusal(machine: str, flags: set[str] | None) -> str | None:
    """Why precision int8 cannot run on a CPU of architecture `machine` (platform.machine())
    with feature `flags` (None: unknown), as one sentence; None when it can.

    A pure function of its arguments, so that every kind of CPU can be tested on any machine.
    """
    arch = machine.lower()
    wanted: tuple[str, ...]
    if arch in X86:
        wanted = X86_INT8
        names = "AVX512_VNNI, AVX_VNNI or AMX-INT8"
    elif arch in ARM64:
        wanted = ARM64_INT8
        names = "the dot-product instructions (asimddp or i8mm)"
    else:
        return (
            f"precision 'int8' runs on x86-64 CPUs with VNNI or AMX-INT8 and ARM64 CPUs with "
            f"dot-product instructions; this CPU is {machine or 'unknown'}; use --precision fp32"
        )
    if flags is None:
        return (
            f"precision 'int8' needs a CPU with {names}, and this system does not say whether "
            f"it has them (no /proc/cpuinfo); use --precision fp32"
        )
    if not set(wanted) & flags:
        return (
            f"precision 'int8' needs a CPU with {names}, which this one lacks (without them "
            f"onnxruntime's int8 kernels may saturate and give other bits); use --precision fp32"
        )
    return None


def check_int8_cpu(machine: str | None = None, flags: set[str] | None = None) -> None:
    """Raise BackendUnavailableError (int8_refusal's sentence) unless this CPU runs int8
    natively. `machine` and `flags` default to this machine's."""
    reason = int8_refusal(
        platform.machine() if machine is None else machine,
        cpu_flags() if flags is None else flags,
    )
    if reason is not None:
        raise BackendUnavailableError(reason)


__all__ = ["cpu_flags", "int8_refusal", "check_int8_cpu"]
