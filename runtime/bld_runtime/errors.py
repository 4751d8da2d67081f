"""Typed errors. Each carries one clear sentence; CLIs print it without a traceback."""


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


class PackedBitsError(BldError):
    """A packed-bits file that is corrupt or does not match the bundle's latent shape."""


class CancelledError(BldError):
    """Generation stopped because a callback asked for it."""


class BldWarning(UserWarning):
    """Base class of the warnings this project issues."""


class CodeNotSettledWarning(BldWarning):
    """Deterministic encoding ran out of rounds before some latents reached their canonical code."""
