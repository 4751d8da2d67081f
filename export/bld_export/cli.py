"""The `bld-export` command line: export a run to a bundle, inspect it, verify it.

    bld-export onnx RUN_DIR -o BUNDLE [--fp16] [--int8 [--calibration-images N]] [--opset N]
                    [--max-batch N] [--force]
    bld-export inspect BUNDLE
    bld-export verify BUNDLE [--run RUN_DIR]
    bld-export triton BUNDLE -o REPO ...  (a Triton model repository; from bld_serving)
    bld-export engine ...        (TensorRT engines; from bld_engines, loaded when run)
    bld-export doctor            (GPU, CUDA, TensorRT and onnxruntime providers; bld_engines)

Every failure prints one line, `error: <message>`, and exits 1, without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from bld_runtime.cli import OneLineErrorGroup
from bld_runtime.version import version_option

#: The entry-point group of the commands other packages contribute (pyproject.toml: bld_serving's
#: `triton`, bld_engines' `engine` and `doctor`), imported only when named: those packages depend
#: on bld_runtime only, and bld_export never imports them (docs/ARCHITECTURE.md).
ENTRY_POINT_GROUP = "bld_export.commands"


class ExportGroup(OneLineErrorGroup):
    def _plugins(self):
        from importlib import metadata

        return {
            ep.name: ep
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name not in self.commands
        }

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
            from bld_runtime.errors import BldError

            raise BldError(
                f"`bld-export {name}` comes from {ep.module}, which cannot be imported here ({e})"
            ) from None

    def format_commands(self, ctx, formatter):
        """Like click's, but a command whose package cannot be imported here is still listed."""
        from bld_runtime.errors import BldError

        names = self.list_commands(ctx)
        plugins = self._plugins()
        limit = formatter.width - 6 - max(map(len, names))  # as click lays it out
        rows = []
        for name in names:
            try:
                rows.append((name, self.get_command(ctx, name).get_short_help_str(limit)))
            except BldError:
                rows.append((name, f"(needs {plugins[name].module.split('.')[0]}, not installed)"))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=ExportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("bld-export")
def main():
    """Export trained bld runs to self-describing ONNX bundles, inspect and verify them."""


@main.command("onnx")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "bundle",
    required=True,
    type=click.Path(path_type=Path),
    help="Bundle directory to write (must not exist or be empty).",
)
@click.option("--fp16", is_flag=True, help="Also export decoder/step graphs that run in fp16.")
@click.option(
    "--int8",
    is_flag=True,
    help="Also write int8 step graphs (QDQ: weights and activations of every MatMul/Gemm with "
    "weights in int8), calibrated on trajectories the fp32 bundle samples.",
)
@click.option(
    "--calibration-images",
    default=256,  # quantize.DEFAULT_CALIBRATION_IMAGES (not imported: onnx, at --help)
    show_default=True,
    type=click.IntRange(min=1),
    help="With --int8: images sampled per step graph for the calibration (each gives one input "
    "row per step).",
)
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset (>= 17).")
@click.option(
    "--max-batch",
    default=64,
    show_default=True,
    type=int,
    help="Largest batch the bundle declares (TensorRT profiles use it).",
)
@click.option("--force", is_flag=True, help="Replace an existing bundle at the output path.")
def onnx_command(run_dir, bundle, fp16, int8, calibration_images, opset, max_batch, force):
    """Export RUN_DIR to a validated ONNX bundle."""
    from .export import export_bundle

    export_bundle(
        run_dir,
        bundle,
        fp16=fp16,
        int8=int8,
        calibration_images=calibration_images,
        opset=opset,
        max_batch=max_batch,
        progress=click.echo,
        force=force,
    )


@main.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
def inspect_command(bundle):
    """Summarize a bundle: sizes, schedule, graphs with their I/O and FLOPs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bld_runtime.manifest import load_bundle

    from .flops import format_flops  # imports onnx: not at start, for --help and --version

    _recover(bundle)
    loaded = load_bundle(bundle)
    loaded.verify_files()
    m = loaded.manifest
    console = Console(highlight=False)
    console.print(
        f"[bold]{escape(str(loaded.directory))}[/bold]  ({m.format} v{m.schema_version}, "
        f"bld {m.producer.bld}, torch {m.producer.torch}, onnx {m.producer.onnx}, "
        f"onnxruntime {m.producer.onnxruntime})"
    )
    console.print(
        f"image    {m.image.height}x{m.image.width}x{m.image.channels}   "
        f"latent {m.latent.height}x{m.latent.width} tokens x {m.latent.bits} bits   "
        f"classes {m.classes.count} (null class {m.classes.null_class})"
    )
    s = m.schedule
    console.print(
        f"schedule {s.name}, T={s.train_steps}, K={s.sampling_steps}, timesteps "
        + escape(str(list(s.timesteps)))
    )
    console.print(
        f"defaults temperature {m.defaults.temperature}, guidance "
        f"{m.defaults.guidance}   max batch {m.max_batch}"
    )

    graphs = Table(title="graphs")
    for column in ("graph", "precision", "opset", "FLOPs/image", "MB"):
        graphs.add_column(column, justify="right" if column in ("FLOPs/image", "MB") else "left")
    for name, g in m.graphs.items():
        size = (loaded.directory / g.file).stat().st_size / 1e6
        label = name if g.file == f"{name}.onnx" else f"{name} ({escape(g.file)})"
        graphs.add_row(label, g.precision, str(g.opset), format_flops(g.flops), f"{size:.1f}")
    console.print(graphs)

    io = Table(title="inputs and outputs")
    for column in ("graph", "", "name", "dtype", "shape"):
        io.add_column(column)
    for name, g in m.graphs.items():
        rows = [("in", t) for t in g.inputs] + [("out", t) for t in g.outputs]
        for i, (direction, t) in enumerate(rows):
            shape = escape("[" + ", ".join(map(str, t.shape)) + "]")  # not rich markup
            io.add_row(
                name if i == 0 else "",
                direction,
                t.name,
                t.dtype,
                shape,
                end_section=i == len(rows) - 1,
            )
    console.print(io)

    K = s.sampling_steps
    for suffix in ("", "_fp16"):
        if "step" + suffix not in m.graphs:
            continue
        step, guided = m.graphs["step" + suffix].flops, m.graphs["step_guided" + suffix].flops
        decoder = m.graphs["decoder" + suffix].flops
        label = "fp16" if suffix else "fp32"
        console.print(
            f"FLOPs per step ({label}): {format_flops(step)} unguided, "
            f"{format_flops(guided)} guided; one image = {K} steps + decoder = "
            f"{format_flops(K * step + decoder)} unguided, "
            f"{format_flops(K * guided + decoder)} guided"
        )


@main.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The run the bundle was exported from: also compare with PyTorch.",
)
def verify_command(bundle, run_dir):
    """Check hashes, the manifest against every graph (I/O, recorded facts, probed schedule
    and classes), and re-run validation (ONNX Runtime vs reference evaluator [vs PyTorch])."""
    from bld_runtime.verify import verify_bundle

    from .errors import ValidationError
    from .graphs import Dims, Models
    from .validate import validate_bundle

    _recover(bundle)
    loaded = verify_bundle(bundle, log=click.echo)
    models = None
    if run_dir is not None:
        models = Models.load(run_dir)
        run_dims = Dims.from_configs(models.autoencoder.cfg, models.prior_cfg)
        if run_dims != Dims.from_manifest(loaded.manifest):
            raise ValidationError(
                f"run {run_dir} does not match bundle {bundle}: the run has "
                f"{run_dims}, the bundle {Dims.from_manifest(loaded.manifest)}"
            )
    results = validate_bundle(
        loaded.directory, loaded.manifest, models, log=lambda line: click.echo(f"  {line}")
    )
    backends = "ONNX Runtime, reference evaluator" + (", PyTorch" if models else "")
    click.echo(f"ok: {len(results)} comparisons passed ({backends})")


def _recover(bundle: Path) -> None:
    """Finish or undo a replacement of `bundle` that a killed export left, and remove its
    staging folders; nothing to do while another export holds the bundle's lock."""
    from bld_runtime.errors import OutputError
    from bld_runtime.files import OutputLock, recover_directory

    try:
        with OutputLock(bundle, f"bundle {bundle}"):
            note = recover_directory(bundle)
    except OutputError:  # an export is writing it right now: it will finish the job
        return
    if note:
        click.echo(note)


__all__ = ["main"]

if __name__ == "__main__":
    main(prog_name="bld-export")
