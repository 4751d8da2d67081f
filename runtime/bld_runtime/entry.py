"""The console scripts `bld` and `bld-export`: signal handlers first, then the command line.

Importing a command line (click, numpy, onnxruntime...) takes a noticeable moment. Until now a
Ctrl-C then was a KeyboardInterrupt traceback and a SIGTERM or SIGHUP a silent death, exit -15.
This module imports nothing of the project and installs, before the CLI is imported, a handler
for SIGINT, SIGTERM and SIGHUP that says `error: interrupted` and exits 1 (nothing has been
written yet: outputs start only once the CLI runs, and it installs its own stop path,
stopping.installed, in place of this one).

A signal during the interpreter's own start-up, before any of the project's code runs (CPython's
"Fatal Python error: init_import_site"), cannot be handled here: that is the interpreter's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from types import FrameType

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _ignore() -> None:
    for number in _SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_IGN)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """A signal before the CLI took over: one line, exit 1, nothing else runs."""
    _ignore()
    try:
        os.write(2, b"error: interrupted\n")
    finally:
        os._exit(1)


def _run(module: str) -> None:
    for number in _SIGNALS:
        signal.signal(number, _interrupted)
    try:
        importlib.import_module(module).main()
    finally:
        _ignore()  # done (or its one line said): a signal while Python shuts down changes nothing


def bld() -> None:
    """`bld`."""
    _run("bld_runtime.cli")


def bld_export() -> None:
    """`bld-export`."""
    _run("bld_export.cli")


if __name__ == "__main__":
    {"bld": bld, "bld-export": bld_export}[os.environ.get("BLD_ENTRY", "bld")]()
    sys.exit(0)
