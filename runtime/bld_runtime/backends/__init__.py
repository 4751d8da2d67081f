"""Backends by name: "cpu" (default), "cuda" and "tensorrt-ep" (onnxruntime GPU providers),
"tensorrt" (native TensorRT engines from an engine cache, the K steps as one CUDA graph), and
the optional "openvino" (OpenVINO on the CPU; `pip install 'bld[openvino]'`).

Every backend implements base.Backend and is found through the entry-point group "bld.backends"
(name = "module:Class", the class taking (bundle, precision, options)): the runtime registers
its own there in pyproject.toml, as another package would register one of its own.
`create` loads the one named and reports clearly when a backend cannot run here (missing
provider, missing CuPy, no device). The names are importable without onnxruntime (the CLI lists
them in --help); a backend's module loads only when that backend is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ..manifest import Bundle

    # base's names, re-exported (see __getattr__)
    from .base import Backend as Backend
    from .base import BackendOptions as BackendOptions
    from .base import Loop as Loop
    from .base import available_providers as available_providers
    from .base import usable_cores as usable_cores

#: The entry-point group of backends (docs/ARCHITECTURE.md, "Extension points").
ENTRY_POINT_GROUP = "bld.backends"
#: The runtime's own backends, in the order messages and --help list them ("openvino", an optional
#: extra, comes after them with the other registered ones).
BACKENDS = ("cpu", "cuda", "tensorrt-ep", "tensorrt")
# What the CLIs offer, importable without onnxruntime (importing it starts its environment, whose
# warnings a CLI silences first):
PRECISIONS = ("fp32", "fp16", "int8")  # the bundle's graphs: fp32, the *_fp16 or *_int8 ones
# Precisions an engine computes the fp32 graphs in (no graphs of their own): "bf16" on the
# "openvino" backend, on CPUs with AVX512_BF16 or AMX. A backend lists what it runs in
# Backend.precisions.
ENGINE_PRECISIONS = ("bf16",)
ALL_PRECISIONS = PRECISIONS + ENGINE_PRECISIONS  # what a CLI's --precision takes
THREAD_POOLS = ("shared", "session")  # BackendOptions.thread_pool
_FROM_BASE = ("Backend", "BackendOptions", "Loop", "available_providers", "usable_cores")


def registered() -> dict[str, EntryPoint]:
    """name -> entry point of every backend registered in the group "bld.backends"."""
    from importlib import metadata

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> tuple[str, ...]:
    """Every backend's name: the runtime's own (BACKENDS), then those other packages register."""
    return BACKENDS + tuple(sorted(set(registered()) - set(BACKENDS)))


def create(
    name: str, bundle: Bundle, precision: str = "fp32", options: BackendOptions | None = None
) -> Backend:
    """The backend `name` for a loaded bundle (manifest.Bundle), its graphs of `precision`
    ("fp32", "fp16", "int8"; "bf16" on "openvino"), with base.BackendOptions."""
    from ..errors import BackendUnavailableError
    from . import base

    point = registered().get(name)
    if point is None:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(names())} (onnxruntime here has "
            f"{', '.join(base.available_providers())})"
        )
    backend: Backend = point.load()(bundle, precision, options)
    return backend


def __getattr__(name: str) -> Any:
    """base's names (Backend, BackendOptions, Loop, ...) from here too, imported on first use
    (base imports onnxruntime). Documented in base, so not in __all__."""
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "registered", "names", "create"]
