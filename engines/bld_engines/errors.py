"""Errors of the engine builder (one clear sentence each, printed without a traceback)."""

from bld_runtime.errors import BldError


class EngineBuildError(BldError):
    """TensorRT could not parse or build a graph (the message names the node and op)."""
