"""Output folders of the CLI (`bld sample -o DIR`, `bld decode -o DIR`).

A folder is written by one process at a time (files.OutputLock beside it) and holds the output
of one run: it must be new or empty, or hold a previous run's output (its `samples.json`) and
the user must ask to replace it (`--force`). Images are written as they are made; `samples.json`
records the request and how far the run got, after every chunk, so a run that stops early
(interrupted, killed, or failed) leaves complete files and says where it stopped.

`--force` keeps the previous output intact until the new one is complete: the new run writes
into a staging folder beside it (`.NAME.partial-*`), published by renames when it completes
(files.replace_directory); a run that stops early leaves the previous output as it was and
discards its own. A run killed outright leaves the staging folder, which the next run removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import OutputError
from .files import (
    OutputLock,
    atomic_write,
    check_replaceable,
    recover_directory,
    replace_directory,
    staging_directory,
    sweep_temporaries,
)

RECORD = "samples.json"
FORMAT = "bld-samples/1"
# The names bld writes, ASCII digits only (a str pattern's \d matches any Unicode digit, and
# bld never writes "١٢٣٤٥.png"): bld-cpp's output.hpp matches the same names.
_OURS = re.compile(r"(\d{5,}(\.step\d+)?\.png|bits\.bldz|grid\.png|samples\.json)", re.ASCII)


def image_name(index: int, count: int) -> str:
    """00000.png ...: zero-padded to at least 5 digits, so names sort in order.

    Args:
        index: The image's index in the run (0-based).
        count: How many images the run writes (wider names past 100000).

    Returns:
        The file name, e.g. "00007.png".
    """
    return f"{index:0{max(5, len(str(count - 1)))}d}.png"


def preview_name(index: int, step: int, count: int) -> str:
    """00000.step04.png: image `index` as it stood after `step` (bld sample --preview-every).

    Args:
        index: The image's index in the run (0-based).
        step: The sampling step the preview shows.
        count: How many images the run writes.

    Returns:
        The file name, e.g. "00007.step04.png".
    """
    return f"{image_name(index, count)[:-4]}.step{step:02d}.png"


class OutputFolder:
    """The folder one run writes into; use as a context manager (it holds the lock).

    Files go to `directory`: the folder itself, or with --force over an earlier output a
    staging folder that `publish` moves into place.

    Args:
        path: The output folder (created when missing).
        force: Replace an earlier run's output there (its samples.json and images).
        command: The command recorded in samples.json, e.g. "sample".

    Raises:
        OutputError: On entering: another process writes the folder, it is not a folder, it
            holds files bld did not write, or it holds an earlier output and `force` is False.

    Example:
        ```python
        with OutputFolder(out, force=False, command="sample") as folder:
            folder.start(request, total=n)
            ...  # write images into folder.directory, folder.progress(written) after each chunk
            folder.finish()
            folder.publish()
        ```
    """

    def __init__(self, path: str | Path, force: bool, command: str):
        self.path, self.force, self.command = Path(path), force, command
        self._lock = OutputLock(self.path, f"output folder {self.path}")
        # What a replacement renames: the folder itself, not a symlink to it.
        self._target = Path(os.path.realpath(self.path))
        self.directory = self.path
        self.staged = False  # writing into a staging folder, the previous output kept
        self.published = False
        self.record: dict[str, Any] = {}

    def __enter__(self) -> OutputFolder:
        self._lock.__enter__()
        try:
            self._prepare()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.staged and not self.published:  # stopped early: the previous output stays
                shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            self._lock.__exit__(*exc)

    def _prepare(self) -> None:
        path = self.path
        recover_directory(self._target)  # what a killed --force run left; we hold the lock
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} exists and is not a folder")
        if path.is_dir():
            sweep_temporaries(path)  # a killed run's temporaries; we hold the lock
            entries = list(path.iterdir())
            if entries:
                ours = (path / RECORD).is_file() and all(
                    _OURS.fullmatch(p.name) and p.is_file() and not p.is_symlink() for p in entries
                )
                if not ours:
                    raise OutputError(
                        f"output folder {path} is not empty and holds files bld "
                        f"did not write there; choose a new or empty folder"
                    )
                if not self.force:
                    raise OutputError(
                        f"output folder {path} holds an earlier run's output; "
                        "pass --force to replace it or choose another folder"
                    )
                # All or nothing: refused now, before anything is written, if the swap
                # that publishes the new output could not finish.
                check_replaceable(self._target, f"output folder {path}")
                self.directory, self.staged = staging_directory(self._target), True
                return
        path.mkdir(parents=True, exist_ok=True)

    def publish(self) -> None:
        """The run is complete: move a staged folder into place (nothing to do otherwise).

        Raises:
            OSError: The renames that replace the earlier output failed.
        """
        if self.staged and not self.published:
            replace_directory(self.directory, self._target, durable=False)
            self.directory = self.path
        self.published = True

    def start(self, request: dict[str, Any], total: int) -> None:
        """Write samples.json for a run that begins: status "running", 0 written.

        Args:
            request: The request as JSON-ready values (seeds, classes, guidance, ...).
            total: How many images the run asks for.
        """
        self.record = {
            "format": FORMAT,
            "command": self.command,
            "request": request,
            "requested": total,
            "written": 0,
            "status": "running",
        }
        self._save()

    def progress(self, written: int) -> None:
        """Record in samples.json how many images are written (after each chunk).

        Args:
            written: Images complete on disk so far.
        """
        self.record["written"] = written
        self._save()

    def finish(self, status: str = "complete", detail: str | None = None) -> None:
        """Record how the run ended in samples.json.

        Args:
            status: "complete", or "stopped" for a run that stopped early.
            detail: A sentence saying why, for a run that stopped early.
        """
        self.record["status"] = status
        if detail:
            self.record["detail"] = detail
        self._save()

    def _save(self) -> None:
        atomic_write(
            self.directory / RECORD,
            (json.dumps(self.record, indent=2) + "\n").encode(),
            durable=False,
        )
