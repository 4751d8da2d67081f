"""The request model: what one generation asks for, built and checked once.

A `Request` holds a request's seeds, classes, guidance, temperature and inpainting mask and
known bits, checked against a bundle's `RequestRules` by `Request.build`, the one place where
the request rules and their error sentences live. Every caller builds requests here:
`Pipeline` (generate, iter_generate, check_request), `RemotePipeline` (the client shapes a
request and leaves the values to the server's check), the Triton models (each client request
is checked alone, then the checked requests are joined with `Request.concat`) and the CLIs.

Values that are the same for every image are kept once, so a request of any size costs no
memory; `Request.chunk(lo, hi)` gives the rows of images lo..hi-1 as a `RequestChunk`, what a
backend's loop takes (`Loop.start`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from . import philox
from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .manifest import Manifest

#: A request's classes: None (unconditional), one class for all, one per image, or "all".
Classes: TypeAlias = int | np.integer[Any] | str | Sequence[int] | NDArray[np.integer[Any]] | None
#: A request's guidance or temperature: one value for all, one per image, or None (default).
PerImage: TypeAlias = float | Sequence[float] | NDArray[Any] | None
DT = TypeVar("DT", bound=np.generic)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, kw_only=True)
class RequestRules:
    """What a request is checked against: the facts of the bundle that serves it.

    Attributes:
        num_classes: The number of classes; the null class (this number) is unconditional.
        latent_shape: (L, C), the shape of one image's bits.
        max_batch: The most images one graph call takes.
        num_steps: K, the number of denoising steps.
        guidance: The bundle's default guidance.
        temperature: The bundle's default temperature.
    """

    num_classes: int
    latent_shape: tuple[int, int]
    max_batch: int
    num_steps: int
    guidance: float
    temperature: float

    @property
    def null_class(self) -> int:
        """The class that means unconditional (the number of classes)."""
        return self.num_classes

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> RequestRules:
        """The rules of a bundle.

        Args:
            manifest: The bundle's checked manifest.

        Returns:
            Its classes, latent shape, max_batch, steps and default guidance and temperature.
        """
        return cls(
            num_classes=manifest.classes.count,
            latent_shape=manifest.latent.shape,
            max_batch=manifest.max_batch,
            num_steps=manifest.schedule.sampling_steps,
            guidance=manifest.defaults.guidance,
            temperature=manifest.defaults.temperature,
        )


@dataclass(frozen=True, kw_only=True)
class RequestChunk:
    """The rows of one chunk of a request, one per image: what `Loop.start` takes.

    Attributes:
        seeds: uint64 (batch,), each image's Philox seed.
        classes: int64 (batch,); the null class means unconditional.
        temperature: float32 (batch,).
        guidance: float32 (batch,).
        guided: Whether the chunk's request runs the guided step graph (any guidance > 0).
        mask: uint8 (batch, L, C) 0/1, 1 = keep the known bit; None without inpainting.
        known: uint8 (batch, L, C) 0/1, the bits kept where mask is 1; None without inpainting.
    """

    seeds: NDArray[np.uint64]
    classes: NDArray[np.int64]
    temperature: NDArray[np.float32]
    guidance: NDArray[np.float32]
    guided: bool
    mask: NDArray[np.uint8] | None = None
    known: NDArray[np.uint8] | None = None

    @property
    def batch(self) -> int:
        """The number of images (rows) of the chunk."""
        return len(self.seeds)

    def inpainting(self) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | None:
        """The chunk's (mask, known) when it inpaints, else None.

        Returns:
            (mask, known), or None when neither is given.

        Raises:
            InvalidRequestError: Only one of mask and known is given.
        """
        return inpainting_pair(self.mask, self.known)


@dataclass(frozen=True, kw_only=True)
class Request:
    """A checked request of `count` images (`Request.build`).

    Values the same for every image are kept once (0-d, or one row), so a request's size costs
    no memory; `seeds(lo, hi)`, `classes(lo, hi)`, `rows(lo, hi)` and `chunk(lo, hi)` give the
    rows of images lo..hi-1.

    Attributes:
        count: The number of images.
        base_seed: Image i's seed is base_seed + i (mod 2^64), unless seed_list is given.
        seed_list: uint64 (count,), one seed per image, or None.
        class_spec: int64, 0-d (one class for all) or (count,); or "all".
        num_classes: The bundle's number of classes ("all" cycles through them).
        guidance: float32, 0-d or (count,).
        temperature: float32, 0-d or (count,).
        mask: uint8 (1 or count, L, C), or None without inpainting.
        known: uint8 (1 or count, L, C), or None without inpainting.
        teacher: uint8 (K, count, L, C) states fed to each step (parity tests), or None.
        guided: Whether any guidance is > 0 (the guided step graph runs).
    """

    count: int
    base_seed: int
    seed_list: NDArray[np.uint64] | None
    class_spec: NDArray[np.int64] | str
    num_classes: int
    guidance: NDArray[np.float32]
    temperature: NDArray[np.float32]
    mask: NDArray[np.uint8] | None = None
    known: NDArray[np.uint8] | None = None
    teacher: NDArray[np.uint8] | None = None
    guided: bool = False

    @classmethod
    def build(
        cls,
        rules: RequestRules,
        *,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        mask: npt.ArrayLike | None = None,
        known_bits: npt.ArrayLike | None = None,
        chunk: bool = True,
        teacher_states: npt.ArrayLike | None = None,
        check_values: bool = True,
    ) -> Request:
        """Check a request's arguments, in order, and keep them as a Request.

        Args:
            rules: The bundle's rules (`RequestRules.from_manifest`).
            n: The number of images, with a base seed (default 1); if seeds are given one per
                image, n must match their number.
            seeds: A base seed (the images get seeds, seeds+1, ... mod 2^64) or one seed per
                image; None is base seed 0.
            classes: None (unconditional), one class for all, one per image, or "all" (image
                i gets class i % number of classes); the null class is also unconditional.
            guidance: One value for all or one per image, finite and >= 0; None: the
                bundle's default.
            temperature: One value for all or one per image, finite and > 0; None: the
                bundle's default.
            mask: Inpainting, (L, C) or (N, L, C) of 0/1; 1 keeps the known bit.
            known_bits: The bits kept where mask is 1, shaped as mask.
            chunk: Allow more images than the bundle's max_batch (run in chunks).
            teacher_states: (K, N, L, C) bits fed to each step instead of the loop's own.
            check_values: False checks the request's shape only (how many values, of what
                type), not the values themselves: a client leaves those to the server.

        Returns:
            The checked request.

        Raises:
            InvalidRequestError: For the first problem found, with one sentence saying it.
        """
        seed_list: NDArray[np.uint64] | None
        if isinstance(seeds, np.ndarray) and seeds.ndim == 0:
            seeds = seeds.item()
        if (
            seeds is None
            or isinstance(seeds, (int, np.integer))
            or not isinstance(seeds, (list, tuple, range, np.ndarray))
        ):
            base = philox.as_seed(0 if seeds is None else seeds)
            count, seed_list = 1 if n is None else philox.check_count(n), None
        else:
            seed_list = philox.request_seeds(seeds, n)
            base, count = 0, len(seed_list)
        check_batch(count, rules.max_batch, chunk)
        class_spec = check_classes(rules, classes, count, check_values)
        per_image_guidance, per_image_temperature = check_guidance_temperature(
            rules, guidance, temperature, count, check_values
        )
        keep, known = check_inpainting(rules, mask, known_bits, count)
        teacher = check_teacher(rules, teacher_states, count)
        return cls(
            count=count,
            base_seed=base,
            seed_list=seed_list,
            class_spec=class_spec,
            num_classes=rules.num_classes,
            guidance=per_image_guidance,
            temperature=per_image_temperature,
            mask=keep,
            known=known,
            teacher=teacher,
            guided=bool(np.any(per_image_guidance > 0)),
        )

    @classmethod
    def concat(cls, requests: Sequence[Request]) -> Request:
        """Checked requests joined row-wise into one request (what a server batches).

        Rows of a request without inpainting get an all-zero mask when others inpaint, which
        keeps nothing, so their bits are those of an unmasked request.

        Args:
            requests: At least one checked request, without teacher states.

        Returns:
            One request whose images are those of `requests`, in order.

        Raises:
            ValueError: No request is given.
        """
        if not requests:
            raise ValueError("Request.concat needs at least one request")
        everything = [(r, 0, r.count) for r in requests]
        mask = known = None
        shapes = [r.mask.shape[1:] for r in requests if r.mask is not None]
        if shapes:

            def rows_or_zeros(values: Callable[[Request], NDArray[np.uint8] | None]) -> Any:
                return np.concatenate(
                    [
                        np.zeros((r.count, *shapes[0]), np.uint8)
                        if values(r) is None
                        else _rows(values(r), 0, r.count)
                        for r in requests
                    ]
                )

            mask = rows_or_zeros(lambda r: r.mask)
            known = rows_or_zeros(lambda r: r.known)
        return cls(
            count=sum(r.count for r in requests),
            base_seed=0,
            seed_list=np.concatenate([r.seeds(lo, hi) for r, lo, hi in everything]),
            class_spec=np.concatenate([r.classes(lo, hi) for r, lo, hi in everything]),
            num_classes=requests[0].num_classes,
            guidance=np.concatenate([_rows(r.guidance, lo, hi) for r, lo, hi in everything]),
            temperature=np.concatenate([_rows(r.temperature, lo, hi) for r, lo, hi in everything]),
            mask=mask,
            known=known,
            guided=any(r.guided for r in requests),
        )

    def seeds(self, lo: int, hi: int) -> NDArray[np.uint64]:
        """The seeds of images lo..hi-1, uint64."""
        if self.seed_list is not None:
            return self.seed_list[lo:hi]
        return np.uint64(self.base_seed) + np.arange(lo, hi, dtype=np.uint64)  # wraps

    def classes(self, lo: int, hi: int) -> NDArray[np.int64]:
        """The classes of images lo..hi-1, int64 (a copy)."""
        if isinstance(self.class_spec, str):  # "all"
            return np.arange(lo, hi, dtype=np.int64) % self.num_classes
        return np.broadcast_to(self.class_spec, (self.count,))[lo:hi].copy()

    def rows(self, lo: int, hi: int) -> dict[str, NDArray[Any] | None]:
        """Images lo..hi-1 as `Pipeline.generate`'s keyword arguments, one row per image.

        Returns:
            seeds, classes, guidance, temperature, mask and known_bits (the last two None
            without inpainting): checked requests concatenated row-wise make one valid request.
        """
        return {
            "seeds": self.seeds(lo, hi),
            "classes": self.classes(lo, hi),
            "guidance": _rows(self.guidance, lo, hi),
            "temperature": _rows(self.temperature, lo, hi),
            "mask": _rows(self.mask, lo, hi),
            "known_bits": _rows(self.known, lo, hi),
        }

    def chunk(self, lo: int, hi: int) -> RequestChunk:
        """Images lo..hi-1 as a backend loop takes them (`Loop.start`)."""
        return RequestChunk(
            seeds=self.seeds(lo, hi),
            classes=self.classes(lo, hi),
            temperature=_rows(self.temperature, lo, hi),
            guidance=_rows(self.guidance, lo, hi),
            guided=self.guided,
            mask=_rows(self.mask, lo, hi),
            known=_rows(self.known, lo, hi),
        )


# --- the rules ------------------------------------------------------------------------------


def check_batch(count: int, max_batch: int, chunk: bool) -> None:
    """Refuse an empty batch, and one above max_batch unless it may run in chunks.

    Raises:
        InvalidRequestError: count < 1, or count > max_batch without chunking.
    """
    if count < 1:
        raise InvalidRequestError(f"batch size must be at least 1, got {count}")
    if count > max_batch and not chunk:
        raise InvalidRequestError(
            f"batch size {count} is above this bundle's max_batch of {max_batch} "
            f"(allow chunking or send fewer images)"
        )


def check_classes(
    rules: RequestRules, classes: Classes, count: int, check_values: bool = True
) -> NDArray[np.int64] | str:
    """A request's classes: a 0-d int64 array (one class for all), (count,) int64, or "all".

    Args:
        rules: The bundle's rules.
        classes: As `Request.build` takes them.
        count: The number of images.
        check_values: Also check that each class is in range.

    Raises:
        InvalidRequestError: Classes that are not integers, not one or one per image, out of
            range, or "all" on an unconditional bundle.
    """
    if classes is None:
        return np.array(rules.null_class, np.int64)
    if isinstance(classes, str):
        if classes != "all":
            raise InvalidRequestError(f"classes must be integers or 'all', got {classes!r}")
        if not rules.num_classes:
            raise InvalidRequestError("classes='all': this bundle is unconditional")
        return classes
    arr = np.asarray(classes)
    if arr.dtype.kind not in "ui" or arr.ndim > 1:
        raise InvalidRequestError(
            f"classes must be integers (one, or one per image), got {classes!r}"
        )
    if arr.ndim == 1 and len(arr) != count:
        raise InvalidRequestError(f"got {len(arr)} classes for {count} images")
    bad = arr[(arr < 0) | (arr > rules.null_class)]
    if check_values and bad.size:
        raise InvalidRequestError(
            f"class {bad.flat[0]} is out of range: this bundle has classes "
            f"0..{rules.num_classes - 1} ({rules.null_class} = unconditional)"
            if rules.num_classes
            else f"class {bad.flat[0]} is out of range: this bundle is unconditional (class 0)"
        )
    return arr.astype(np.int64)


def check_guidance_temperature(
    rules: RequestRules,
    guidance: PerImage,
    temperature: PerImage,
    count: int,
    check_values: bool = True,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-image guidance (finite, >= 0) and temperature (finite, > 0), float32, 0-d or
    (count,); the bundle's defaults where None.

    Raises:
        InvalidRequestError: A value that is not a number, not one or one per image, or (with
            check_values) out of its range.
    """
    return (
        _per_image(
            "guidance",
            guidance,
            rules.guidance,
            count,
            (lambda g: g >= 0, "finite and >= 0") if check_values else None,
        ),
        _per_image(
            "temperature",
            temperature,
            rules.temperature,
            count,
            (lambda t: t > 0, "finite and > 0") if check_values else None,
        ),
    )


def _per_image(
    name: str,
    value: PerImage,
    default: float,
    count: int,
    rule: tuple[Callable[[float], bool], str] | None,
) -> NDArray[np.float32]:
    """float32: 0-d (one value for all) or (count,); `rule` (ok, its words) checks each value."""
    given = default if value is None else value
    try:
        arr = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, got {given!r}") from None
    if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != count):
        raise InvalidRequestError(
            f"{name} must be one number or one per image ({count}), got shape {arr.shape}"
        )
    if rule is not None:
        ok, words = rule
        for v in arr.reshape(-1):
            if not (math.isfinite(v) and ok(v)):
                raise InvalidRequestError(f"{name} must be {words}, got {v:g}")
            if abs(v) > _FLOAT32_MAX:  # the graphs take float32
                raise InvalidRequestError(
                    f"{name} must be at most {_FLOAT32_MAX:.4g} (float32), got {v:g}"
                )
    return arr.astype(np.float32)


def check_bits(
    bits: npt.ArrayLike, name: str, latent_shape: tuple[int, int], count: int | None = None
) -> NDArray[np.uint8]:
    """Bits (N, L, C) or (L, C) of 0/1 as uint8 (N, L, C).

    Args:
        bits: The bits.
        name: Their name in the error sentences ("bits", "mask", "known_bits").
        latent_shape: (L, C).
        count: If given, the number of images: 1 or count rows are accepted.

    Raises:
        InvalidRequestError: Bits of another shape or type, or values other than 0 and 1.
    """
    arr = np.asarray(bits)
    L, C = latent_shape
    if arr.ndim == 2:
        arr = arr[None]
    if arr.dtype.kind not in "uib" or arr.ndim != 3 or arr.shape[1:] != (L, C):
        raise InvalidRequestError(
            f"{name} must be 0/1 integers shaped (N, {L}, {C}), got {arr.dtype} {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise InvalidRequestError(f"{name} must hold only 0 and 1")
    if count is not None and len(arr) not in (1, count):
        raise InvalidRequestError(f"{name} has {len(arr)} rows for {count} images")
    return arr.astype(np.uint8, copy=False)


@overload
def inpainting_pair(mask: None, known: None) -> None: ...
@overload
def inpainting_pair(
    mask: NDArray[DT] | None, known: NDArray[DT] | None
) -> tuple[NDArray[DT], NDArray[DT]] | None: ...
def inpainting_pair(
    mask: NDArray[DT] | None, known: NDArray[DT] | None
) -> tuple[NDArray[DT], NDArray[DT]] | None:
    """(mask, known) of an inpainting request, or None; they come together.

    Raises:
        InvalidRequestError: Only one of them is given.
    """
    if mask is None and known is None:
        return None
    if mask is None or known is None:
        raise InvalidRequestError("inpainting needs both mask and known_bits")
    return mask, known


def check_inpainting(
    rules: RequestRules,
    mask: npt.ArrayLike | None,
    known: npt.ArrayLike | None,
    count: int,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | tuple[None, None]:
    """A request's mask and known bits, each (1 or count, L, C) uint8: one mask for every image
    stays one mask; (None, None) without inpainting.

    Raises:
        InvalidRequestError: Only one of them is given, or either is not bits (`check_bits`).
    """
    pair = inpainting_pair(
        None if mask is None else np.asarray(mask), None if known is None else np.asarray(known)
    )
    if pair is None:
        return None, None
    return (
        check_bits(pair[0], "mask", rules.latent_shape, count),
        check_bits(pair[1], "known_bits", rules.latent_shape, count),
    )


def check_teacher(
    rules: RequestRules, states: npt.ArrayLike | None, count: int
) -> NDArray[np.uint8] | None:
    """Teacher states (K, count, L, C) as uint8, or None.

    Raises:
        InvalidRequestError: States of another shape.
    """
    if states is None:
        return None
    arr = np.asarray(states)
    want = (rules.num_steps, count, *rules.latent_shape)
    if arr.shape != want:
        raise InvalidRequestError(f"teacher_states must have shape {want}, got {arr.shape}")
    return arr.astype(np.uint8, copy=False)


@overload
def _rows(value: NDArray[DT], lo: int, hi: int) -> NDArray[DT]: ...
@overload
def _rows(value: NDArray[DT] | None, lo: int, hi: int) -> NDArray[DT] | None: ...
def _rows(value: NDArray[DT] | None, lo: int, hi: int) -> NDArray[DT] | None:
    """Rows lo..hi-1 of a per-image value, which is kept 0-d or as one row when it is the same
    for every image (a read-only broadcast view then)."""
    if value is None:
        return None
    if value.ndim == 0:
        return np.broadcast_to(value, (hi - lo,))
    if len(value) == 1:
        return np.broadcast_to(value, (hi - lo,) + value.shape[1:])
    return value[lo:hi]
