"""Backends by name: "cpu" (default), "cuda" and "tensorrt-ep" (onnxruntime GPU providers),
"tensorrt" (native TensorRT engines from an engine cache, the K steps as one CUDA graph).

Every backend implements base.Backend; `create` picks one by name and reports clearly when a
backend cannot run here (missing provider, missing CuPy, no device). The names are importable
without onnxruntime (the CLI lists them in --help); everything else loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..manifest import Bundle
    from .base import Backend, BackendOptions, Loop, available_providers, usable_cores

BACKENDS = ("cpu", "cuda", "tensorrt-ep", "tensorrt")
_FROM_BASE = ("Backend", "BackendOptions", "Loop", "available_providers", "usable_cores")


def create(
    name: str, bundle: Bundle, precision: str = "fp32", options: BackendOptions | None = None
) -> Backend:
    """The backend `name` for a loaded bundle (manifest.Bundle), its graphs of `precision`
    ("fp32" or "fp16"), with base.BackendOptions."""
    from ..errors import BackendUnavailableError
    from . import base

    if name == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(bundle, precision, options)
    if name in ("cuda", "tensorrt-ep"):
        from .cuda import CudaBackend, TensorRTBackend

        cls = CudaBackend if name == "cuda" else TensorRTBackend
        return cls(bundle, precision, options)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend as NativeTensorRTBackend

        return NativeTensorRTBackend(bundle, precision, options)
    raise BackendUnavailableError(
        f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (onnxruntime here has "
        f"{', '.join(base.available_providers())})"
    )


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "create",
    "Backend",
    "BackendOptions",
    "Loop",
    "available_providers",
    "usable_cores",
]
