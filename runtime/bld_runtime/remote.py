"""Sampling on a Triton Inference Server that serves a bundle (`bld-export triton`).

    with RemotePipeline.connect("http://127.0.0.1:8000") as remote:
        out = remote.generate(n=8, seeds=0, classes=3, guidance=1.0)  # a Generation, as local

This module is the one source of the served models' protocol: their names, the names and types
of their inputs and outputs, and the config parameters that describe the bundle. The serving
package (bld_serving) writes model configs from it; the client here speaks it with
`tritonclient`, an optional dependency imported only when a server is used.

Each image is one request stating all its sampling parameters (seed, class, guidance,
temperature; the client fills in the bundle's defaults), so the server's dynamic batcher groups
concurrent requests, and an image depends only on its request, on any replica, as locally. The
server checks every request with the runtime's own rules (Pipeline.check_request); the client
only shapes the request into rows, and reports a refusal with the server's sentence.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import philox
from .bits import unpack_bits
from .errors import BldError, InvalidRequestError, ManifestError
from .manifest import ImageSpec, LatentSpec

if TYPE_CHECKING:
    from .pipeline import Classes, Generation, PerImage

T = TypeVar("T", bound=np.generic)
MODEL = "bld"  # generate: one response per request
STREAM_MODEL = "bld_stream"  # decoupled: step previews, then the final image (gRPC)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton's datatype name (UINT64, INT64, FP32, UINT8, INT32, BOOL)
    optional: bool = False


# Per-row scalars travel as dims [1]; mask and known_bits as (L, C); image as (H, W, ch); bits
# packed as bld_runtime.bits.pack_bits writes them. Requests with the same set of inputs are
# what Triton batches together.
SEED = TensorSpec("seed", "UINT64")
CLASS = TensorSpec("class", "INT64")  # the null class (= number of classes): unconditional
GUIDANCE = TensorSpec("guidance", "FP32")
TEMPERATURE = TensorSpec("temperature", "FP32")
MASK = TensorSpec("mask", "UINT8", optional=True)  # inpainting, latent space: 1 = keep
KNOWN_BITS = TensorSpec("known_bits", "UINT8", optional=True)
PREVIEW_EVERY = TensorSpec("preview_every", "INT32", optional=True)  # stream only; 0 = none
INPUTS = (SEED, CLASS, GUIDANCE, TEMPERATURE, MASK, KNOWN_BITS)
STREAM_INPUTS = INPUTS + (PREVIEW_EVERY,)

IMAGE = TensorSpec("image", "UINT8")
BITS = TensorSpec("bits", "UINT8")
STEP = TensorSpec("step", "INT32")  # stream only: the step the response shows (K = final)
FINAL = TensorSpec("final", "BOOL")  # stream only: True on the last response of a request
OUTPUTS = (IMAGE, BITS)
STREAM_OUTPUTS = OUTPUTS + (STEP, FINAL)

# config.pbtxt parameters describing the bundle, so that a client needs no copy of it.
PARAM_IMAGE = "bld_image"  # "HxWxC"
PARAM_LATENT = "bld_latent"  # "HxWxbits"
PARAM_CLASSES = "bld_classes"  # number of classes (the null class is this number)
PARAM_STEPS = "bld_steps"  # K
PARAM_GUIDANCE = "bld_default_guidance"  # the bundle's defaults, which clients send
PARAM_TEMPERATURE = "bld_default_temperature"


class RemoteError(BldError):
    """A Triton server that cannot be reached, or that refused or failed a request."""


@dataclass(frozen=True)
class ServedBundle:
    """What a client needs to know about the bundle behind a served model."""

    image: ImageSpec
    latent: LatentSpec
    num_classes: int
    num_steps: int
    max_batch: int  # the model's max_batch_size
    guidance: float  # the bundle's defaults
    temperature: float

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> ServedBundle:
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        try:
            image = ImageSpec(*(int(v) for v in params[PARAM_IMAGE].split("x")))
            latent = LatentSpec(*(int(v) for v in params[PARAM_LATENT].split("x")))
            return cls(
                image,
                latent,
                int(params[PARAM_CLASSES]),
                int(params[PARAM_STEPS]),
                int(config.get("max_batch_size", 0)) or 1,
                float(params[PARAM_GUIDANCE]),
                float(params[PARAM_TEMPERATURE]),
            )
        except (KeyError, ValueError, TypeError, ManifestError):
            raise RemoteError(
                f"{source} does not describe a bld bundle (its config lacks or "
                f"garbles the bld_* parameters that bld-export triton "
                f"writes)"
            ) from None


# How long the client waits for a server to connect and for each answer (tritonclient's
# connection and network timeouts; bld sample --server-timeout): a server that accepts the
# connection and never answers ends the run with one line instead of hanging.
DEFAULT_TIMEOUT_S = 60.0


def parse_url(url: str) -> tuple[str, str, bool]:
    """'http://h:p', 'https://h:p', 'grpc://h:p', 'grpcs://h:p' or 'h:p' -> (protocol, 'h:p',
    ssl)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url
    scheme, rest = scheme.lower(), rest.rstrip("/")
    if scheme not in ("http", "https", "grpc", "grpcs") or not rest or "/" in rest:
        raise InvalidRequestError(
            f"--server must look like http://HOST:PORT or grpc://HOST:PORT, got {url!r}"
        )
    return ("grpc" if scheme.startswith("grpc") else "http"), rest, scheme in ("https", "grpcs")


def _tritonclient(protocol: str) -> tuple[Any, type[Exception]]:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client

            _quiet_gevent()
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise BldError(
            f"sampling on a server needs tritonclient ({e}); install it with "
            f"pip install 'bld[serving]'"
        ) from None
    return client, InferenceServerException


def _quiet_gevent() -> None:
    """tritonclient's HTTP client waits in gevent's hub, where a Ctrl-C (or the CLI's
    stopping.Stopped, a KeyboardInterrupt) lands: the hub prints it with a timestamp before
    handing it to the program, two stray stderr lines. A stop is the program's to report, so
    the hub passes it on without printing it."""
    try:
        import gevent  # type: ignore[import-untyped]
    except ImportError:  # tritonclient.http runs on gevent: without it, nothing to quiet
        return
    hub = gevent.get_hub()
    if not issubclass(KeyboardInterrupt, hub.NOT_ERROR):
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


def _message(error: BaseException) -> str:
    """tritonclient's exceptions carry the server's message; keep only that sentence."""
    method = getattr(error, "message", None)
    text = method() if callable(method) else None
    return " ".join(str(text or error).split())


@dataclass(frozen=True)
class _Rows:
    """A request's per-image values, as the client sends them (the server checks them)."""

    seeds: NDArray[np.uint64]  # (n,)
    classes: NDArray[np.int64] | str  # 0-d or (n,); or "all"
    guidance: NDArray[np.float32]  # 0-d or (n,)
    temperature: NDArray[np.float32]
    num_classes: int

    @property
    def count(self) -> int:
        return len(self.seeds)

    def row(self, i: int) -> tuple[int, int, float, float]:
        cls = (
            i % self.num_classes
            if isinstance(self.classes, str)
            else self.classes[() if self.classes.ndim == 0 else i]
        )
        g = self.guidance[() if self.guidance.ndim == 0 else i]
        t = self.temperature[() if self.temperature.ndim == 0 else i]
        return int(self.seeds[i]), int(cls), float(g), float(t)


@dataclass(frozen=True)
class _Event:
    index: int  # the image's position in the request
    image: NDArray[np.uint8]
    packed: NDArray[np.uint8] | None  # the final image's packed bits; None for a preview
    step: int


class RemotePipeline:
    """`Pipeline.generate` / `iter_generate` on a Triton server: HTTP (model `bld`) or gRPC
    streaming (model `bld_stream`, with optional step previews). At most `concurrency` images
    are in flight at once; results come back in order."""

    def __init__(self, url: str, concurrency: int = 16, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.url = url
        self.protocol, self.address, ssl = parse_url(url)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidRequestError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self._module, self._server_error = _tritonclient(self.protocol)
        self.model = STREAM_MODEL if self.protocol == "grpc" else MODEL
        self.client: Any = None  # tritonclient's InferenceServerClient; None once closed
        try:
            if self.protocol == "grpc":
                self.client = self._module.InferenceServerClient(self.address, ssl=ssl)
                config = self.client.get_model_config(
                    self.model, as_json=True, client_timeout=timeout_s
                )["config"]
            else:
                self.client = self._module.InferenceServerClient(
                    self.address,
                    ssl=ssl,
                    concurrency=concurrency,
                    network_timeout=timeout_s,
                    connection_timeout=timeout_s,
                )
                config = self.client.get_model_config(self.model)
        except self._server_error as e:
            self.close()
            if _message(e) == "Deadline Exceeded":  # gRPC's words for client_timeout
                raise self._silent() from None
            raise RemoteError(f"Triton server {url}: {_message(e)}") from None
        except OSError as e:
            self.close()
            if isinstance(e, TimeoutError):
                raise self._silent() from None
            raise RemoteError(f"cannot reach a Triton server at {url} ({_message(e)})") from None
        self.bundle = ServedBundle.from_config(config, f"model {self.model!r} on {url}")

    @classmethod
    def connect(
        cls, url: str, concurrency: int = 16, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> RemotePipeline:
        return cls(url, concurrency, timeout_s)

    def _silent(self) -> RemoteError:
        """A server that accepted the connection but never answered (or never accepted it)."""
        return RemoteError(
            f"the Triton server at {self.url} did not answer within {self.timeout_s:g} s "
            "(--server-timeout)"
        )

    @property
    def num_classes(self) -> int:
        return self.bundle.num_classes

    @property
    def num_steps(self) -> int:
        return self.bundle.num_steps

    @property
    def max_batch(self) -> int:
        return self.bundle.max_batch

    @property
    def latent(self) -> LatentSpec:
        return self.bundle.latent

    def close(self, abandon: bool = False) -> None:
        """Close the connection; `abandon` the requests still in flight instead of waiting for
        their answers (tritonclient's HTTP close waits up to its network timeout)."""
        if self.client is not None:
            pool = getattr(self.client, "_pool", None)  # HTTP: the greenlets of the requests
            if abandon and pool is not None:
                pool.kill(block=True, timeout=5)
            self.client.close()
            self.client = None

    def _connected(self) -> Any:
        if self.client is None:
            raise RemoteError(f"the connection to the Triton server {self.url} is closed")
        return self.client

    def __enter__(self) -> RemotePipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Stopped (Ctrl-C) or failed: nobody will read the answers still on their way.
        self.close(abandon=exc_type is not None)

    # --- requests ---------------------------------------------------------------------------

    def _rows(
        self,
        n: int | None,
        seeds: philox.Seeds | None,
        classes: Classes,
        guidance: PerImage,
        temperature: PerImage,
    ) -> _Rows:
        seed_list = philox.request_seeds(seeds, n)  # the runtime's one check of seeds
        count = len(seed_list)
        class_spec: NDArray[np.int64] | str
        if classes is None:
            classes = self.num_classes  # the null class: unconditional
        if isinstance(classes, str):
            if classes != "all" or not self.num_classes:
                raise InvalidRequestError(
                    f"classes must be integers or 'all', got {classes!r}"
                    if classes != "all"
                    else "classes='all': this bundle is unconditional"
                )
            class_spec = classes
        else:
            class_spec = self._per_image("classes", classes, count, np.int64)
        per_image_guidance = self._per_image(
            "guidance", self.bundle.guidance if guidance is None else guidance, count, np.float32
        )
        per_image_temperature = self._per_image(
            "temperature",
            self.bundle.temperature if temperature is None else temperature,
            count,
            np.float32,
        )
        return _Rows(
            seed_list, class_spec, per_image_guidance, per_image_temperature, self.num_classes
        )

    @staticmethod
    def _per_image(name: str, value: object, count: int, dtype: type[T]) -> NDArray[T]:
        """One value for all (0-d) or one per image; the server checks the values."""
        try:
            given = np.asarray(value)
            if given.dtype.kind not in ("iu" if dtype is np.int64 else "iuf"):
                raise TypeError
            arr = given.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            raise InvalidRequestError(f"{name} must be numbers, got {value!r}") from None
        if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != count):
            raise InvalidRequestError(
                f"{name} must be one value or one per image ({count}), got shape {arr.shape}"
            )
        return arr

    def _inputs(
        self, row: tuple[int, int, float, float], preview_every: int | None = None
    ) -> list[Any]:
        seed, cls, g, t = row
        values: list[tuple[TensorSpec, NDArray[Any]]] = [
            (SEED, np.array([[seed]], np.uint64)),
            (CLASS, np.array([[cls]], np.int64)),
            (GUIDANCE, np.array([[g]], np.float32)),
            (TEMPERATURE, np.array([[t]], np.float32)),
        ]
        if preview_every is not None:
            values.append((PREVIEW_EVERY, np.array([[preview_every]], np.int32)))
        inputs = []
        for spec, value in values:
            tensor = self._module.InferInput(spec.name, list(value.shape), spec.dtype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return inputs

    # --- generation -------------------------------------------------------------------------

    def generate(
        self,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        preview_every: int = 0,
        on_preview: Callable[[int, int, NDArray[np.uint8]], object] | None = None,
    ) -> Generation:
        """Every image of the request at once, as a bld_runtime.pipeline.Generation."""
        from .pipeline import Generation

        chunks = list(
            self.iter_generate(n, seeds, classes, guidance, temperature, preview_every, on_preview)
        )
        return Generation(
            np.concatenate([c.images for c in chunks]),
            np.concatenate([c.bits for c in chunks]),
            np.concatenate([c.seeds for c in chunks]),
            np.concatenate([c.classes for c in chunks]),
        )

    def iter_generate(
        self,
        n: int | None = None,
        seeds: philox.Seeds | None = None,
        classes: Classes = None,
        guidance: PerImage = None,
        temperature: PerImage = None,
        preview_every: int = 0,
        on_preview: Callable[[int, int, NDArray[np.uint8]], object] | None = None,
    ) -> Iterator[Generation]:
        """Like Pipeline.iter_generate: one Generation per chunk of the served max_batch images,
        in order; memory is bounded by `concurrency` images in flight whatever n is.

        Arguments as in Pipeline.generate (n, seeds, classes, guidance, temperature). The
        first image's answer is awaited before this returns, so a request the server refuses
        (every image of a CLI request has the same parameters) raises here, before the caller
        writes anything.
        gRPC only: preview_every=k asks for the decoded bits every k steps, handed to
        on_preview(index, step, image) in the thread that iterates, as they stream in.
        """
        from .pipeline import Generation

        rows = self._rows(n, seeds, classes, guidance, temperature)
        if (
            isinstance(preview_every, bool)
            or not isinstance(preview_every, int)
            or preview_every < 0
        ):
            raise InvalidRequestError(
                f"preview_every must be an integer >= 0, got {preview_every!r}"
            )
        if preview_every and self.protocol != "grpc":
            raise InvalidRequestError(
                "step previews stream over gRPC only: use a grpc://HOST:PORT server address"
            )
        events = self._stream(rows, preview_every) if self.protocol == "grpc" else self._http(rows)
        early: list[_Event] = []  # everything up to image 0's answer (previews come later)
        try:
            for event in events:
                early.append(event)
                if event.packed is not None:
                    break
        except BaseException:
            events.close()
            raise

        def chunks() -> Iterator[Generation]:
            images: list[NDArray[np.uint8]] = []
            packed: list[NDArray[np.uint8]] = []
            lo = 0
            with contextlib.closing(events):
                for event in itertools.chain(early, events):
                    if event.packed is None:
                        if on_preview is not None:
                            on_preview(event.index, event.step, event.image)
                        continue
                    images.append(event.image)
                    packed.append(event.packed)
                    if len(images) == self.max_batch or lo + len(images) == rows.count:
                        hi = lo + len(images)
                        yield Generation(
                            np.stack(images),
                            unpack_bits(np.stack(packed), self.latent.shape),
                            rows.seeds[lo:hi],
                            np.array([rows.row(i)[1] for i in range(lo, hi)], np.int64),
                        )
                        images, packed, lo = [], [], hi

        return chunks()

    def _refused(self, rows: _Rows, index: int, error: BaseException) -> RemoteError:
        if isinstance(error, TimeoutError):
            return self._silent()
        return RemoteError(f"image {index} (seed {rows.row(index)[0]}): {_message(error)}")

    def _http(self, rows: _Rows) -> Generator[_Event, None, None]:
        """Model `bld` over HTTP: up to `concurrency` requests in flight, answers in order."""
        client = self._connected()
        outputs = [self._module.InferRequestedOutput(o.name, binary_data=True) for o in OUTPUTS]
        pending: collections.deque[tuple[int, Any]] = collections.deque()
        sent = 0
        while sent < rows.count or pending:
            while sent < rows.count and len(pending) < self.concurrency:
                try:
                    handle = client.async_infer(
                        self.model, self._inputs(rows.row(sent)), outputs=outputs
                    )
                except (self._server_error, OSError) as e:
                    raise self._refused(rows, sent, e) from None
                pending.append((sent, handle))
                sent += 1
            index, handle = pending.popleft()
            try:
                result = handle.get_result()
            except (self._server_error, OSError) as e:
                raise self._refused(rows, index, e) from None
            yield _Event(
                index, result.as_numpy(IMAGE.name)[0], result.as_numpy(BITS.name)[0], self.num_steps
            )

    def _stream(self, rows: _Rows, preview_every: int) -> Generator[_Event, None, None]:
        """Model `bld_stream` over one gRPC stream: previews and final images as they come,
        handed out in order of images (an image's previews before its final answer)."""
        client = self._connected()
        cond = threading.Condition()
        arrived: dict[int, list[_Event]] = collections.defaultdict(list)
        errors: list[BaseException] = []

        def answered(index: int) -> Callable[[], bool]:
            return lambda: bool(arrived.get(index) or errors)

        def receive(result: Any, error: BaseException | None) -> None:  # the stream's thread
            with cond:
                if error is not None:
                    errors.append(error)
                else:
                    index = int(result.get_response().id)
                    final = bool(result.as_numpy(FINAL.name)[0, 0])
                    arrived[index].append(
                        _Event(
                            index,
                            result.as_numpy(IMAGE.name)[0],
                            result.as_numpy(BITS.name)[0] if final else None,
                            int(result.as_numpy(STEP.name)[0, 0]),
                        )
                    )
                cond.notify_all()

        try:
            # No deadline on the stream as a whole (a long run outlasts any); each image's
            # answer is awaited for at most timeout_s below.
            client.start_stream(callback=receive)
        except self._server_error as e:
            raise RemoteError(f"Triton server {self.url}: {_message(e)}") from None
        finished = False
        try:
            sent = 0
            for index in range(rows.count):
                while sent < rows.count and sent - index < self.concurrency:
                    client.async_stream_infer(
                        self.model,
                        self._inputs(rows.row(sent), preview_every),
                        request_id=str(sent),
                    )
                    sent += 1
                done = False
                while not done:
                    with cond:
                        if not cond.wait_for(answered(index), timeout=self.timeout_s):
                            raise RemoteError(
                                f"Triton server {self.url}: no answer for image "
                                f"{index} in {self.timeout_s:g} s"
                            )
                        if errors:  # a refused request; the stream does not say which
                            raise RemoteError(f"Triton server {self.url}: {_message(errors[0])}")
                        ready = arrived.pop(index)
                    for event in ready:
                        done = done or event.packed is not None
                        yield event
            finished = True
        finally:
            client.stop_stream(cancel_requests=not finished)
