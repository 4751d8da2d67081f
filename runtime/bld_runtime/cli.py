"""The `bld` command line: sample, encode, decode and inpaint with a bundle.

Other packages add commands through the entry-point group "bld.commands" (bld_train adds
`train` and `evaluate`). They are listed without being imported and load only when run, so
`bld sample` and `bld --help` never import torch. Every expected failure (a BldError, a bad
option, a file that cannot be written) prints `error: <message>` and exits 1, without a
traceback; outputs are written only after the request is known to be valid, each file through
a temporary name and a rename.
"""
from __future__ import annotations

import sys
import warnings
from importlib import metadata
from pathlib import Path

import click

from .errors import BldError, InvalidRequestError

ENTRY_POINT_GROUP = "bld.commands"
_U64_MAX = 2**64 - 1


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class OneLineErrorGroup(click.Group):
    """A click group whose expected errors print `error: <message>` (no traceback), exit 1.

    Shared by every CLI of the project (`bld`, `bld-export`).
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.format_message())
            rv = 0
        except BldError as e:
            _fail(str(e))
        except click.ClickException as e:
            _fail(e.format_message())
        except click.Abort:
            _fail("interrupted")
        except OSError as e:  # a file that cannot be read or written
            _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


class BldGroup(OneLineErrorGroup):
    """The `bld` group: plugin commands from other packages load lazily."""

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
                if ep.name not in self.commands}

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(self._plugins()))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        ep = self._plugins().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as e:
            raise BldError(f"`bld {name}` comes from {ep.value}, which cannot be imported here "
                           f"({e}); install the project with its extras, e.g. "
                           f"pip install 'bld[train]'") from None

    def format_commands(self, ctx, formatter):
        """Like click's, but plugin commands are described without importing them."""
        rows = []
        plugins = self._plugins()
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=60)))
            else:
                rows.append((name, f"(from {plugins[name].value.split(':')[0]})"))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=BldGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Binary Latent Diffusion bundles: sample, encode, decode and inpaint without torch."""


def main():
    """Console-script entry point (`bld`)."""
    cli.main(prog_name="bld")


# --- shared options ------------------------------------------------------------------------

def runtime_options(batched: bool = True):
    """--backend, --precision, --threads (and --no-chunk for commands that take a batch)."""

    def decorate(f):
        from .backends import BACKENDS

        f = click.option("--threads", type=int, default=0, show_default=True,
                         help="onnxruntime intra-op threads (0 = one per core).")(f)
        f = click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32",
                         show_default=True, help="fp16 uses the bundle's *_fp16 graphs.")(f)
        f = click.option("--backend", type=click.Choice(BACKENDS), default="cpu",
                         show_default=True)(f)
        if batched:
            f = click.option("--chunk/--no-chunk", default=True, show_default=True,
                             help="Split batches above the bundle's max_batch into chunks "
                                  "(--no-chunk makes such a batch an error).")(f)
        return f

    return decorate


def _load(bundle, backend, precision, threads):
    from .backends import BackendOptions
    from .pipeline import Pipeline

    if threads < 0:
        raise InvalidRequestError(f"--threads must be >= 0 (0 = one per core), got {threads}")
    return Pipeline.load(bundle, backend=backend, precision=precision,
                         options=BackendOptions(intra_op_threads=threads))


def parse_seed(text: str) -> int:
    """A seed from the command line: a decimal integer in [0, 2^64)."""
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= _U64_MAX:
        raise InvalidRequestError(f"--seed must be an integer in [0, 2^64), got {text!r}")
    return value


def parse_classes(text: str, count: int, num_classes: int):
    """--class: an index, 'all' (image i gets class i % classes) or 'none' (unconditional)."""
    import numpy as np

    if text == "none":
        return None
    if text == "all":
        if num_classes == 0:
            raise InvalidRequestError("--class all: this bundle is unconditional (no classes)")
        return np.arange(count) % num_classes
    try:
        value = int(text, 10)
    except ValueError:
        raise InvalidRequestError(f"--class must be a class index, 'all' or 'none', "
                                  f"got {text!r}") from None
    if not 0 <= value < num_classes:
        known = f"classes 0..{num_classes - 1}" if num_classes else "no classes"
        raise InvalidRequestError(f"class {value} is out of range: this bundle has {known} "
                                  f"(--class none samples unconditionally)")
    return value


def sampling_options(f):
    f = click.option("--temperature", type=float, default=None,
                     help="> 0 (default: the bundle's).")(f)
    f = click.option("--guidance", type=float, default=None,
                     help="Classifier-free guidance scale, >= 0 (default: the bundle's).")(f)
    f = click.option("--class", "class_", default="none", show_default=True,
                     help="A class index, 'all' (cycle through the classes) or 'none' "
                          "(unconditional).")(f)
    f = click.option("--seed", default="0", show_default=True,
                     help="Base seed, an integer in [0, 2^64); image i uses seed + i.")(f)
    return f


class Progress:
    """A rich progress bar on stderr, fed by the pipeline's per-step callback."""

    def __init__(self, total: int, label: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
        from rich.progress import TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.bar = RichProgress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                TextColumn("steps"), TimeElapsedColumn(), console=console,
                                transient=True, disable=not console.is_terminal)
        self.task = self.bar.add_task(label, total=total)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, step, num_steps, bits):
        self.bar.advance(self.task)


# --- commands ------------------------------------------------------------------------------

@cli.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("-n", "count", type=int, default=1, show_default=True, help="Number of images.")
@sampling_options
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the PNGs, bits.bldz and grid.png.")
@runtime_options()
def sample(bundle, count, seed, class_, guidance, temperature, out_dir, backend, precision,
           threads, chunk):
    """Generate images: one PNG each, their packed bits (bits.bldz) and a grid.png."""
    from .bits import save_bits

    seed = parse_seed(seed)
    pipe = _load(bundle, backend, precision, threads)
    classes = parse_classes(class_, count, pipe.num_classes)
    chunks = -(-count // pipe.max_batch) if count > 0 else 0
    with Progress(chunks * pipe.num_steps, "sampling") as progress:
        out = pipe.generate(n=count, seeds=seed, classes=classes, guidance=guidance,
                            temperature=temperature, callback=progress, chunk=chunk)
    out_dir = Path(out_dir)
    out.save_png(out_dir)
    latent = pipe.manifest.latent
    save_bits(out_dir / "bits.bldz", out.bits, (latent.height, latent.width))
    cols = pipe.num_classes if class_ == "all" and count >= pipe.num_classes else None
    out.save_grid(out_dir / "grid.png", cols=cols)
    click.echo(f"wrote {count} image{'s' if count != 1 else ''}, bits.bldz and grid.png "
               f"to {out_dir}")


@cli.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Output file, .bldz (self-describing) or .npy (packed array).")
@click.option("--seed", default=None,
              help="Sample the bits (Philox, subsequence 0) instead of thresholding p > 0.5.")
@click.option("--rounds", type=click.IntRange(min=0), default=None,
              help="Most rounds of encode(decode(.)) that carry the thresholded bits to their "
                   "canonical code, so that encoding a decoded image gives its bits back "
                   "[default: 32]; 0 keeps p > 0.5 as it is.")
@runtime_options()
def encode(bundle, images, out_file, seed, rounds, backend, precision, threads, chunk):
    """Encode PNG images into packed latent bits."""
    import numpy as np

    from .bits import SUFFIXES, save_bits
    from .images import load_png

    if Path(out_file).suffix not in SUFFIXES:
        raise InvalidRequestError(f"-o must end in .bldz or .npy, got {out_file!r}")
    seed = None if seed is None else parse_seed(seed)
    pipe = _load(bundle, backend, precision, threads)
    H, W, ch = pipe.image_shape
    batch = np.stack([load_png(p, H, W, ch) for p in images])
    from .errors import CodeNotSettledWarning
    from .pipeline import CANONICAL_ROUNDS

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CodeNotSettledWarning)
        bits = pipe.encode(batch, seed=seed, chunk=chunk,
                           rounds=CANONICAL_ROUNDS if rounds is None else rounds)
    for warning in caught:
        click.echo(f"note: {warning.message}", err=True)
    latent = pipe.manifest.latent
    save_bits(out_file, bits, (latent.height, latent.width))
    click.echo(f"wrote the bits of {len(images)} image{'s' if len(images) != 1 else ''} "
               f"to {out_file}")


@cli.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.argument("bits_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the decoded PNGs.")
@runtime_options()
def decode(bundle, bits_file, out_dir, backend, precision, threads, chunk):
    """Decode packed latent bits (.bldz or .npy) into PNG images."""
    from .bits import load_bits
    from .images import save_png

    pipe = _load(bundle, backend, precision, threads)
    latent = pipe.manifest.latent
    bits = load_bits(bits_file, (latent.height, latent.width, latent.bits))
    images = pipe.decode(bits, chunk=chunk)
    for i, image in enumerate(images):
        save_png(Path(out_dir) / f"{i:05d}.png", image)
    click.echo(f"wrote {len(images)} image{'s' if len(images) != 1 else ''} to {out_dir}")


@cli.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--mask", "mask_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Mask image of the same size: white = regenerate, black = keep.")
@sampling_options
@click.option("-o", "--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Output PNG.")
@runtime_options(batched=False)
def inpaint(bundle, image, mask_file, seed, class_, guidance, temperature, out_file, backend,
            precision, threads):
    """Regenerate the white region of MASK in IMAGE (every latent token it touches)."""
    from .images import load_mask, load_png, save_png

    seed = parse_seed(seed)
    pipe = _load(bundle, backend, precision, threads)
    H, W, ch = pipe.image_shape
    pixels = load_png(image, H, W, ch)
    regenerate = load_mask(mask_file, H, W)
    classes = parse_classes(class_, 1, pipe.num_classes)
    with Progress(pipe.num_steps, "inpainting") as progress:
        out = pipe.inpaint(pixels, regenerate, seed=seed, classes=classes, guidance=guidance,
                           temperature=temperature, callback=progress)
    save_png(out_file, out.images[0])
    click.echo(f"wrote {out_file}")


if __name__ == "__main__":
    main()
