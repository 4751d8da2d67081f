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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from . import backends, philox
from .backends import ALL_PRECISIONS, BackendOptions
from .errors import CancelledError, CodeNotSettledWarning, InvalidRequestError
from .images import from_decoder, make_grid, nhwc_to_nchw, save_png, to_float
from .manifest import Bundle, load_bundle
from .request import (
    Classes,
    PerImage,
    Request,
    RequestRules,
    check_batch,
    check_bits,
    check_classes,
    check_guidance_temperature,
)

__all__ = [
    "CANONICAL_ROUNDS",
    "Generation",
    "Pipeline",
    "StepCallback",
    "Trace",
    "settle_orbits",
]

# callback(step, K, the chunk's current bits) after each step; returning False cancels.
StepCallback: TypeAlias = Callable[[int, int, NDArray[np.uint8]], "bool | None"]
StrPath: TypeAlias = "str | os.PathLike[str]"

#: Most rounds of b <- threshold(encode(decode(b))) the canonical code takes to settle.
CANONICAL_ROUNDS = 32


@dataclass
class Trace:
    """Per-step record of a generation, for parity tests with other implementations.

    Attributes:
        states: uint8 (K, N, L, C); states[i] is the bits fed to step i.
        probs: float32 (K, N, L, C); probs[i] is what step i returned.
    """

    states: NDArray[np.uint8]
    probs: NDArray[np.float32]


@dataclass
class Generation:
    """Generated images with their bits, seeds and classes.

    Attributes:
        images: uint8 (N, H, W, channels).
        bits: uint8 (N, L, C) of 0/1, the latents the images decode from.
        seeds: uint64 (N,).
        classes: int64 (N,); the null class means unconditional.
        trace: The per-step record, when asked for (`Pipeline.generate(trace=True)`).
    """

    images: NDArray[np.uint8]  # (N, H, W, channels)
    bits: NDArray[np.uint8]  # (N, L, C)
    seeds: NDArray[np.uint64]  # (N,)
    classes: NDArray[np.int64]  # (N,); the null class means unconditional
    trace: Trace | None = None

    def save_png(self, directory: StrPath, prefix: str = "") -> list[Path]:
        """Write one PNG per image, named by position: {prefix}00000.png, ...

        Args:
            directory: The folder to write to.
            prefix: Put before each file's number.

        Returns:
            The paths written, in order.
        """
        folder = Path(directory)
        return [
            save_png(folder / f"{prefix}{i:05d}.png", image) for i, image in enumerate(self.images)
        ]

    def grid(self, rows: int | None = None, cols: int | None = None) -> NDArray[np.uint8]:
        """The images tiled into one image.

        Args:
            rows: Rows of the grid (default: from cols, or a near-square grid).
            cols: Columns of the grid.

        Returns:
            uint8 (H', W', channels): the tiles, 2 black pixels apart.
        """
        return make_grid(self.images, rows=rows, cols=cols)

    def save_grid(self, path: StrPath, rows: int | None = None, cols: int | None = None) -> Path:
        """Write `grid(rows, cols)` as one PNG.

        Args:
            path: The PNG file.
            rows: As in `grid`.
            cols: As in `grid`.

        Returns:
            The path written.
        """
        return save_png(path, self.grid(rows=rows, cols=cols))


class Pipeline:
    """A bundle loaded onto a backend: generate, encode, decode and inpaint.

    Args:
        bundle: A loaded bundle (`manifest.load_bundle`).
        backend: The backend running the bundle's graphs.
        precision: "fp32", "fp16" or "int8", the graphs the backend runs; "bf16": the fp32
            graphs in bfloat16 ("openvino" backend).

    Attributes:
        num_steps: K, the number of denoising steps.
        latent_shape: (L, C), the shape of one image's bits.
        image_shape: (H, W, channels).
        max_batch: The most images one graph call takes; larger requests run in chunks.
        num_classes: The number of classes; `null_class` (the same number) is unconditional.
    """

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

    @property
    def rules(self) -> RequestRules:
        """What requests are checked against: this pipeline's classes, latent shape,
        max_batch, steps and the bundle's default guidance and temperature."""
        defaults = self.manifest.defaults
        return RequestRules(
            num_classes=self.num_classes,
            latent_shape=self.latent_shape,
            max_batch=self.max_batch,
            num_steps=self.num_steps,
            guidance=defaults.guidance,
            temperature=defaults.temperature,
        )

    @classmethod
    def load(
        cls,
        bundle_dir: StrPath,
        backend: str = "cpu",
        precision: str = "fp32",
        options: BackendOptions | None = None,
    ) -> Pipeline:
        """Load a bundle onto a backend.

        The manifest is read and checked, then the graphs of `precision` (fp16: the *_fp16
        graphs, the encoder is always fp32; int8: the *_int8 step graphs), each read once, its
        sha256 checked, and its session made from those very bytes and checked against the
        manifest (I/O and the facts the graph records). Graphs of other precisions are never
        read.

        Args:
            bundle_dir: The bundle's folder.
            backend: A backend name ("cpu", "cuda", "tensorrt-ep", "tensorrt", or one a
                plug-in adds).
            precision: "fp32", "fp16", "int8" (the *_int8 step graphs; backend "cpu" on a
                CPU with VNNI or AMX-INT8), or "bf16" (the fp32 graphs in bfloat16; backend
                "openvino" on a CPU with AVX512_BF16 or AMX).
            options: Session and device settings.

        Returns:
            The loaded pipeline.

        Raises:
            InvalidRequestError: An unknown precision or bad options.
            ManifestError: A bundle that fails its checks.
            BackendUnavailableError: A backend that cannot run here.
        """
        if precision not in ALL_PRECISIONS:
            raise InvalidRequestError(
                f"precision must be one of {', '.join(ALL_PRECISIONS)}, got {precision!r}"
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

        Args:
            n: The number of images with a base seed (default 1); with one seed per image,
                n (if given) must match their number.
            seeds: A base seed (int; the images get seeds, seeds+1, ... mod 2^64) or one
                seed per image.
            classes: None (unconditional), one class for all, one per image, or "all"
                (image i gets class i % number of classes); the null class (= number of
                classes) is also unconditional.
            guidance: A scalar or one per image, finite and >= 0 (default: the bundle's).
            temperature: A scalar or one per image, finite and > 0 (default: the bundle's).
            mask: Inpainting in latent space, (L, C) or (N, L, C) of 0/1; where mask is 1
                the known bit is kept.
            known_bits: The known bits, shaped as mask.
            callback: callback(step, K, bits), called after each step (step = 1..K) of each
                chunk with the chunk's current bits (a view, valid during the call);
                returning False cancels. A backend that runs the K steps as one CUDA graph
                ("tensorrt") calls it once per chunk, with step = K, unless trace or
                teacher_states ask for the steps.
            trace: Record every step's input bits and probabilities (Generation.trace).
            chunk: Split batches above the bundle's max_batch (else such a batch is an
                error).
            teacher_states: (K, N, L, C) bits fed to each step instead of our own (parity
                tests).

        Returns:
            The images, their bits, seeds and classes (and the trace if asked for).

        Raises:
            InvalidRequestError: A bad argument (`request.Request.build`), or a result too
                large for this machine's memory.
            CancelledError: The callback returned False.
            BackendError: A graph call failed.
        """
        request = self._request(
            n, seeds, classes, guidance, temperature, mask, known_bits, chunk, teacher_states
        )
        return self.run(request, callback=callback, trace=trace)

    def run(
        self, request: Request, *, callback: StepCallback | None = None, trace: bool = False
    ) -> Generation:
        """Sample a checked request (`check_request`, `request.Request.concat`) at once.

        Args:
            request: A request checked against this pipeline's rules.
            callback: As in `generate`.
            trace: As in `generate`.

        Returns:
            The images, their bits, seeds and classes (and the trace if asked for).

        Raises:
            InvalidRequestError: A result too large for this machine's memory.
            CancelledError: The callback returned False.
            BackendError: A graph call failed.
        """
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
        with self.backend.pinned_caller():  # BackendOptions.pin_threads
            for lo, hi in _chunks(count, self.max_batch):
                self._sample_chunk(request, lo, hi, bits[lo:hi], callback, record)
                images[lo:hi] = self._decode_batch(bits[lo:hi])  # our own bits: no checks
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
        """Sample like `generate`, one Generation per chunk of at most max_batch images.

        The chunks come in order, as each is decoded: memory stays bounded whatever n is.
        All arguments are checked before the first chunk starts.

        Args:
            n, seeds, classes, guidance, temperature, mask, known_bits, callback: As in `generate`.

        Returns:
            An iterator of Generations, one per chunk.

        Raises:
            InvalidRequestError: A bad argument, at once.
        """
        request = self.check_request(n, seeds, classes, guidance, temperature, mask, known_bits)

        def chunks() -> Iterator[Generation]:
            for lo, hi in _chunks(request.count, self.max_batch):
                bits = np.empty((hi - lo,) + self.latent_shape, np.uint8)
                with self.backend.pinned_caller():  # for the chunk, not while it is out
                    self._sample_chunk(request, lo, hi, bits, callback, None)
                    images = self._decode_batch(bits)  # our own bits: no checks
                yield Generation(images, bits, request.seeds(lo, hi), request.classes(lo, hi))

        return chunks()

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

        A server checks each client request with this before it batches requests together
        (bld_serving), so one bad request is refused alone; `Request.concat` joins checked
        requests and `run` samples them.

        Args:
            n, seeds, classes, guidance, temperature, mask, known_bits, chunk: As in `generate`.

        Returns:
            The checked request.

        Raises:
            InvalidRequestError: For the first problem found.
        """
        return self._request(
            n, seeds, classes, guidance, temperature, mask, known_bits, chunk, None
        )

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
        """`Request.build` against this pipeline's rules."""
        return Request.build(
            self.rules,
            n=n,
            seeds=seeds,
            classes=classes,
            guidance=guidance,
            temperature=temperature,
            mask=mask,
            known_bits=known_bits,
            chunk=chunk,
            teacher_states=teacher_states,
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
            loop.start(r.chunk(lo, hi))
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
        """Regenerate the region of one image where `regenerate` is True.

        The image is encoded deterministically (p > 0.5); every latent token that touches the
        region is regenerated (latent_mask), the other tokens keep the image's bits.

        Args:
            image: uint8 (H, W, channels).
            regenerate: bool (H, W), True where to regenerate.
            seed: The image's seed.
            classes, guidance, temperature, callback: As in `generate`.

        Returns:
            One generated image.

        Raises:
            InvalidRequestError: A bad image, region or argument.
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
        """The latent keep-mask of an image-space region to regenerate.

        Conservative: a token is regenerated if any pixel it covers is to be regenerated, so
        nothing inside the region keeps the old image's bits.

        Args:
            regenerate: bool (H, W), True where to regenerate.

        Returns:
            uint8 (L, C), 1 where the token's bits are kept.

        Raises:
            InvalidRequestError: A region of another size than the images'.
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
        """The encoder's bit probabilities of images.

        Args:
            images: uint8 (N, H, W, channels).
            chunk: Split batches above max_batch (else such a batch is an error).

        Returns:
            float32 (N, L, C).

        Raises:
            InvalidRequestError: Bad images, or too many without chunk.
        """
        checked = self._check_images(images)
        check_batch(len(checked), self.max_batch, chunk)
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
        """Encode images to bits.

        Default: the paper's deterministic code, bit = p > 0.5 (one encoder call per chunk).

        Args:
            images: uint8 (N, H, W, channels).
            seed: A base seed or one per image: draw each bit from the encoder's p with Philox
                subsequence 0 instead.
            canonical: Carry the p > 0.5 code to its canonical code (see `canonical`), so that
                encode(decode(encode(x))) == encode(x) exactly. It costs up to 2 * rounds more
                graph calls per chunk, and the canonical code decodes less faithfully than
                p > 0.5 (README).
            rounds: With canonical, the most rounds (see `canonical`).
            chunk: Split batches above max_batch (else such a batch is an error).

        Returns:
            uint8 (N, L, C) of 0/1.

        Raises:
            InvalidRequestError: Bad images or arguments.
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

        Args:
            bits: (N, L, C) or (L, C) of 0/1.
            rounds: The most evaluations of T per latent.
            chunk: Split batches above max_batch (else such a batch is an error).

        Returns:
            uint8 (N, L, C), the canonical codes.

        Raises:
            InvalidRequestError: Bad bits or rounds.
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
        """The canonical codes, and whether each latent's orbit closed (see `canonical`).

        Args:
            bits: (N, L, C) or (L, C) of 0/1.
            rounds: The most evaluations of T per latent.
            chunk: Split batches above max_batch (else such a batch is an error).

        Returns:
            (uint8 (N, L, C) codes, bool (N,) settled).

        Raises:
            InvalidRequestError: Bad bits or rounds.
        """
        _check_rounds(rounds)
        checked = check_bits(bits, "bits", self.latent_shape)
        return settle_orbits(
            checked, lambda b: _threshold(self.encode_probs(self.decode(b, chunk), chunk)), rounds
        )

    def decode(self, bits: npt.ArrayLike, chunk: bool = True) -> NDArray[np.uint8]:
        """Decode bits to images.

        Args:
            bits: (N, L, C) or (L, C) of 0/1.
            chunk: Split batches above max_batch (else such a batch is an error).

        Returns:
            uint8 (N, H, W, channels).

        Raises:
            InvalidRequestError: Bad bits, or too many without chunk.
        """
        checked = check_bits(bits, "bits", self.latent_shape)
        check_batch(len(checked), self.max_batch, chunk)
        return np.concatenate(
            [
                self._decode_batch(checked[lo : lo + self.max_batch])
                for lo in range(0, len(checked), self.max_batch)
            ]
        )

    def _decode_batch(self, bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Decode at most max_batch latents of checked 0/1 bits to uint8 NHWC images."""
        return from_decoder(self.backend.decode(bits))

    def step_probs(
        self,
        bits: npt.ArrayLike,
        step: int,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
    ) -> NDArray[np.float32]:
        """One step graph call on given bits: the probabilities it returns.

        Outside the loop (it allocates): for parity tests and tools.

        Args:
            bits: (N, L, C) or (L, C) of 0/1.
            step: The step index, 0..K-1.
            classes: As in `generate`.
            guidance: As in `generate` (the guided graph runs when any is > 0).
            temperature: As in `generate`.

        Returns:
            float32 (N, L, C).

        Raises:
            InvalidRequestError: A bad argument.
        """
        checked = check_bits(bits, "bits", self.latent_shape)
        count = len(checked)
        try:
            index = operator.index(step)
        except TypeError:
            raise InvalidRequestError(f"step must be an integer, got {step!r}") from None
        if not 0 <= index < self.num_steps:
            raise InvalidRequestError(f"step must be in 0..{self.num_steps - 1}, got {index}")
        class_spec = check_classes(self.rules, classes, count)
        labels = np.arange(count) % self.num_classes if isinstance(class_spec, str) else class_spec
        g, t = check_guidance_temperature(self.rules, guidance, temperature, count)
        rows = (count,)
        return self.backend.step_probs(
            checked,
            np.full(count, index, np.int64),
            np.broadcast_to(labels, rows),
            np.broadcast_to(t, rows),
            np.broadcast_to(g, rows) if np.any(g > 0) else None,
        )

    # --- argument checks -------------------------------------------------------------------

    def _check_images(self, images: npt.ArrayLike) -> NDArray[np.uint8]:
        arr = np.asarray(images)
        H, W, ch = self.image_shape
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (H, W, ch):
            raise InvalidRequestError(
                f"images must be uint8 shaped (N, {H}, {W}, {ch}), got {arr.dtype} {arr.shape}"
            )
        return arr


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
