"""Writing generated and decoded images to an output folder as they are made.

`write_samples` consumes chunks (Pipeline.iter_generate, or any iterator of objects with
`images` and `bits`, such as a server's replies: RemotePipeline.iter_generate) and writes each
chunk's PNGs and packed bits before the next one is made, so memory is bounded by one chunk
whatever the request size.
A run that stops early (Ctrl-C, SIGTERM, an error) keeps what it finished: its PNGs, a
bits.bldz holding exactly their bits, and samples.json saying how far it got; the error then
says where it stopped. The stop path runs once (stopping.py: later signals are ignored) and the
final steps (bits.bldz, grid.png, samples.json) are never cut in two. With --force over an
earlier output, the new run is published only once complete; stopped early, it leaves the
earlier output as it was (outputs.OutputFolder). A run killed outright (SIGKILL) leaves
complete PNGs and samples.json, at most one chunk behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import stopping
from .bits import BitsWriter
from .errors import BldError, OutputError, describe
from .files import sweep_temporaries
from .images import make_grid, save_png
from .manifest import LatentSpec
from .outputs import OutputFolder, image_name

GRID_IMAGES = 100  # grid.png shows the first images only: a grid of 10^5 images helps nobody


def write_samples(
    latent: LatentSpec,
    chunks: Iterable[Any],
    count: int,
    out_dir: Path,
    force: bool,
    request: dict[str, Any],
    grid_cols: int | None = None,
    progress: Any = None,
    on_folder: Callable[[Path], object] | None = None,
) -> None:
    """Write `count` images arriving in `chunks` (objects with `images` and `bits`) of a
    bundle whose latent is `latent`, with their bits, grid and samples.json.

    on_folder(directory) is told where the files go before the first chunk is read (a
    staging folder with --force over an earlier output), for files written on the side."""
    grid: list[np.ndarray] = []
    with OutputFolder(out_dir, force, "sample") as out:
        where = out.directory
        writer = None
        done = 0
        try:
            out.start(request, count)
            writer = BitsWriter(where / "bits.bldz", (latent.height, latent.width), latent.bits)
            if on_folder is not None:
                on_folder(where)
            with progress if progress is not None else _Nothing():
                for chunk in chunks:
                    for i, image in enumerate(chunk.images):
                        save_png(where / image_name(done + i, count), image, durable=False)
                    writer.write(chunk.bits)
                    grid.extend(chunk.images[: max(0, GRID_IMAGES - len(grid))])
                    done += len(chunk.images)
                    out.progress(done)
                    if progress is not None:
                        progress.advance(len(chunk.images))
            with stopping.held():  # published whole: a signal now takes effect after it
                writer.close()
                if grid:
                    save_png(where / "grid.png", make_grid(np.stack(grid), cols=grid_cols))
                out.finish()
                out.publish()
        except BaseException as error:  # noqa: BLE001 - re-raised, saying what was kept
            stopping.ignore()  # the stop path runs once, whole, whatever arrives meanwhile
            _drop_unfinished(where, done, count)
            raise _stopped(out, writer, grid, grid_cols, done, count, error) from None


def write_decoded(
    pipe: Any, bits: np.ndarray, out_dir: Path, force: bool, request: dict[str, Any]
) -> None:
    count = len(bits)
    with OutputFolder(out_dir, force, "decode") as out:
        where = out.directory
        done = 0
        try:
            out.start(request, count)
            for lo in range(0, count, pipe.max_batch):
                for i, image in enumerate(pipe.decode(bits[lo : lo + pipe.max_batch])):
                    save_png(where / image_name(lo + i, count), image, durable=False)
                done = min(lo + pipe.max_batch, count)
                out.progress(done)
            with stopping.held():
                out.finish()
                out.publish()
        except BaseException as error:  # noqa: BLE001 - re-raised, saying what was kept
            stopping.ignore()
            _drop_unfinished(where, done, count)
            raise _stopped(out, None, [], None, done, count, error) from None


def _drop_unfinished(out_dir: Path, done: int, count: int) -> None:
    """Remove the images of the chunk a run stopped in: the folder keeps whole chunks only,
    whose PNGs and bits were all written."""
    for index in range(done, count):
        path = out_dir / image_name(index, count)
        if not path.exists():
            break
        path.unlink(missing_ok=True)


def _stopped(
    out: OutputFolder,
    writer: BitsWriter | None,
    grid: list[np.ndarray],
    grid_cols: int | None,
    done: int,
    count: int,
    error: BaseException,
) -> BldError:
    """Keep what a stopped run finished and record why it stopped; the error to raise instead
    of `error`, saying what was kept where. A run stopped after it was published (a signal
    during its last step) has nothing left to do but say so."""
    stopped = isinstance(error, (KeyboardInterrupt, SystemExit)) or type(error).__name__ == "Abort"
    reason = "interrupted" if stopped else describe(error)
    bits_kept = False
    if out.staged and not out.published:
        if writer is not None:
            writer.close(keep=False)
        kept = (
            f"{out.path} still holds the earlier output (--force replaces it only with a "
            "complete one)"
        )
        return _error(error, f"{reason}; stopped after {done} of {count} images: {kept}")
    try:
        if writer is not None:
            bits_kept = writer.close(keep=done > 0) is not None
        if not out.published:
            if grid:
                grid_image = make_grid(np.stack(grid[:done]), cols=grid_cols)
                save_png(out.directory / "grid.png", grid_image)
            out.finish("stopped", reason)
    except OSError:  # e.g. the disk that stopped the run is still full; the PNGs are complete
        pass
    # The temporaries of the writes the stop cut short (a signal lands anywhere, even between
    # a temporary's creation and the code that would remove it); we hold the folder's lock.
    with contextlib.suppress(OSError):
        sweep_temporaries(out.directory)
    kept = (
        f"{out.path} holds images {image_name(0, count)[:-4]}..{image_name(done - 1, count)}"
        f" (of {count})" + (" and their bits (bits.bldz)" if bits_kept else "")
        if done
        else f"nothing was written to {out.path}"
    )
    return _error(error, f"{reason}; stopped after {done} of {count} images: {kept}")


def _error(error: BaseException, message: str) -> BldError:
    """`message` as an error of the kind of `error` (ours), else an OutputError."""
    if isinstance(error, BldError) and not isinstance(error, OutputError):
        return type(error)(message)
    return OutputError(message)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
