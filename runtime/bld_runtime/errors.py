"""Typed errors. Each carries one clear sentence; CLIs print it without a traceback.

Every error raised on purpose is a `BldError`; catch that to handle them all. The kinds:

    BldError
    ├── ContractError (also a ValueError)
    ├── ManifestError
    │   └── BundleIntegrityError
    ├── InvalidRequestError (also a ValueError)
    ├── BackendUnavailableError
    ├── StaleEngineError
    ├── PackedBitsError
    ├── OutputError
    ├── BackendError
    └── CancelledError

Warnings derive from `BldWarning` (a UserWarning).
"""


class BldError(Exception):
    """Base class of every error this project raises on purpose."""


class ContractError(BldError, ValueError):
    """Parameters that the sampling contract does not allow (schedule, T, K, probabilities)."""


class ManifestError(BldError):
    """A bundle manifest that does not parse, has unknown keys or wrong types."""


class BundleIntegrityError(ManifestError):
    """A bundle whose files are missing, altered (hash mismatch) or outside its directory."""


class InvalidRequestError(BldError, ValueError):
    """A sampling/encoding request with an argument out of range (seed, class, batch, ...)."""


class BackendUnavailableError(BldError):
    """A backend or execution provider that is not installed or cannot run here."""


class StaleEngineError(BldError):
    """A cached TensorRT engine that must not be loaded: altered, foreign or built for another
    graph, version, GPU, precision or batch range."""


class PackedBitsError(BldError):
    """A packed-bits file that is corrupt or does not match the bundle's latent shape."""


class OutputError(BldError):
    """An output that cannot be written as asked: in use by another process, or not ours to
    replace."""


class BackendError(BldError):
    """A graph call that failed at run time (onnxruntime or a device reported an error)."""


class CancelledError(BldError):
    """Generation stopped because a callback asked for it."""


class BldWarning(UserWarning):
    """Base class of the warnings this project issues."""


class CodeNotSettledWarning(BldWarning):
    """Deterministic encoding ran out of rounds before some latents reached their canonical code."""


def describe(error: BaseException) -> str:
    """One line for an exception that is not one of ours (the OS, a library, memory).

    Args:
        error: Any exception.

    Returns:
        The message of a BldError as it is; for an OSError its reason and file name; for
        memory, recursion and NUL-in-path errors a sentence that says what to do; otherwise
        "unexpected <type>: <message> (BLD_TRACEBACK=1 shows where)".
    """
    if isinstance(error, BldError):
        return str(error)
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        name = error.filename
        if getattr(error, "filename2", None):
            name = f"{error.filename} -> {error.filename2}"
        return f"{text}: {name}" if name else text
    if isinstance(error, MemoryError):
        return "out of memory; ask for fewer images or a smaller batch"
    if isinstance(error, RecursionError):
        return "input nested too deeply to process"
    if isinstance(error, ValueError) and "null" in str(error).lower():
        return f"a path contains a NUL character ({error})"
    text = " ".join(str(error).split()) or "no message"
    return f"unexpected {type(error).__name__}: {text} (BLD_TRACEBACK=1 shows where)"
