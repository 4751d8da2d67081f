"""Typed errors of the exporter. The CLI prints them as `error: <message>` and exits 1."""

from bld_runtime.errors import BldError


class ExportError(BldError, ValueError):
    """An export that cannot be made as asked (opset, output directory, run, exporter failure)."""


class ValidationError(ExportError):
    """An exported graph that fails a check or disagrees with another backend beyond tolerance."""
