"""`bld-export engine ...`: build, import, list and inspect TensorRT engines of a bundle.

    bld-export engine BUNDLE [-o CACHE] [--precision fp32|fp16|int8] [--batch 1:4:16 ...] [--dla N]
                      [--timing-cache F] [--hardware-compat none|ampere+|same-cc]
                      [--version-compatible] [--emit-trtexec [--trt-version 10|10.3|11]]
    bld-export engine import PLAN --bundle B --graph NAME [-o CACHE] ...
    bld-export engine list CACHE
    bld-export engine inspect CACHE|MANIFEST

bld_export's CLI loads this group lazily (by name), so `bld-export` works without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from bld_runtime.backends import PRECISIONS
from bld_runtime.engine_cache import HARDWARE_COMPAT
from bld_runtime.errors import InvalidRequestError

DEFAULT_CACHE = "engines"  # inside the bundle directory


class EngineGroup(click.Group):
    """`engine BUNDLE ...` builds; `engine import|list|inspect ...` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(cls=EngineGroup)
def engine():
    """TensorRT engines: build a bundle's, import trtexec plans, list, inspect.

    `bld-export engine BUNDLE [OPTIONS]` is short for `bld-export engine build BUNDLE
    [OPTIONS]` (see `bld-export engine build --help`).
    """


def key_options(f):
    """Options that go into an engine's key, shared by `build` and `import`."""
    f = click.option(
        "--version-compatible",
        is_flag=True,
        help="Build version-compatible plans (newer TensorRT, lean runtime).",
    )(f)
    f = click.option(
        "--hardware-compat",
        type=click.Choice(HARDWARE_COMPAT),
        default="none",
        show_default=True,
        help="Run on other GPUs: ampere+ = any Ampere or "
        "newer, same-cc = any GPU of this compute capability.",
    )(f)
    f = click.option(
        "--dla",
        "dla_core",
        type=click.IntRange(min=0),
        default=None,
        help="Run on this DLA core with GPU fallback (Jetson AGX Orin).",
    )(f)
    f = click.option(
        "--batch",
        "batches",
        multiple=True,
        metavar="MIN:OPT:MAX",
        help="A batch optimisation profile (repeat for several) [default: 1:max_batch:max_batch].",
    )(f)
    f = click.option(
        "--fp16-flag",
        is_flag=True,
        help="TensorRT 10 only (JetPack 6): fp16 through the FP16 builder flag "
        "on the fp32 graphs instead of the strongly typed fp16 graphs.",
    )(f)
    f = click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="fp32",
        show_default=True,
        help="int8: the bundle's *_int8 Q/DQ step graphs (bld-export onnx --int8), strongly "
        "typed; the encoder and decoder fp32.",
    )(f)
    f = click.option(
        "-o",
        "--output",
        "cache",
        type=click.Path(path_type=Path),
        default=None,
        help=f"Engine cache directory [default: BUNDLE/{DEFAULT_CACHE}].",
    )(f)
    return f


def _profiles(batches, max_batch):
    from .profiles import check_profiles, default_profile, parse_batch

    if not batches:
        return (default_profile(max_batch),)
    return check_profiles(tuple(parse_batch(b, max_batch) for b in batches))


@engine.command("build")
@click.argument("bundle", type=click.Path(path_type=Path))
@key_options
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Timing cache file: loaded, extended and saved (shared between builds).",
)
@click.option(
    "--workspace",
    "workspace_mib",
    type=click.IntRange(min=1),
    default=None,
    help="Workspace memory limit in MiB.",
)
@click.option(
    "--opt-level",
    "optimization_level",
    type=click.IntRange(0, 5),
    default=None,
    help="Builder optimisation level (TensorRT's default is 3).",
)
@click.option(
    "--compute-capability",
    "ccs",
    multiple=True,
    metavar="X.Y",
    help="TensorRT-RTX: build for this compute capability (repeatable).",
)
@click.option(
    "--flavour",
    type=click.Choice(["tensorrt", "tensorrt_rtx"]),
    default=None,
    help="Which TensorRT builds [default: the first importable].",
)
@click.option("--graph", "graphs", multiple=True, help="Only these graphs (repeatable).")
@click.option(
    "--rebuild-if-stale",
    is_flag=True,
    help="Rebuild a cached engine that is altered or unreadable instead of failing.",
)
@click.option(
    "--emit-trtexec",
    is_flag=True,
    help="Print the trtexec lines that build these engines on a device; build none.",
)
@click.option(
    "--trt-version",
    type=click.Choice(["10", "10.3", "11"]),
    default="10",
    show_default=True,
    help="The trtexec the lines are for (with --emit-trtexec); 10.3 = JetPack 6.",
)
def build_command(
    bundle,
    cache,
    precision,
    fp16_flag,
    batches,
    dla_core,
    hardware_compat,
    version_compatible,
    timing_cache,
    workspace_mib,
    optimization_level,
    ccs,
    flavour,
    graphs,
    rebuild_if_stale,
    emit_trtexec,
    trt_version,
):
    """Build (or find in the cache) the TensorRT engines of BUNDLE."""
    from bld_runtime.manifest import load_bundle

    from .builder import BuildOptions, build_bundle, graph_names, read_checked_graph

    loaded = load_bundle(bundle)
    profiles = _profiles(batches, loaded.manifest.max_batch)
    cache = cache or loaded.directory / DEFAULT_CACHE
    options = BuildOptions(
        precision=precision,
        fp16_flag=fp16_flag,
        profiles=profiles,
        workspace_mib=workspace_mib,
        optimization_level=optimization_level,
        timing_cache=timing_cache,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        dla_core=dla_core,
        compute_capabilities=tuple(ccs),
        flavour=flavour,
        rebuild_if_stale=rebuild_if_stale,
        graphs=tuple(graphs),
    )
    if emit_trtexec:
        from .trtexec import trtexec_line

        for name, _ in graph_names(loaded, precision, fp16_flag):
            if graphs and name not in graphs:
                continue
            read_checked_graph(loaded, name)  # no line for a graph that does not fit bld.json
            spec = loaded.manifest.graphs[name]
            click.echo(
                trtexec_line(
                    spec.file,
                    f"{name}.plan",
                    spec,
                    profiles,
                    trt_version,
                    fp16_flag=fp16_flag and name != "encoder",
                    dla_core=dla_core,
                    timing_cache=str(timing_cache) if timing_cache else None,
                    workspace_mib=workspace_mib,
                    optimization_level=optimization_level,
                    hardware_compat=hardware_compat,
                    version_compatible=version_compatible,
                )
            )
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bld_runtime.trt_flavours import import_flavour

    from .progress import progress_monitor_factory

    chosen = import_flavour(flavour, need_builder=True)
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    click.echo(f"building with {chosen.describe()} into {cache}")
    with bar:
        results = build_bundle(
            loaded.directory,
            cache,
            options,
            log=click.echo,
            progress=progress_monitor_factory(chosen.module, bar),
            flavour=chosen,
        )
    built = sum(not r.cached for r in results)
    click.echo(f"{len(results)} engines ready ({built} built, {len(results) - built} cached)")


@engine.command("import")
@click.argument("plan", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--bundle",
    required=True,
    type=click.Path(path_type=Path),
    help="The bundle the plan was built from.",
)
@click.option("--graph", "graph", required=True, help="The bundle's graph it was built from.")
@key_options
@click.option(
    "--compute-capability",
    "cc",
    default=None,
    metavar="X.Y",
    help="The GPU it was built on, e.g. 8.7 (Orin); not needed with --hardware-compat ampere+.",
)
@click.option(
    "--onnx",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The ONNX file trtexec built it from: refused unless it is "
    "the bundle's graph (same sha256).",
)
def import_command(
    plan,
    bundle,
    graph,
    cache,
    precision,
    fp16_flag,
    batches,
    dla_core,
    hardware_compat,
    version_compatible,
    cc,
    onnx,
):
    """Bring a plan that trtexec built on a device into the engine cache."""
    from .importer import import_plan

    entry = import_plan(
        plan,
        bundle,
        graph,
        cache,
        precision=precision,
        fp16_flag=fp16_flag,
        batches=batches,
        dla_core=dla_core,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        compute_capability=cc,
        default_cache=DEFAULT_CACHE,
        onnx=onnx,
    )
    click.echo(f"imported {plan} as {entry.key.describe()} -> {entry.plan_path}")


@engine.command("list")
@click.argument("cache", type=click.Path(exists=True, file_okay=False, path_type=Path))
def list_command(cache):
    """One line per cached engine, with its check (manifest, sha256, header)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bld_runtime.engine_cache import EngineCache, StaleEngineError

    store = EngineCache(cache)
    table = Table(title=f"engines in {escape(str(cache))}")
    for column in ("graph", "precision", "built by", "target", "batch", "flags", "MB", "check"):
        table.add_column(column, justify="right" if column == "MB" else "left")
    count = 0
    for entry in store.entries():
        count += 1
        if isinstance(entry, tuple):
            path, reason = entry
            table.add_row(
                escape(path.parent.name),
                "",
                "",
                "",
                "",
                "",
                "",
                f"[red]refused[/red]: {escape(reason)}",
            )
            continue
        k = entry.key
        try:
            store.check_plan(entry)  # hashed in chunks: a plan is never held in memory
            status = "ok"
        except StaleEngineError as e:
            status = f"[red]refused[/red]: {escape(str(e))}"
        target = (
            f"hw-compat {k.hardware_compat}"
            if k.hardware_compat != "none"
            else ",".join(f"sm_{c.replace('.', '')}" for c in k.compute_capabilities) or "default"
        )
        if k.dla_core is not None:
            target += f", DLA {k.dla_core}"
        table.add_row(
            k.graph,
            k.precision,
            f"{k.flavour} {k.version}",
            target,
            " ".join(map(str, k.profiles)),
            ",".join(k.flags),
            f"{entry.manifest.plan_size / 1e6:.1f}",
            status,
        )
    if not count:
        raise InvalidRequestError(f"{cache} holds no engines")
    Console(highlight=False).print(table)


@engine.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def inspect_command(path):
    """Print the manifests (and the header check) of a cache, a graph folder or one manifest."""
    from bld_runtime.engine_cache import CachedEngine, EngineCache, StaleEngineError, plan_header
    from bld_runtime.errors import ManifestError

    # Anything but a folder is one manifest, refused by what it is when read (a FIFO, a device:
    # files.read_input's words); so is a folder named *.json that holds no manifests.
    manifests = (
        [path]
        if not path.is_dir()
        else sorted(path.glob("*.json"))
        or sorted(path.glob("*/*.json"))
        or ([path] if path.suffix == ".json" else [])
    )
    if not manifests:
        raise InvalidRequestError(f"{path} holds no engine manifests")
    for manifest_path in manifests:
        store = EngineCache(manifest_path.parent.parent)
        try:
            manifest = store.read_manifest(manifest_path)
        except ManifestError as e:
            if len(manifests) == 1:
                raise
            # One bad entry is one refusal: the cache's other entries are still inspected.
            click.echo(f"== {manifest_path}\ncheck: refused: manifest refused ({e})")
            continue
        entry = CachedEngine(manifest_path.parent, manifest)
        click.echo(f"== {manifest_path}")
        click.echo(manifest.to_json().rstrip())
        try:
            magic, version = plan_header(store.check_plan(entry))  # never held whole
            click.echo(
                f"check: ok (sha256 matches; header {magic.decode(errors='replace')} "
                f"{'.'.join(map(str, version))})"
            )
        except StaleEngineError as e:
            click.echo(f"check: refused: {e}")


__all__ = ["engine", "DEFAULT_CACHE"]
