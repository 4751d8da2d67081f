"""Stopping on SIGINT, SIGTERM or SIGHUP (the terminal closed): once, whatever else arrives.

The CLI installs `handle` for the three signals. The first one raises `Stopped` where the program
is, so that the code writing an output closes it (keeps the finished images, publishes their
bits, records where it stopped). From then on every signal is ignored: the stop path runs to
its end exactly once, however many signals follow and however close together (a second Ctrl-C,
SIGTERM then SIGINT), and prints its one line.

`held()` marks the few steps that must not be cut in two (publishing bits.bldz, grid.png, the
final samples.json and the output folder): a signal arriving inside takes effect at its end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn

# SIGHUP where the platform has it (not on Windows). SIGPIPE stays ignored as CPython sets it (a
# closed pipe is a BrokenPipeError on write); SIGQUIT keeps its default, a deliberate core dump.
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Stopped(KeyboardInterrupt):
    """A stop asked by SIGINT, SIGTERM or SIGHUP, raised where the program is. A
    KeyboardInterrupt, so that no `except Exception` swallows it and event loops (gevent's hub,
    under tritonclient) hand it to the main program as they do Ctrl-C."""


class _State:
    stopping = False  # the first signal arrived, or the last line is being said: ignore signals
    signalled = False  # a signal started it: the process ignores signals until it exits
    held = 0  # depth of held() blocks
    pending = False  # a signal arrived inside a held() block
    unraisablehook: Callable[[Any], object] = sys.__unraisablehook__


def handle(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT, SIGTERM and SIGHUP (see `installed`)."""
    if _State.stopping:
        return
    if _State.held:
        _State.pending = True
        return
    _stop()


def _stop() -> NoReturn:
    _ignore_until_exit()
    raise Stopped


def _ignore_until_exit() -> None:
    _State.stopping = _State.signalled = True
    # Ignored by the OS, not by `handle`: Python resets its handlers to the default while it
    # shuts down, when a late SIGTERM would still kill the process.
    if sys.unraisablehook is not _quiet_races:
        _State.unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_races
    for number in SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_IGN)


def _quiet_races(unraisable: Any) -> None:
    """A signal that arrived while its handler was being replaced by SIG_IGN is ignored, as
    meant; Python reports it ("Signal 2 ignored due to race condition") as an unraisable
    error, a traceback on stderr, which this hook leaves out."""
    error = unraisable.exc_value
    if isinstance(error, OSError) and "ignored due to race condition" in str(error):
        return
    _State.unraisablehook(unraisable)


def ignore() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on, while `installed` (the CLI says its last
    line)."""
    _State.stopping = True


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Defer SIGINT, SIGTERM and SIGHUP to the end of the block (see the module docstring)."""
    _State.held += 1
    try:
        yield
    except BaseException:
        _State.held -= 1
        if _State.pending and not _State.held:
            _ignore_until_exit()  # the error on its way out is the stop; nothing more is raised
        raise
    _State.held -= 1
    if _State.pending and not _State.held and not _State.stopping:
        _stop()


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Install `handle` for SIGINT, SIGTERM and SIGHUP for the block (the main thread only:
    elsewhere, e.g. under a test runner's thread, signals are left alone)."""
    previous: dict[signal.Signals, object] = {}
    try:
        for number in SIGNALS:
            previous[number] = signal.signal(number, handle)
    except ValueError:  # not the main thread
        pass
    _State.stopping = _State.signalled = _State.pending = False
    _State.held = 0
    try:
        yield
    finally:
        if not _State.signalled:  # else the process is stopping: keep ignoring until it exits
            for restored, handler in previous.items():
                signal.signal(restored, handler)  # type: ignore[arg-type]
