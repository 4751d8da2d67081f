"""Files the project writes: atomically, hashed, locked, and recoverable after a crash.

Every output of bld (bundles, checkpoints, PNGs, packed bits) goes through here, so there is one
implementation of each guarantee:

- `atomic_write`: a temporary file in the target's directory, then one rename. Readers and a
  process killed at any point see the old file or the new one, never half of one. The
  temporaries are named `.NAME.XXXXXXXX.tmp`; `sweep_temporaries` removes those a killed writer
  left behind (call it only while holding the directory's lock).
- `OutputLock`: an advisory lock (flock) that a writer holds on an output path for as long as it
  writes, so two bld processes never write into one output at the same time. The kernel drops it
  when the process dies, so a lock is never stale.
- `replace_directory` / `recover_directory`: replace a directory (a bundle, an output folder) by
  a complete staged one through renames that a later call can always finish or undo: whatever
  instant a process is killed at, the target ends up as the old or the new directory after at
  most one more call.

And every file the project reads from a user goes through `open_input` / `read_input`: opened
without blocking and refused unless it is a regular file, its size checked before it is read.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import BldError, OutputError

TMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20


# --- hashes ---------------------------------------------------------------------------------------


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(
    path: str | os.PathLike[str],
    chunk_size: int = _CHUNK,
    what: str = "file",
    error: type[BldError] = BldError,
    max_bytes: int | None = None,
) -> str:
    """Hex sha256 of a file, read in chunks (graphs can be hundreds of MB); `what`, `error` and
    `max_bytes` as for read_input (a file over `max_bytes` is refused by its size, unhashed)."""
    digest = hashlib.sha256()
    with open_input(path, what, error) as f:
        _check_size(f, path, what, error, max_bytes)
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --- reading inputs ---------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def open_input(
    path: str | os.PathLike[str], what: str, error: type[BldError] = BldError
) -> BinaryIO:
    """Open an input file for reading in binary, refusing anything but a regular file.

    Every reader of a file a user hands us (images, masks, bits, bld.json, graphs, engine
    manifests and plans) opens it here. The open does not block (O_NONBLOCK: a FIFO with no
    writer would otherwise hang forever in open()), and the check is made with fstat on the very
    descriptor that is then read, so a file swapped in between is not read either. A refusal is
    `error` naming `what` and the path; the OS's own errors (missing, permissions) pass through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        # A socket cannot be opened at all (ENXIO): refused by what it is, as the rest are.
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise error(_not_regular(path, what, mode)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(_not_regular(path, what, mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_regular(path: str | os.PathLike[str], what: str, mode: int) -> str:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"{what} {os.fspath(path)} is {kind}, not a regular file"


def read_input(
    path: str | os.PathLike[str],
    what: str,
    error: type[BldError] = BldError,
    max_bytes: int | None = None,
) -> bytes:
    """The bytes of a regular file (open_input), refused unread when it is larger than
    `max_bytes`: a manifest of gigabytes is an attack, not a manifest."""
    with open_input(path, what, error) as f:
        if max_bytes is None:
            return f.read()
        size = _check_size(f, path, what, error, max_bytes)
        return f.read(size)  # what it held when checked; hashes catch a file that changed


def _check_size(
    f: BinaryIO,
    path: str | os.PathLike[str],
    what: str,
    error: type[BldError],
    max_bytes: int | None,
) -> int:
    size = os.fstat(f.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        raise error(
            f"{what} {os.fspath(path)} is {size} bytes, more than any {what} "
            f"(at most {max_bytes}); refusing to read it"
        )
    return size


# --- atomic writes ------------------------------------------------------------------------------


def atomic_write_with(
    target: str | os.PathLike[str], write: Callable[[Path], object], durable: bool = True
) -> Path:
    """Call write(temporary path), then move the temporary file onto `target` in one rename.

    durable: fsync the file before the rename, so that it survives a power loss too (a killed
    process never leaves a partial file either way; outputs written by the thousand skip it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; our outputs are shared files
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write(target: str | os.PathLike[str], payload: bytes, durable: bool = True) -> Path:
    """Write `payload` to `target` atomically (see atomic_write_with)."""
    return atomic_write_with(target, lambda tmp: tmp.write_bytes(payload), durable)


def sweep_temporaries(
    directory: str | os.PathLike[str], names: Iterable[str] | None = None
) -> list[Path]:
    """Remove the temporaries of atomic writes that a killed process left in `directory`
    (only those of the files `names`, when given).

    Only call it while holding the lock that every writer of those files takes: a live
    writer's temporary looks the same as a dead one's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    patterns = (
        [f".*{TMP_SUFFIX}"]
        if names is None
        else [f".{glob.escape(n)}.*{TMP_SUFFIX}" for n in names]
    )
    swept = []
    for path in (p for pattern in patterns for p in directory.glob(pattern)):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            swept.append(path)
    return swept


def fsync_tree(root: Path) -> None:
    """fsync every file below `root` and the directories themselves (before a rename publishes
    them), so that a power loss cannot leave a published directory with empty files."""
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(Path(directory))


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; their renames are what they are
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- locks ----------------------------------------------------------------------------------------


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of an output path: `.NAME.lock` beside it (not inside, so an output
    directory holds only outputs)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


class OutputLock:
    """An exclusive advisory lock on an output path, held while a process writes it.

        with OutputLock(out_dir, "the output folder"):
            ...  # nobody else holding an OutputLock on out_dir writes meanwhile

    `wait=False` (the default) refuses at once with OutputError when another process holds it.
    """

    def __init__(self, target: str | os.PathLike[str], what: str = "", wait: bool = False):
        self.target, self.wait = Path(target), wait
        self.what = what or str(self.target)
        self.path = lock_path(self.target)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _lock(fd, self.wait):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise OutputError(
                    f"{self.what} is being written by another bld process "
                    f"(pid {holder}); wait for it to finish or choose another path"
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int, wait: bool) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


# --- replacing a directory ------------------------------------------------------------------------


def _siblings(target: Path) -> tuple[Path, Path]:
    """(.NAME.new, .NAME.old): the complete new directory waiting to be moved in, and the old
    one moved aside. Fixed names, so that a later call finds them."""
    return target.parent / f".{target.name}.new", target.parent / f".{target.name}.old"


def staging_directory(target: str | os.PathLike[str]) -> Path:
    """A fresh, empty directory beside `target` to build its replacement in (`.NAME.partial-*`;
    `recover_directory` removes those a killed process left)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    os.chmod(staged, 0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
    return staged


def check_replaceable(target: str | os.PathLike[str], what: str) -> None:
    """Refuse, before anything is written, to replace `target` when the swap could not finish:
    its parent must let us rename entries, and every folder in it must let us remove its entries
    (a read-only folder can be renamed aside but never emptied). `what` names it in the error."""
    target = Path(target)
    parent = target.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} cannot be replaced: its parent folder {parent} is not writable; "
            "nothing was written"
        )
    for directory, _, _ in os.walk(target):
        if not os.access(directory, os.W_OK | os.X_OK):
            place = "it" if Path(directory) == target else f"its folder {directory}"
            raise OutputError(
                f"{what} cannot be replaced: {place} is read-only, so the earlier files "
                "in it cannot be removed; nothing was written"
            )


def replace_directory(staged: Path, target: Path, durable: bool = True) -> None:
    """Publish the complete directory `staged` at `target`, replacing what is there.

    durable: fsync every file first, so that a power loss cannot publish empty files (output
    folders of thousands of images skip it, as their files do).

    Call it holding OutputLock(target), after recover_directory(target). The steps, and what
    `recover_directory` makes of a kill after each: staged -> .NAME.new (complete from here on:
    the swap is finished), target -> .NAME.old, .NAME.new -> target (done: the old one is
    removed), remove .NAME.old.
    """
    new, old = _siblings(target)
    if durable:
        fsync_tree(staged)
    os.replace(staged, new)
    _fsync_directory(target.parent)
    _finish(target, new, old)


def recover_directory(target: Path) -> str | None:
    """Finish or undo a replace_directory that a killed process left half done; remove its
    staging folders. Returns what it did (None if nothing was pending). Call it holding
    OutputLock(target): the lock tells a dead writer from a live one."""
    new, old = _siblings(target)
    done = None
    if new.is_dir():
        _finish(target, new, old)
        done = f"finished replacing {target} (an earlier process stopped half way)"
    elif old.is_dir():
        if target.is_dir():
            _remove_old(old, target)
        else:  # cannot happen with replace_directory's order; restore rather than lose it
            os.replace(old, target)
            done = f"restored {target} (an earlier process stopped half way)"
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    return done


def _finish(target: Path, new: Path, old: Path) -> None:
    """new -> target, the old target removed: all or nothing where the OS allows it (a failed
    second rename puts the old one back)."""
    if old.exists():
        _remove_old(old, target)
    moved = False
    if target.exists():
        os.replace(target, old)
        moved = True
    try:
        os.replace(new, target)
    except BaseException:
        if moved:
            os.replace(old, target)  # roll back: target is the old directory again
        raise
    _fsync_directory(target.parent)
    if old.exists():
        _remove_old(old, target)


def _remove_old(old: Path, target: Path) -> None:
    """Remove the old directory moved aside, or say in one sentence why it cannot be."""
    try:
        shutil.rmtree(old)
    except OSError as error:
        raise OutputError(
            f"{target} was replaced, but its earlier contents moved aside to {old} cannot be "
            f"removed ({error.strerror or error}); remove {old} by hand"
        ) from None


def pending_replacement(target: Path) -> bool:
    """Whether a replacement of `target` was left half done (see recover_directory)."""
    new, old = _siblings(Path(target))
    return new.is_dir() or old.is_dir()


@contextlib.contextmanager
def replacing_directory(target: str | os.PathLike[str], what: str = "") -> Iterator[Path]:
    """Build a directory's replacement and publish it only if the block succeeds:

        with replacing_directory(out_dir, "bundle") as staged:
            ...  # write everything into `staged`

    The lock is held throughout; on an error the staged directory is removed and `target` is
    untouched.
    """
    target = Path(target)
    with OutputLock(target, what or str(target)):
        recover_directory(target)
        if target.exists():
            check_replaceable(target, what or str(target))
        staged = staging_directory(target)
        try:
            yield staged
            replace_directory(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
