"""The runtime's public API: load a bundle, generate, encode, decode, inpaint.

    pipe = Pipeline.load("runs/digits/bundle")
    out = pipe.generate(n=8, seeds=0, classes=3, guidance=1.0)
    out.save_png("samples/")

The K-step loop follows SAMPLING_CONTRACT.md: the initial state is Philox subsequence 0 at
p = 0.5; step i runs the step graph (`step_guided` when any guidance is > 0), then draws with
subsequence i + 1, except the last step, which thresholds p0 > 0.5; the inpainting mask is
written back after the initial state and after every step. Requests above the bundle's
max_batch run in chunks; each chunk borrows a loop whose arrays were allocated once
(Backend.loop), so the loop itself allocates nothing. Every argument is checked before any work
starts, with one clear InvalidRequestError per problem.

Threads: one Pipeline may be shared by any number of threads. Each call borrows its own loop
state; the onnxruntime sessions are shared, and their runs are thread-safe. An image's bits do
not depend on what other threads do (tested).

Memory: `generate` returns every image of a request at once; `iter_generate` yields one chunk at
a time (at most max_batch images), so its memory stays bounded whatever n is.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, overload

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from . import backends, philox
from .backends import BackendOptions
from .backends.base import PRECISIONS
from .errors import CancelledError, CodeNotSettledWarning, InvalidRequestError
from .images import from_float, make_grid, nchw_to_nhwc, nhwc_to_nchw, save_png, to_float
from .manifest import Bundle, load_bundle

# What the API takes per request; every value is checked at run time (InvalidRequestError).
Classes: TypeAlias = "int | np.integer[Any] | str | Sequence[int] | NDArray[np.integer[Any]] | None"
PerImage: TypeAlias = "float | Sequence[float] | NDArray[Any] | None"  # guidance, temperature
# callback(step, K, the chunk's current bits) after each step; returning False cancels.
StepCallback: TypeAlias = Callable[[int, int, NDArray[np.uint8]], "bool | None"]
StrPath: TypeAlias = "str | os.PathLike[str]"
DT = TypeVar("DT", bound=np.generic)

#: Most rounds of b <- threshold(encode(decode(b))) the canonical code takes to settle.
CANONICAL_ROUNDS = 32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Trace:
    """Per-step record of a generation, for parity tests with other implementations.

    states[i]: the bits fed to step i; probs[i]: what step i returned. Both (K, N, L, C).
    """

    states: NDArray[np.uint8]
    probs: NDArray[np.float32]


@dataclass
class Generation:
    images: NDArray[np.uint8]  # (N, H, W, channels)
    bits: NDArray[np.uint8]  # (N, L, C)
    seeds: NDArray[np.uint64]  # (N,)
    classes: NDArray[np.int64]  # (N,); the null class means unconditional
    trace: Trace | None = None

    def save_png(self, directory: StrPath, prefix: str = "") -> list[Path]:
        """Write one PNG per image, named by position: {prefix}00000.png, ..."""
        folder = Path(directory)
        return [
            save_png(folder / f"{prefix}{i:05d}.png", image) for i, image in enumerate(self.images)
        ]

    def grid(self, rows: int | None = None, cols: int | None = None) -> NDArray[np.uint8]:
        return make_grid(self.images, rows=rows, cols=cols)

    def save_grid(self, path: StrPath, rows: int | None = None, cols: int | None = None) -> Path:
        return save_png(path, self.grid(rows=rows, cols=cols))


class Pipeline:
    def __init__(self, bundle: Bundle, backend: backends.Backend, precision: str = "fp32"):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.backend = backend
        self.precision = precision
        m = self.manifest
        self.num_steps = m.schedule.sampling_steps
        self.latent_shape = m.latent.shape  # (L, C)
        self.image_shape = m.image.shape  # (H, W, channels)
        self.max_batch = m.max_batch
        self.num_classes = m.classes.count
        self.null_class = m.classes.null_class

    @classmethod
    def load(
        cls,
        bundle_dir: StrPath,
        backend: str = "cpu",
        precision: str = "fp32",
        options: BackendOptions | None = None,
    ) -> Pipeline:
        """Load a bundle onto a backend: the manifest, then the graphs of `precision` (fp16:
        the *_fp16 graphs; the encoder is always fp32), each read once, its sha256 checked,
        and its session made from those very bytes and checked against the manifest (I/O and
        the facts the graph records). Graphs of the other precision are never read."""
        if precision not in PRECISIONS:
            raise InvalidRequestError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        bundle = load_bundle(bundle_dir)
        return cls(bundle, backends.create(backend, bundle, precision, options), precision)

    # --- generation ------------------------------------------------------------------------

    def generate(
        self,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        mask: npt.ArrayLike | None = None,
        known_bits: npt.ArrayLike | None = None,
        callback: StepCallback | None = None,
        trace: bool = False,
        chunk: bool = True,
        teacher_states: npt.ArrayLike | None = None,
    ) -> Generation:
        """Sample images; every image of the request is returned at once.

        n, seeds: `seeds` is a base seed (int; the images get seeds, seeds+1, ... mod 2^64,
          n of them, default 1) or one seed per image (n, if given, must match).
        classes: None (unconditional), one class for all, one per image, or "all" (image i gets
          class i % number of classes); the null class (= number of classes) is also
          unconditional.
        guidance, temperature: scalars or one per image (default: the bundle's defaults).
        mask, known_bits: inpainting in latent space, (L, C) or (N, L, C) of 0/1; where mask
          is 1 the known bit is kept.
        callback(step, K, bits): called after each step (step = 1..K) of each chunk with the
          chunk's current bits (a view, valid during the call); returning False cancels. A
          backend that runs the K steps as one CUDA graph ("tensorrt") calls it once per
          chunk, with step = K, unless trace or teacher_states ask for the steps.
        trace: record every step's input bits and probabilities (Generation.trace).
        chunk: split batches above the bundle's max_batch (else such a batch is an error).
        teacher_states: (K, N, L, C) bits fed to each step instead of our own (parity tests).
        """
        request = self._request(
            n, seeds, classes, guidance, temperature, mask, known_bits, chunk, teacher_states
        )
        count = request.count
        self._check_result_fits(count, trace)
        K = self.num_steps
        bits = np.empty((count,) + self.latent_shape, np.uint8)
        images = np.empty((count,) + self.image_shape, np.uint8)
        record = None
        if trace:
            record = Trace(
                np.empty((K, count) + self.latent_shape, np.uint8),
                np.empty((K, count) + self.latent_shape, np.float32),
            )
        for lo, hi in _chunks(count, self.max_batch):
            self._sample_chunk(request, lo, hi, bits[lo:hi], callback, record)
            images[lo:hi] = self.decode(bits[lo:hi])
        return Generation(images, bits, request.seeds(0, count), request.classes(0, count), record)

    def iter_generate(
        self,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        mask: npt.ArrayLike | None = None,
        known_bits: npt.ArrayLike | None = None,
        callback: StepCallback | None = None,
    ) -> Iterator[Generation]:
        """Sample like `generate`, yielding one Generation per chunk of at most max_batch images,
        in order, as each is decoded: memory stays bounded whatever n is. All arguments are
        checked before the first chunk starts."""
        request = self._request(
            n, seeds, classes, guidance, temperature, mask, known_bits, True, None
        )

        def chunks() -> Iterator[Generation]:
            for lo, hi in _chunks(request.count, self.max_batch):
                bits = np.empty((hi - lo,) + self.latent_shape, np.uint8)
                self._sample_chunk(request, lo, hi, bits, callback, None)
                yield Generation(
                    self.decode(bits), bits, request.seeds(lo, hi), request.classes(lo, hi)
                )

        return chunks()

    def _request(
        self,
        n: int | None,
        seeds: philox.Seeds | None,
        classes: Classes,
        guidance: PerImage,
        temperature: PerImage,
        mask: npt.ArrayLike | None,
        known_bits: npt.ArrayLike | None,
        chunk: bool,
        teacher_states: npt.ArrayLike | None,
    ) -> Request:
        """Check every argument; scalars stay scalars (memory does not grow with n)."""
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
        self._check_batch(count, chunk)
        class_spec = self._classes(classes, count)
        per_image_guidance, per_image_temperature = self._guidance_temperature(
            guidance, temperature, count
        )
        keep, known = self._mask(mask, known_bits, count)
        teacher = self._teacher(teacher_states, count)
        return Request(
            count,
            base,
            seed_list,
            class_spec,
            self.num_classes,
            per_image_guidance,
            per_image_temperature,
            keep,
            known,
            teacher,
            bool(np.any(per_image_guidance > 0)),
        )

    def check_request(
        self,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        mask: npt.ArrayLike | None = None,
        known_bits: npt.ArrayLike | None = None,
        chunk: bool = True,
    ) -> Request:
        """Check a request's arguments exactly as `generate` does, without running it.

        Raises InvalidRequestError for the first problem found. A server checks each client
        request with this before it batches requests together (bld_serving), so one bad
        request is refused alone; `Request.rows` gives a checked request's per-image values.
        """
        return self._request(
            n, seeds, classes, guidance, temperature, mask, known_bits, chunk, None
        )

    def _sample_chunk(
        self,
        r: Request,
        lo: int,
        hi: int,
        out: NDArray[np.uint8],
        callback: StepCallback | None,
        record: Trace | None,
    ) -> None:
        """Run the K steps for images lo..hi-1 of request r on a borrowed loop; bits -> out."""
        K = self.num_steps
        with self.backend.loop(hi - lo) as loop:
            loop.start(
                r.seeds(lo, hi),
                r.classes(lo, hi),
                _rows(r.temperature, lo, hi),
                _rows(r.guidance, lo, hi),
                r.guided,
                _rows(r.mask, lo, hi),
                _rows(r.known, lo, hi),
            )
            if r.teacher is None and record is None and loop.run_all():
                if callback is not None and callback(K, K, loop.bits_view()) is False:
                    raise CancelledError(
                        f"generation cancelled by the callback after step {K} of {K}"
                    )
                loop.read_bits(out)
                return
            for i in range(K):
                if r.teacher is not None:
                    loop.set_bits(r.teacher[i, lo:hi])
                if record is not None:
                    loop.read_bits(record.states[i, lo:hi])
                loop.run_step(i)
                if record is not None:
                    loop.read_probs(record.probs[i, lo:hi])
                loop.advance(i)
                if callback is not None and callback(i + 1, K, loop.bits_view()) is False:
                    raise CancelledError(
                        f"generation cancelled by the callback after step {i + 1} of {K}"
                    )
            loop.read_bits(out)

    def _check_result_fits(self, count: int, trace: bool) -> None:
        """generate() holds the whole result in memory: refuse one that cannot fit, before
        allocating it (iter_generate streams any size)."""
        L, C = self.latent_shape
        per_image = (
            L * C + math.prod(self.image_shape) + (self.num_steps * L * C * 5 if trace else 0)
        )
        needed, memory = count * per_image, _physical_memory()
        if memory is not None and needed > memory // 2:
            raise InvalidRequestError(
                f"{count} images need {needed / 2**30:.1f} GiB at once, more than half of this "
                f"machine's {memory / 2**30:.1f} GiB; use iter_generate (bld sample streams) or "
                "ask for fewer"
            )

    def inpaint(
        self,
        image: npt.ArrayLike,
        regenerate: npt.ArrayLike,
        seed: int = 0,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        callback: StepCallback | None = None,
    ) -> Generation:
        """Regenerate the region of one image (H, W, ch) where `regenerate` (H, W) is True.

        The image is encoded deterministically (p > 0.5); every latent token that touches the
        region is regenerated (latent_mask), the other tokens keep the image's bits.
        """
        known = self.encode(np.asarray(image)[None])
        keep = self.latent_mask(regenerate)
        return self.generate(
            seeds=seed,
            classes=classes,
            guidance=guidance,
            temperature=temperature,
            mask=keep,
            known_bits=known,
            callback=callback,
        )

    def latent_mask(self, regenerate: npt.ArrayLike) -> NDArray[np.uint8]:
        """Image-space mask (H, W), True = regenerate -> latent keep-mask (L, C) uint8.

        Conservative: a token is regenerated if any pixel it covers is to be regenerated, so
        nothing inside the region keeps the old image's bits.
        """
        H, W, _ = self.image_shape
        region = np.asarray(regenerate, bool)
        if region.shape != (H, W):
            raise InvalidRequestError(
                f"the mask must be {H}x{W} (the image size), got shape {region.shape}"
            )
        lh, lw = self.manifest.latent.height, self.manifest.latent.width
        rows = np.arange(H) * lh // H  # the token row each pixel row falls in
        cols = np.arange(W) * lw // W
        touched = np.zeros((lh, lw), bool)
        np.logical_or.at(touched, (rows[:, None], cols[None, :]), region)
        keep = ~touched.reshape(lh * lw, 1)
        return np.broadcast_to(keep, self.latent_shape).astype(np.uint8)

    # --- autoencoder -----------------------------------------------------------------------

    def encode_probs(self, images: npt.ArrayLike, chunk: bool = True) -> NDArray[np.float32]:
        """uint8 images (N, H, W, ch) -> float32 (N, L, C) encoder bit probabilities."""
        checked = self._check_images(images)
        self._check_batch(len(checked), chunk)
        x = nhwc_to_nchw(to_float(checked))
        return np.concatenate(
            [
                self.backend.encode(x[lo : lo + self.max_batch])
                for lo in range(0, len(x), self.max_batch)
            ]
        )

    def encode(
        self,
        images: npt.ArrayLike,
        seed: philox.Seeds | None = None,
        canonical: bool = False,
        rounds: int = CANONICAL_ROUNDS,
        chunk: bool = True,
    ) -> NDArray[np.uint8]:
        """uint8 images (N, H, W, ch) -> bits uint8 (N, L, C).

        Default: the paper's deterministic code, bit = p > 0.5 (one encoder call per chunk).
        seed (a base seed or one per image): draw each bit from the encoder's p with Philox
          subsequence 0 instead.
        canonical: carry the p > 0.5 code to its canonical code (see `canonical`), so that
          encode(decode(encode(x))) == encode(x) exactly. It costs up to 2 * rounds more graph
          calls per chunk, and the canonical code decodes less faithfully than p > 0.5 (README).
        """
        if canonical and seed is not None:
            raise InvalidRequestError("canonical encoding is deterministic: it takes no seed")
        _check_rounds(rounds)
        probs = self.encode_probs(images, chunk)
        if seed is not None:
            return philox.bernoulli(probs, philox.request_seeds(seed, len(probs)), 0)
        bits = _threshold(probs)
        return self.canonical(bits, rounds, chunk) if canonical else bits

    def canonical(
        self, bits: npt.ArrayLike, rounds: int = CANONICAL_ROUNDS, chunk: bool = True
    ) -> NDArray[np.uint8]:
        """The canonical code of `bits`: where iterating T(b) = threshold(encode(decode(b))) ends.

        A thresholded code need not be a fixed point of T: the decoder renders every bit, but
        the encoder may read a bit the image barely carries the other way. Each latent follows
        its orbit under T until a code repeats; the orbit has then entered a cycle, and the
        canonical code is the cycle's smallest member (bytewise), usually the one fixed point.
        Every code on the cycle has the same canonical code, so canonical(T(c)) == c and
        deterministic encoding is idempotent: encode(decode(encode(x))) == encode(x).
        A latent whose orbit has not closed after `rounds` evaluations of T is returned as the
        last code reached, with a CodeNotSettledWarning. rounds=0 returns the bits unchanged.
        """
        codes, settled = self.settle(bits, rounds, chunk)
        if rounds and not settled.all():
            warnings.warn(
                f"{int((~settled).sum())} of {len(codes)} latents did not settle under "
                f"encode(decode(.)) in {rounds} round{'s' if rounds > 1 else ''}",
                CodeNotSettledWarning,
                stacklevel=2,
            )
        return codes

    def settle(
        self, bits: npt.ArrayLike, rounds: int = CANONICAL_ROUNDS, chunk: bool = True
    ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """(canonical codes, bool (N,) whether each latent's orbit closed): see `canonical`."""
        _check_rounds(rounds)
        checked = self._check_bits(bits, "bits")
        return settle_orbits(
            checked, lambda b: _threshold(self.encode_probs(self.decode(b, chunk), chunk)), rounds
        )

    def decode(self, bits: npt.ArrayLike, chunk: bool = True) -> NDArray[np.uint8]:
        """Bits (N, L, C) of 0/1 -> uint8 images (N, H, W, ch)."""
        checked = self._check_bits(bits, "bits")
        self._check_batch(len(checked), chunk)
        x = np.concatenate(
            [
                self.backend.decode(checked[lo : lo + self.max_batch])
                for lo in range(0, len(checked), self.max_batch)
            ]
        )
        return from_float(nchw_to_nhwc(x))

    def step_probs(
        self,
        bits: npt.ArrayLike,
        step: int,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
    ) -> NDArray[np.float32]:
        """One step graph call on given bits (N, L, C): the probabilities it returns.

        Outside the loop (it allocates): for parity tests and tools.
        """
        checked = self._check_bits(bits, "bits")
        count = len(checked)
        try:
            index = operator.index(step)
        except TypeError:
            raise InvalidRequestError(f"step must be an integer, got {step!r}") from None
        if not 0 <= index < self.num_steps:
            raise InvalidRequestError(f"step must be in 0..{self.num_steps - 1}, got {index}")
        class_spec = self._classes(classes, count)
        labels = np.arange(count) % self.num_classes if isinstance(class_spec, str) else class_spec
        g, t = self._guidance_temperature(guidance, temperature, count)
        rows = (count,)
        return self.backend.step_probs(
            checked,
            np.full(count, index, np.int64),
            np.broadcast_to(labels, rows),
            np.broadcast_to(t, rows),
            np.broadcast_to(g, rows) if np.any(g > 0) else None,
        )

    # --- argument checks -------------------------------------------------------------------

    def _guidance_temperature(
        self, guidance: PerImage, temperature: PerImage, count: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Per-image guidance (finite, >= 0) and temperature (finite, > 0), bundle defaults
        where None."""
        defaults = self.manifest.defaults
        return (
            self._per_image(
                "guidance", guidance, defaults.guidance, count, lambda g: g >= 0, "finite and >= 0"
            ),
            self._per_image(
                "temperature",
                temperature,
                defaults.temperature,
                count,
                lambda t: t > 0,
                "finite and > 0",
            ),
        )

    def _check_batch(self, count: int, chunk: bool) -> None:
        if count < 1:
            raise InvalidRequestError(f"batch size must be at least 1, got {count}")
        if count > self.max_batch and not chunk:
            raise InvalidRequestError(
                f"batch size {count} is above this bundle's max_batch of {self.max_batch} "
                f"(allow chunking or send fewer images)"
            )

    def _classes(self, classes: Classes, count: int) -> NDArray[np.int64] | str:
        """A 0-d int64 array (one class for all), (count,) int64, or "all"."""
        if classes is None:
            return np.array(self.null_class, np.int64)
        if isinstance(classes, str):
            if classes != "all":
                raise InvalidRequestError(f"classes must be integers or 'all', got {classes!r}")
            if not self.num_classes:
                raise InvalidRequestError("classes='all': this bundle is unconditional")
            return classes
        arr = np.asarray(classes)
        if arr.dtype.kind not in "ui" or arr.ndim > 1:
            raise InvalidRequestError(
                f"classes must be integers (one, or one per image), got {classes!r}"
            )
        if arr.ndim == 1 and len(arr) != count:
            raise InvalidRequestError(f"got {len(arr)} classes for {count} images")
        bad = arr[(arr < 0) | (arr > self.null_class)]
        if bad.size:
            raise InvalidRequestError(
                f"class {bad.flat[0]} is out of range: this bundle has classes "
                f"0..{self.num_classes - 1} ({self.null_class} = unconditional)"
                if self.num_classes
                else f"class {bad.flat[0]} is out of range: this bundle is unconditional (class 0)"
            )
        return arr.astype(np.int64)

    @staticmethod
    def _per_image(
        name: str,
        value: PerImage,
        default: float,
        count: int,
        ok: Callable[[float], bool],
        rule: str,
    ) -> NDArray[np.float32]:
        """float32: 0-d (one value for all) or (count,)."""
        given = default if value is None else value
        try:
            arr = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{name} must be a number, got {given!r}") from None
        if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != count):
            raise InvalidRequestError(
                f"{name} must be one number or one per image ({count}), got shape {arr.shape}"
            )
        for v in arr.reshape(-1):
            if not (math.isfinite(v) and ok(v)):
                raise InvalidRequestError(f"{name} must be {rule}, got {v:g}")
            if abs(v) > _FLOAT32_MAX:  # the graphs take float32
                raise InvalidRequestError(
                    f"{name} must be at most {_FLOAT32_MAX:.4g} (float32), got {v:g}"
                )
        return arr.astype(np.float32)

    def _check_images(self, images: npt.ArrayLike) -> NDArray[np.uint8]:
        arr = np.asarray(images)
        H, W, ch = self.image_shape
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (H, W, ch):
            raise InvalidRequestError(
                f"images must be uint8 shaped (N, {H}, {W}, {ch}), got {arr.dtype} {arr.shape}"
            )
        return arr

    def _check_bits(
        self, bits: npt.ArrayLike, name: str, count: int | None = None
    ) -> NDArray[np.uint8]:
        arr = np.asarray(bits)
        L, C = self.latent_shape
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

    def _mask(
        self, mask: npt.ArrayLike | None, known: npt.ArrayLike | None, count: int
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | tuple[None, None]:
        if mask is None and known is None:
            return None, None
        if mask is None or known is None:
            raise InvalidRequestError("inpainting needs both mask and known_bits")
        # (1 or count, L, C): one mask for every image stays one mask
        return self._check_bits(mask, "mask", count), self._check_bits(known, "known_bits", count)

    def _teacher(self, states: npt.ArrayLike | None, count: int) -> NDArray[np.uint8] | None:
        if states is None:
            return None
        arr = np.asarray(states)
        want = (self.num_steps, count, *self.latent_shape)
        if arr.shape != want:
            raise InvalidRequestError(f"teacher_states must have shape {want}, got {arr.shape}")
        return arr.astype(np.uint8, copy=False)


@dataclass(frozen=True)
class Request:
    """A checked request of `count` images (Pipeline.check_request). Values the same for every
    image are kept once, so a request's size costs no memory; `seeds(lo, hi)` and the like give
    the rows of a chunk."""

    count: int
    base_seed: int  # image i's seed is base_seed + i (mod 2^64) ...
    seed_list: NDArray[np.uint64] | None  # ... unless one seed per image was given
    class_spec: NDArray[np.int64] | str  # 0-d, (count,) or "all"
    num_classes: int
    guidance: NDArray[np.float32]  # 0-d or (count,)
    temperature: NDArray[np.float32]
    mask: NDArray[np.uint8] | None  # (1 or count, L, C)
    known: NDArray[np.uint8] | None
    teacher: NDArray[np.uint8] | None
    guided: bool

    def seeds(self, lo: int, hi: int) -> NDArray[np.uint64]:
        if self.seed_list is not None:
            return self.seed_list[lo:hi]
        return np.uint64(self.base_seed) + np.arange(lo, hi, dtype=np.uint64)  # wraps

    def classes(self, lo: int, hi: int) -> NDArray[np.int64]:
        if isinstance(self.class_spec, str):  # "all"
            return np.arange(lo, hi, dtype=np.int64) % self.num_classes
        return np.broadcast_to(self.class_spec, (self.count,))[lo:hi].copy()

    def rows(self, lo: int, hi: int) -> dict[str, NDArray[Any] | None]:
        """Images lo..hi-1 as `generate`'s keyword arguments, one row per image (mask and
        known_bits None without inpainting): checked requests concatenated row-wise make one
        valid request."""
        return {
            "seeds": self.seeds(lo, hi),
            "classes": self.classes(lo, hi),
            "guidance": _rows(self.guidance, lo, hi),
            "temperature": _rows(self.temperature, lo, hi),
            "mask": _rows(self.mask, lo, hi),
            "known_bits": _rows(self.known, lo, hi),
        }


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


def _chunks(count: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, count, size):
        yield lo, min(lo + size, count)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def _threshold(probs: NDArray[np.float32]) -> NDArray[np.uint8]:
    return (probs > np.float32(0.5)).astype(np.uint8)


def _check_rounds(rounds: object) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise InvalidRequestError(f"rounds must be an integer >= 0, got {rounds!r}")


def settle_orbits(
    bits: npt.ArrayLike,
    step: Callable[[NDArray[np.uint8]], NDArray[np.uint8]],
    rounds: int,
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Follow each code's orbit under `step` (a batch map of codes) until a code repeats.

    Returns (codes, settled): a settled latent gets the smallest member (bytewise, packed) of
    the cycle its orbit entered, so every member of that cycle gets the same code; the others
    get the last code reached after `rounds` steps. `step` only sees latents still moving.
    """
    codes = np.array(bits, dtype=np.uint8, copy=True)
    settled = np.zeros(len(codes), bool)
    orbits = [[np.packbits(b).tobytes()] for b in codes]  # codes visited, in order
    moving = np.arange(len(codes))
    for _ in range(rounds):
        again = step(codes[moving])
        codes[moving] = again
        for i, code in zip(moving, again, strict=True):
            key = np.packbits(code).tobytes()
            orbit = orbits[i]
            if key in orbit:  # the orbit closed: orbit[start:] is its cycle
                smallest = min(orbit[orbit.index(key) :])
                codes[i] = np.unpackbits(
                    np.frombuffer(smallest, np.uint8), count=code.size
                ).reshape(code.shape)
                settled[i] = True
            else:
                orbit.append(key)
        moving = moving[~settled[moving]]
        if not len(moving):
            break
    return codes, settled
