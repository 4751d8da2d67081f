"""The `bld` command line: sample, encode, decode and inpaint with a bundle.

Other packages add commands through the entry-point group "bld.commands" (bld_train adds
`train`, bld_workflows `evaluate` and `demo`, bld_bench `bench`). Their modules import nothing
heavy at the top, so `bld --help` lists them with their descriptions, and `bld sample` never
imports torch.

Every failure prints exactly one line, `error: <message>`, and exits 1, without a traceback
(BLD_TRACEBACK=1 shows it): the project's errors carry their own sentence, and everything else
(the OS, Pillow, onnxruntime, numpy, running out of memory) is described in one line here.
Outputs are written only after the request is known to be valid, each file through a temporary
name and a rename; output folders are locked while written (outputs.OutputFolder).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from . import stopping
from .errors import BldError, InvalidRequestError, describe
from .version import version_option

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .pipeline import Pipeline

F = TypeVar("F", bound=Callable[..., Any])

ENTRY_POINT_GROUP = "bld.commands"


def _fail(message: str) -> NoReturn:
    stopping.ignore()  # the last line is being said: a signal now must not cut it off
    click.echo(f"error: {' '.join(message.split())}", err=True)  # one line, whatever it holds
    sys.exit(1)


class OneLineErrorGroup(click.Group):
    """A click group whose failures print `error: <message>` (no traceback) and exit 1.

    Shared by every CLI of the project (`bld`, `bld-export`).
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # onnxruntime's telemetry warns on stderr when it cannot persist a device id (a HOME that
        # is not writable), which would be a second line; a command line tool sends none anyway.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        # SIGINT and SIGTERM raise stopping.Stopped where the program is, once; the outputs
        # are closed by the code that writes them, and the signals after it are ignored.
        with stopping.installed():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a warning would be a second stderr line
                    rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                if standalone_mode:
                    stopping.ignore()  # done: a signal from here on changes nothing
            except click.exceptions.NoArgsIsHelpError as e:
                click.echo(e.format_message())
                rv = 0
            except BldError as e:
                _fail(str(e))
            except click.ClickException as e:
                _fail(e.format_message())
            except (click.Abort, KeyboardInterrupt):  # stopping.Stopped is a KeyboardInterrupt
                _fail("interrupted")
            except Exception as e:  # the last line of defence: one line, exit 1
                if os.environ.get("BLD_TRACEBACK"):
                    raise
                _fail(describe(e))
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # stopping.Stopped too: click would print a blank line first
            raise BldError("interrupted") from None


class BldGroup(OneLineErrorGroup):
    """The `bld` group: plugin commands from other packages load on demand."""

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        return {
            ep.name: ep
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name not in self.commands
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        ep = self._plugins().get(name)
        if ep is None:
            return None
        try:
            command: click.Command = ep.load()
        except ImportError as e:
            raise BldError(
                f"`bld {name}` comes from {ep.value}, which cannot be imported here "
                f"({e}); install the project with its extras, e.g. "
                f"pip install 'bld[train]'"
            ) from None
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but a plugin that cannot be imported here is still listed."""
        rows = []
        for name in self.list_commands(ctx):
            try:
                command = self.get_command(ctx, name)
                if command is None:
                    continue
                rows.append((name, command.get_short_help_str(limit=60)))
            except BldError:
                rows.append(
                    (name, f"(needs {self._plugins()[name].value.split(':')[0]}, not installed)")
                )
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=BldGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("bld")
def cli() -> None:
    """Binary Latent Diffusion bundles: sample, encode, decode and inpaint without torch."""


def main() -> None:
    """Console-script entry point (`bld`)."""
    cli.main(prog_name="bld")


# --- shared options ------------------------------------------------------------------------


def precision_option(help_text: str) -> Callable[[F], F]:
    """--precision [fp32|fp16|int8|bf16] (backends.ALL_PRECISIONS), fp32 by default."""
    from .backends import ALL_PRECISIONS

    return click.option(
        "--precision",
        type=click.Choice(ALL_PRECISIONS),
        default="fp32",
        show_default=True,
        help=help_text,
    )


def thread_pool_option(help_text: str) -> Callable[[F], F]:
    """--thread-pool [shared|session] ($BLD_THREAD_POOL): shared by default, since a command
    owns its process (BackendOptions.thread_pool)."""
    from .backends import THREAD_POOLS

    return click.option(
        "--thread-pool",
        type=click.Choice(THREAD_POOLS),
        default="shared",
        envvar="BLD_THREAD_POOL",
        show_default=True,
        show_envvar=True,
        help=help_text,
    )


def pin_threads_option(f: F) -> F:
    """--pin-threads/--no-pin-threads (BackendOptions.pin_threads): on by default with the
    shared pool, since a command owns its process; None when not given."""
    return click.option(
        "--pin-threads/--no-pin-threads",
        default=None,
        help="With the shared pool: its threads on the cores after the first, the generating "
        "thread on the first (Linux) [default: on with --thread-pool shared].",
    )(f)


def pin_threads_for(pin_threads: bool | None, thread_pool: str) -> bool:
    """A command's BackendOptions.pin_threads: as given, else on with the shared pool. Measured
    on the README's 2-core VM: batch-1 generations 1.5-1.9x faster, the C++ p99 1.2x its p50
    instead of 2x, batches 4 and 16 within noise (README, Speed)."""
    if pin_threads is None:
        return thread_pool == "shared" and hasattr(os, "sched_setaffinity")
    return pin_threads


@dataclass(frozen=True)
class LocalRuntime:
    """How a command runs the local runtime: the options `runtime_options` adds, as given."""

    backend: str
    precision: str
    threads: int
    thread_pool: str
    pin_threads: bool | None
    engine_cache: str | None
    rebuild_if_stale: bool
    dla_core: int | None

    def load(self, bundle: str) -> Pipeline:
        """The bundle on this runtime; options that do not apply to the backend refused."""
        import onnxruntime

        from .backends import BackendOptions
        from .pipeline import Pipeline

        backend, engine_cache = self.backend, self.engine_cache
        if backend != "tensorrt":
            for given, option in (
                (self.rebuild_if_stale, "--rebuild-if-stale"),
                (self.dla_core is not None, "--dla"),
            ):
                if given:
                    raise InvalidRequestError(f"{option} applies to --backend tensorrt only")
        if engine_cache is not None and backend not in ("tensorrt", "tensorrt-ep"):
            raise InvalidRequestError(
                "--engine-cache applies to --backend tensorrt and tensorrt-ep"
            )
        if engine_cache is None and backend == "tensorrt-ep":
            engine_cache = str(Path(bundle) / "engines")  # bld-export engine's default
        onnxruntime.set_default_logger_severity(4)  # a CLI says one line of its own, not ORT's

        return Pipeline.load(
            bundle,
            backend=backend,
            precision=self.precision,
            options=BackendOptions(
                intra_op_threads=self.threads,
                thread_pool=self.thread_pool,
                pin_threads=pin_threads_for(self.pin_threads, self.thread_pool),
                trt_cache_dir=engine_cache,
                trt_rebuild_if_stale=self.rebuild_if_stale,
                trt_dla_core=self.dla_core,
            ),
        )


def runtime_options(batched: bool = True) -> Callable[[F], F]:
    """--backend, --precision, --threads, --thread-pool, --pin-threads, the TensorRT options
    (--engine-cache, --rebuild-if-stale, --dla), passed to the command as one LocalRuntime
    argument `runtime`, and --no-chunk (`chunk`) for commands that take a batch."""

    def decorate(f: F) -> F:
        from .backends import names as backend_names

        command = f  # f is rebound below, as each option decorates the wrapper

        @functools.wraps(command)
        def with_runtime(*args: Any, **kwargs: Any) -> Any:
            given = {field.name: kwargs.pop(field.name) for field in fields(LocalRuntime)}
            return command(*args, runtime=LocalRuntime(**given), **kwargs)

        f = cast(F, with_runtime)

        f = click.option(
            "--dla",
            "dla_core",
            type=AsciiIntRange(min=0),
            default=None,
            help="--backend tensorrt: run the engines built for this DLA core "
            "(bld-export engine --dla N).",
        )(f)
        f = click.option(
            "--rebuild-if-stale",
            is_flag=True,
            help="--backend tensorrt: rebuild the engines the cache refuses "
            "(needs bld_engines and a TensorRT builder).",
        )(f)
        f = click.option(
            "--engine-cache",
            type=click.Path(file_okay=False),
            default=None,
            help="TensorRT engine cache (bld-export engine -o CACHE) for "
            "--backend tensorrt/tensorrt-ep [default: BUNDLE/engines].",
        )(f)
        f = pin_threads_option(f)
        f = thread_pool_option(
            "onnxruntime's threads: one pool the step graphs and the decoder share, which "
            "spins between steps (the command owns its process), or a pool per graph session "
            "(the library's default)."
        )(f)
        f = click.option(
            "--threads",
            type=AsciiIntRange(min=0),
            default=0,
            show_default=True,
            help="onnxruntime intra-op threads (0 = one per core).",
        )(f)
        f = precision_option(
            "fp16 uses the bundle's *_fp16 graphs; int8 its *_int8 step graphs (--backend "
            "cpu or openvino, on CPUs with VNNI or AMX-INT8, or tensorrt; export with --int8); "
            "bf16 runs the "
            "fp32 graphs in bfloat16 (--backend openvino, on CPUs with AVX512_BF16 or AMX)."
        )(f)
        f = click.option(
            "--backend", type=click.Choice(backend_names()), default="cpu", show_default=True
        )(f)
        if batched:
            f = click.option(
                "--chunk/--no-chunk",
                default=True,
                show_default=True,
                help="Split batches above the bundle's max_batch into chunks "
                "(--no-chunk makes such a batch an error).",
            )(f)
        return f

    return decorate


def parse_seed(text: str) -> int:
    """A seed from the command line: a decimal integer in [0, 2^64)."""
    from .philox import SEED_RULE, as_seed

    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20 or int(digits, 10) >= 2**64:
        raise InvalidRequestError(f"--seed must be {SEED_RULE}, got {text!r}")
    return as_seed(int(digits, 10))


class _AsciiNumber(click.ParamType[Any, Any]):
    """A number type that refuses non-ASCII digits (Devanagari, full-width) in click's own
    words: Python's int() and float() accept every Unicode digit, bld-cpp does not."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.isascii():
            self.fail(f"{value!r} is not a valid {self.name}.", param, ctx)
        return super().convert(value, param, ctx)


class AsciiIntRange(_AsciiNumber, click.IntRange):
    """click.IntRange, ASCII digits only."""


class AsciiFloatRange(_AsciiNumber, click.FloatRange):
    """click.FloatRange, ASCII digits only."""


class AsciiFloat(_AsciiNumber, click.types.FloatParamType):
    """click.FLOAT, ASCII digits only."""


def parse_classes(text: str, count: int, num_classes: int) -> int | str | None:
    """--class: an index, 'all' (image i gets class i % classes) or 'none' (unconditional)."""
    if text == "none":
        return None
    if text == "all":
        if num_classes == 0:
            raise InvalidRequestError("--class all: this bundle is unconditional (no classes)")
        return "all"
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise InvalidRequestError(f"--class must be a class index, 'all' or 'none', got {text!r}")
    value = int(text, 10)
    if not 0 <= value < num_classes:
        known = f"classes 0..{num_classes - 1}" if num_classes else "no classes"
        raise InvalidRequestError(
            f"class {value} is out of range: this bundle has {known} "
            f"(--class none samples unconditionally)"
        )
    return value


def sampling_options(f: F) -> F:
    f = click.option(
        "--temperature", type=AsciiFloat(), default=None, help="> 0 (default: the bundle's)."
    )(f)
    f = click.option(
        "--guidance",
        type=AsciiFloat(),
        default=None,
        help="Classifier-free guidance scale, >= 0 (default: the bundle's).",
    )(f)
    f = click.option(
        "--class",
        "class_",
        default="none",
        show_default=True,
        help="A class index, 'all' (cycle through the classes) or 'none' (unconditional).",
    )(f)
    f = click.option(
        "--seed",
        default="0",
        show_default=True,
        help="Base seed, an integer in [0, 2^64); image i uses seed + i.",
    )(f)
    return f


class Progress:
    """A rich progress bar on stderr (only on a terminal), fed by the per-step callback."""

    def __init__(self, total: int, label: str, unit: str = "steps"):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True)
        self.bar = RichProgress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.bar.add_task(label, total=total)
        self._last = 0  # the step of the last callback within the current chunk

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def advance(self, amount: int = 1) -> None:
        self.bar.advance(self.task, amount)

    def __call__(self, step: int, num_steps: int, bits: NDArray[Any]) -> None:
        # One call per step, or one per chunk (step = K) when the backend replays all K steps
        # as a CUDA graph: advance by the steps done since the last call.
        self.advance(step - self._last)
        self._last = 0 if step == num_steps else step


# --- commands ------------------------------------------------------------------------------


@cli.command()
@click.argument("bundle", required=False, metavar="BUNDLE", type=click.Path(file_okay=False))
@click.option(
    "-n",
    "count",
    type=AsciiIntRange(min=1),
    default=1,
    show_default=True,
    help="Number of images.",
)
@sampling_options
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the PNGs, bits.bldz, grid.png and samples.json (new or empty).",
)
@click.option("--force", is_flag=True, help="Replace an earlier run's output in that folder.")
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Sample on a Triton server serving a bundle (bld-export triton) instead of "
    "locally: http://HOST:PORT, or grpc://HOST:PORT to stream; BUNDLE is then "
    "omitted. Needs tritonclient (pip install 'bld[serving]').",
)
@click.option(
    "--server-timeout",
    type=AsciiFloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="With --server: how long to wait for the server to connect and for each answer "
    "before giving up with one error line.",
)
@click.option(
    "--preview-every",
    type=AsciiIntRange(min=0),
    default=0,
    show_default=True,
    help="With a grpc:// server: also write each image decoded every k steps, as "
    "NNNNN.stepKK.png (0 = none).",
)
@runtime_options()
def sample(
    bundle: str | None,
    count: int,
    seed: str,
    class_: str,
    guidance: float | None,
    temperature: float | None,
    out_dir: str,
    force: bool,
    server: str | None,
    server_timeout: float,
    preview_every: int,
    runtime: LocalRuntime,
    chunk: bool,
) -> None:
    """Generate images: PNGs, their packed bits (bits.bldz), a grid.png, samples.json.

    Images are written as each chunk of the bundle's max_batch completes, so memory stays
    bounded whatever -n is; a run that stops early keeps the images it finished, with their
    bits, and samples.json says how far it got. With --server the same request runs on a Triton
    server and writes the same files.
    """
    from .bits import MAX_LATENTS
    from .request import check_batch
    from .sampling import write_samples

    if count > MAX_LATENTS:  # before anything is loaded or written
        raise InvalidRequestError(
            f"-n must be at most {MAX_LATENTS} (the most images one bits.bldz holds), got {count}"
        )
    base_seed = parse_seed(seed)
    if server is not None:
        if bundle is not None:
            raise InvalidRequestError("--server samples with the server's bundle: omit BUNDLE")
        context = click.get_current_context()
        local_names = {*(field.name for field in fields(LocalRuntime)), "chunk"}
        local = [  # by their option names: --dla, --pin-threads/--no-pin-threads, ...
            "/".join(param.opts + param.secondary_opts)
            for param in context.command.params
            if param.name in local_names
            and context.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE
        ]
        if local:
            raise InvalidRequestError(
                f"{', '.join(local)} chooses how the local runtime runs; "
                "with --server the model repository decides"
            )
        _sample_remote(
            server,
            count,
            base_seed,
            class_,
            guidance,
            temperature,
            Path(out_dir),
            force,
            preview_every,
            server_timeout,
        )
        return
    source = click.get_current_context().get_parameter_source("server_timeout")
    if source is click.core.ParameterSource.COMMANDLINE:
        raise InvalidRequestError("--server-timeout applies to --server only")
    if bundle is None:
        raise InvalidRequestError("give a BUNDLE to sample locally, or --server URL")
    if preview_every:
        raise InvalidRequestError("--preview-every streams from a grpc:// --server only")
    pipe = runtime.load(bundle)
    classes = parse_classes(class_, count, pipe.num_classes)
    check_batch(count, pipe.max_batch, chunk)  # before anything is written
    chunks = pipe.iter_generate(
        n=count, seeds=base_seed, classes=classes, guidance=guidance, temperature=temperature
    )
    request = {
        "bundle": str(bundle),
        "seed": base_seed,
        "n": count,
        "class": class_,
        "guidance": guidance,
        "temperature": temperature,
        "precision": runtime.precision,
        "backend": runtime.backend,
    }
    cols = pipe.num_classes if class_ == "all" and count >= pipe.num_classes else None
    write_samples(
        pipe.manifest.latent,
        chunks,
        count,
        Path(out_dir),
        force,
        request,
        grid_cols=cols,
        progress=Progress(count, "sampling", "images"),
    )
    click.echo(
        f"wrote {count} image{'s' if count != 1 else ''}, bits.bldz and grid.png to {out_dir}"
    )


def _sample_remote(
    server: str,
    count: int,
    seed: int,
    class_: str,
    guidance: float | None,
    temperature: float | None,
    out_dir: Path,
    force: bool,
    preview_every: int,
    timeout_s: float,
) -> None:
    """`bld sample --server`: the same request on a Triton server, one image per Triton
    request, written by the same writer as local sampling."""
    from .images import save_png
    from .outputs import preview_name
    from .remote import RemotePipeline
    from .sampling import write_samples

    previews: list[Path] = []  # the folder the images go to, once write_samples knows it
    with RemotePipeline.connect(server, timeout_s=timeout_s) as remote:
        if preview_every and remote.protocol != "grpc":
            raise InvalidRequestError(
                "--preview-every streams over gRPC: use --server grpc://HOST:PORT"
            )
        classes = parse_classes(class_, count, remote.num_classes)
        chunks = remote.iter_generate(
            n=count,
            seeds=seed,
            classes=classes,
            guidance=guidance,
            temperature=temperature,
            preview_every=preview_every,
            on_preview=lambda index, step, image: save_png(
                previews[0] / preview_name(index, step, count), image, durable=False
            ),
        )
        request: dict[str, object] = {
            "server": server,
            "seed": seed,
            "n": count,
            "class": class_,
            "guidance": guidance,
            "temperature": temperature,
            "preview_every": preview_every,
        }
        cols = remote.num_classes if class_ == "all" and count >= remote.num_classes else None
        write_samples(
            remote.latent,
            chunks,
            count,
            out_dir,
            force,
            request,
            grid_cols=cols,
            progress=Progress(count, "sampling", "images"),
            on_folder=previews.append,
        )
    click.echo(
        f"wrote {count} image{'s' if count != 1 else ''}, bits.bldz and grid.png to {out_dir}"
    )


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file, .bldz (self-describing) or .npy (packed array).",
)
@click.option(
    "--seed",
    default=None,
    help="Sample the bits (Philox, subsequence 0) instead of thresholding p > 0.5.",
)
@click.option(
    "--canonical",
    is_flag=True,
    help="Return each image's canonical code instead of p > 0.5, so that encoding a "
    "decoded image gives its bits back exactly (costs up to 2 x rounds more "
    "graph calls and some fidelity; see the README).",
)
@click.option(
    "--rounds",
    type=AsciiIntRange(min=1),
    default=None,
    help="With --canonical: most rounds of encode(decode(.)) to settle [default: 32].",
)
@click.option(
    "--fit",
    "fit_size",
    is_flag=True,
    help="Convert, resize (shorter side) and center-crop each image to the bundle's "
    "size, as training does; without it images must match exactly.",
)
@runtime_options()
def encode(
    bundle: str,
    images: tuple[str, ...],
    out_file: str,
    seed: str | None,
    canonical: bool,
    rounds: int | None,
    fit_size: bool,
    runtime: LocalRuntime,
    chunk: bool,
) -> None:
    """Encode images into packed latent bits (default: the paper's p > 0.5)."""
    import numpy as np

    from .bits import SUFFIXES, save_bits
    from .errors import CodeNotSettledWarning
    from .images import load_image
    from .pipeline import CANONICAL_ROUNDS

    if Path(out_file).suffix not in SUFFIXES:
        raise InvalidRequestError(f"-o must end in .bldz or .npy, got {out_file!r}")
    if rounds is not None and not canonical:
        raise InvalidRequestError("--rounds applies to --canonical encoding only")
    base_seed = None if seed is None else parse_seed(seed)
    pipe = runtime.load(bundle)
    H, W, ch = pipe.image_shape
    batch = np.stack([load_image(p, H, W, ch, fit_size) for p in images])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CodeNotSettledWarning)
        bits = pipe.encode(
            batch,
            seed=base_seed,
            canonical=canonical,
            chunk=chunk,
            rounds=CANONICAL_ROUNDS if rounds is None else rounds,
        )
    latent = pipe.manifest.latent
    save_bits(out_file, bits, (latent.height, latent.width))
    for warning in caught:
        click.echo(f"note: {warning.message}", err=True)
    click.echo(
        f"wrote the bits of {len(images)} image{'s' if len(images) != 1 else ''} to {out_file}"
    )


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("bits_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the decoded PNGs (new or empty).",
)
@click.option("--force", is_flag=True, help="Replace an earlier run's output in that folder.")
@runtime_options()
def decode(
    bundle: str,
    bits_file: str,
    out_dir: str,
    force: bool,
    runtime: LocalRuntime,
    chunk: bool,
) -> None:
    """Decode packed latent bits (.bldz or .npy) into PNG images."""
    from .bits import load_bits
    from .sampling import write_decoded

    pipe = runtime.load(bundle)
    latent = pipe.manifest.latent
    bits = load_bits(bits_file, (latent.height, latent.width, latent.bits))
    if not chunk and len(bits) > pipe.max_batch:
        raise InvalidRequestError(
            f"batch size {len(bits)} is above this bundle's max_batch of {pipe.max_batch} "
            f"(allow chunking or send fewer images)"
        )
    write_decoded(pipe, bits, Path(out_dir), force, {"bundle": str(bundle), "bits": str(bits_file)})
    click.echo(f"wrote {len(bits)} image{'s' if len(bits) != 1 else ''} to {out_dir}")


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--mask",
    "mask_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Mask image of the same size: white = regenerate, black = keep.",
)
@sampling_options
@click.option(
    "-o", "--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Output PNG."
)
@click.option(
    "--fit",
    "fit_size",
    is_flag=True,
    help="Resize and center-crop IMAGE to the bundle's size first (the mask must "
    "match the fitted size).",
)
@runtime_options(batched=False)
def inpaint(
    bundle: str,
    image: str,
    mask_file: str,
    seed: str,
    class_: str,
    guidance: float | None,
    temperature: float | None,
    out_file: str,
    fit_size: bool,
    runtime: LocalRuntime,
) -> None:
    """Regenerate the white region of MASK in IMAGE (every latent token it touches)."""
    from .images import load_image, load_mask, save_png

    if Path(out_file).suffix.lower() != ".png":
        raise InvalidRequestError(f"-o must end in .png, got {out_file!r}")
    base_seed = parse_seed(seed)
    pipe = runtime.load(bundle)
    H, W, ch = pipe.image_shape
    pixels = load_image(image, H, W, ch, fit_size)
    regenerate = load_mask(mask_file, H, W)
    classes = parse_classes(class_, 1, pipe.num_classes)
    with Progress(pipe.num_steps, "inpainting") as progress:
        out = pipe.inpaint(
            pixels,
            regenerate,
            seed=base_seed,
            classes=classes,
            guidance=guidance,
            temperature=temperature,
            callback=progress,
        )
    save_png(out_file, out.images[0])
    click.echo(f"wrote {out_file}")


if __name__ == "__main__":
    main()
