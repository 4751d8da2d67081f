"""Sampling on a Triton Inference Server that serves a bundle (`bld-export triton`).

    with RemotePipeline.connect("http://127.0.0.1:8000") as remote:
        out = remote.generate(n=8, seeds=0, classes=3, guidance=1.0)  # a Generation, as local

This is the client side of the served models' protocol (`bld_runtime.protocol`, which the
serving package bld_serving imports too); it speaks it with `tritonclient`, an optional
dependency imported only when a server is used.

Each image is one request stating all its sampling parameters (seed, class, guidance,
temperature; the client fills in the bundle's defaults), so the server's dynamic batcher groups
concurrent requests, and an image depends only on its request, on any replica, as locally. The
server checks every request with the runtime's own rules (`bld_runtime.request`); the client
shapes the request with the same rules, values unchecked (`Request.build(check_values=False)`),
sends it row by row, and reports a refusal with the server's sentence.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from . import philox
from .bits import unpack_bits
from .errors import BldError, InvalidRequestError
from .manifest import LatentSpec
from .protocol import (
    BITS,
    CLASS,
    FINAL,
    GUIDANCE,
    IMAGE,
    MODEL,
    OUTPUTS,
    PREVIEW_EVERY,
    SEED,
    STEP,
    STREAM_MODEL,
    TEMPERATURE,
    RemoteError,
    ServedBundle,
    TensorSpec,
)
from .request import Classes, PerImage, Request, RequestChunk

if TYPE_CHECKING:
    from .pipeline import Generation

__all__ = ["DEFAULT_TIMEOUT_S", "RemoteError", "RemotePipeline", "parse_url"]

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
class _Event:
    index: int  # the image's position in the request
    image: NDArray[np.uint8]
    packed: NDArray[np.uint8] | None  # the final image's packed bits; None for a preview
    step: int


class RemotePipeline:
    """`Pipeline.generate` / `iter_generate` on a Triton server.

    Over HTTP (model `bld`) or gRPC streaming (model `bld_stream`, with optional step
    previews). At most `concurrency` images are in flight at once; results come back in order.
    The served bundle's facts are read from the model's config (`protocol.ServedBundle`).

    Args:
        url: http://HOST:PORT, https://, grpc:// or grpcs://, or HOST:PORT (HTTP).
        concurrency: The most images in flight at once, >= 1.
        timeout_s: How long to wait for the connection and for each answer.

    Attributes:
        url: The server's address as given.
        protocol: "http" or "grpc".
        model: The served model used, `bld` (HTTP) or `bld_stream` (gRPC).
        bundle: What the server says of its bundle.

    Raises:
        InvalidRequestError: A bad url or concurrency.
        RemoteError: A server that cannot be reached, does not answer in time, or does not
            serve a bld bundle.
        BldError: tritonclient is not installed.
    """

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
        """Connect to a Triton server (the same as `RemotePipeline(...)`).

        Args:
            url: As for the class.
            concurrency: As for the class.
            timeout_s: As for the class.

        Returns:
            The connected pipeline; close it (or use it in a with block).

        Raises:
            InvalidRequestError: A bad url or concurrency.
            RemoteError: A server that cannot be reached or does not serve a bld bundle.
        """
        return cls(url, concurrency, timeout_s)

    def _silent(self) -> RemoteError:
        """A server that accepted the connection but never answered (or never accepted it)."""
        return RemoteError(
            f"the Triton server at {self.url} did not answer within {self.timeout_s:g} s "
            "(--server-timeout)"
        )

    @property
    def num_classes(self) -> int:
        """The served bundle's number of classes (the null class is this number)."""
        return self.bundle.num_classes

    @property
    def num_steps(self) -> int:
        """The served bundle's number of steps, K."""
        return self.bundle.num_steps

    @property
    def max_batch(self) -> int:
        """The served model's max_batch_size: the size of the chunks `iter_generate` yields."""
        return self.bundle.max_batch

    @property
    def latent(self) -> LatentSpec:
        """The served bundle's latent shape."""
        return self.bundle.latent

    def close(self, abandon: bool = False) -> None:
        """Close the connection (again: nothing).

        Args:
            abandon: Drop the requests still in flight instead of waiting for their answers
                (tritonclient's HTTP close waits up to its network timeout).
        """
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

    def _inputs(self, row: RequestChunk, preview_every: int | None = None) -> list[Any]:
        """One image's request (`row`: a chunk of one image) as tritonclient inputs."""
        values: list[tuple[TensorSpec, NDArray[Any]]] = [
            (SEED, np.array(row.seeds, np.uint64).reshape(1, 1)),
            (CLASS, np.array(row.classes, np.int64).reshape(1, 1)),
            (GUIDANCE, np.array(row.guidance, np.float32).reshape(1, 1)),
            (TEMPERATURE, np.array(row.temperature, np.float32).reshape(1, 1)),
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
        """Every image of the request at once, as `Pipeline.generate` returns them.

        Args:
            n, seeds, classes, guidance, temperature, preview_every, on_preview: As in
                `iter_generate`.

        Returns:
            A `bld_runtime.pipeline.Generation` (images, bits, seeds, classes).

        Raises:
            InvalidRequestError: A request of the wrong shape (how many values, of what type),
                found here.
            RemoteError: A request the server refused (with the server's sentence, e.g. a
                guidance out of range), or a server that failed or did not answer.
        """
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
        """Like `Pipeline.iter_generate`: one Generation per chunk of the served max_batch
        images, in order.

        Memory is bounded by `concurrency` images in flight whatever n is. The request is
        shaped here by the runtime's rules (`request.Request.build`); its values are checked
        by the server. The first image's answer is awaited before this returns, so a request
        the server refuses (every image of a CLI request has the same parameters) raises here,
        before the caller writes anything.

        Args:
            n, seeds, classes: As in `Pipeline.generate`.
            guidance, temperature: As in `Pipeline.generate`; None sends the bundle's default.
            preview_every: gRPC only: k > 0 asks for the decoded bits every k steps.
            on_preview: on_preview(index, step, image), called with each preview in the
                thread that iterates, as they stream in.

        Returns:
            An iterator of `bld_runtime.pipeline.Generation`, one per chunk.

        Raises:
            InvalidRequestError: A request of the wrong shape, or previews over HTTP.
            RemoteError: A request the server refused (with the server's sentence), or a
                server that failed or did not answer.
        """
        from .pipeline import Generation

        # Shaped by the runtime's rules; its values are the server's to check.
        request = Request.build(
            self.bundle.rules,
            n=n,
            seeds=seeds,
            classes=classes,
            guidance=guidance,
            temperature=temperature,
            check_values=False,
        )
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
        events = (
            self._stream(request, preview_every) if self.protocol == "grpc" else self._http(request)
        )
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
                    if len(images) == self.max_batch or lo + len(images) == request.count:
                        hi = lo + len(images)
                        yield Generation(
                            np.stack(images),
                            unpack_bits(np.stack(packed), self.latent.shape),
                            request.seeds(lo, hi),
                            request.classes(lo, hi),
                        )
                        images, packed, lo = [], [], hi

        return chunks()

    def _refused(self, request: Request, index: int, error: BaseException) -> RemoteError:
        if isinstance(error, TimeoutError):
            return self._silent()
        seed = int(request.seeds(index, index + 1)[0])
        return RemoteError(f"image {index} (seed {seed}): {_message(error)}")

    def _http(self, request: Request) -> Generator[_Event, None, None]:
        """Model `bld` over HTTP: up to `concurrency` requests in flight, answers in order."""
        client = self._connected()
        outputs = [self._module.InferRequestedOutput(o.name, binary_data=True) for o in OUTPUTS]
        pending: collections.deque[tuple[int, Any]] = collections.deque()
        sent = 0
        while sent < request.count or pending:
            while sent < request.count and len(pending) < self.concurrency:
                try:
                    handle = client.async_infer(
                        self.model, self._inputs(request.chunk(sent, sent + 1)), outputs=outputs
                    )
                except (self._server_error, OSError) as e:
                    raise self._refused(request, sent, e) from None
                pending.append((sent, handle))
                sent += 1
            index, handle = pending.popleft()
            try:
                result = handle.get_result()
            except (self._server_error, OSError) as e:
                raise self._refused(request, index, e) from None
            yield _Event(
                index, result.as_numpy(IMAGE.name)[0], result.as_numpy(BITS.name)[0], self.num_steps
            )

    def _stream(self, request: Request, preview_every: int) -> Generator[_Event, None, None]:
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
            for index in range(request.count):
                while sent < request.count and sent - index < self.concurrency:
                    client.async_stream_infer(
                        self.model,
                        self._inputs(request.chunk(sent, sent + 1), preview_every),
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
