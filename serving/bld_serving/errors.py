"""Errors of the serving package (one clear sentence each, like every BldError)."""

from bld_runtime.errors import BldError


class ServingError(BldError):
    """A model repository that cannot be written or is not valid for Triton."""


class ServerError(BldError):
    """A local tritonserver that cannot be installed, started or reached."""
