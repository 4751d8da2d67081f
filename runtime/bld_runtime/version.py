"""`--version` for the command lines: the package, the bundle format it reads, onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def version_line(prog: str) -> str:
    """One line naming what a bug report needs: e.g. `bld 0.1.0 (bundle format bld-bundle v1;
    onnxruntime 1.32.0)`.

    Args:
        prog: The command's name, which begins the line.

    Returns:
        The line, without a newline. An uninstalled source tree says "(not installed)" for the
        package; onnxruntime-gpu's version stands for onnxruntime where that is installed.
    """
    from .manifest import FORMAT, SUPPORTED_SCHEMA_VERSIONS  # numpy: only when asked

    try:
        package = metadata.version("bld")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        package = "(not installed)"
    try:
        runtime = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:  # onnxruntime-gpu installs the same module
        try:
            runtime = metadata.version("onnxruntime-gpu")
        except metadata.PackageNotFoundError:
            runtime = "not installed"
    formats = ", ".join(f"v{v}" for v in SUPPORTED_SCHEMA_VERSIONS)
    return f"{prog} {package} (bundle format {FORMAT} {formats}; onnxruntime {runtime})"


def version_option(prog: str) -> Callable[[F], F]:
    """A `--version` flag that prints `version_line(prog)` and exits 0, before anything else.

    Args:
        prog: The command's name.

    Returns:
        A click decorator for the command or group.
    """

    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(version_line(prog))
            ctx.exit()

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="Show the versions of bld, the bundle format and onnxruntime, and exit.",
    )
