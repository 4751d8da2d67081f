"""`bld evaluate` and `bld demo`: the workflow commands (added to `bld` via the entry-point
group "bld.commands"). They sit above training and export, which never import them.
"""

from __future__ import annotations

import click

from bld_runtime.cli import precision_option
from bld_runtime.errors import BldError
from bld_train.config import PRESETS


@click.command("evaluate")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--guidance",
    default="0",
    show_default=True,
    help="Comma-separated guidance scales to score, e.g. 0,1,3.",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=2),
    default=50,
    show_default=True,
    help="Samples per class.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**64 - 1),
    default=0,
    show_default=True,
    help="Base seed of the samples.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    help="Where to write grid.png and eval.json (default: the bundle's parent directory).",
)
@click.option(
    "--backend", default="cpu", show_default=True, help="The runtime backend that samples."
)
@precision_option(
    "The precision that samples (as bld sample's); other than fp32, the samples are also "
    "compared with the fp32 graphs' (identical shares, PSNR)."
)
def evaluate(bundle, guidance, per_class, seed, out_dir, backend, precision):
    """Score a digits bundle: reconstruction PSNR, sample accuracy and diversity."""
    from bld_workflows.evaluate import run_evaluation

    try:
        guidances = tuple(float(g) for g in guidance.split(","))
    except ValueError:
        raise BldError(f"--guidance must be comma-separated numbers, got {guidance!r}") from None
    run_evaluation(
        bundle,
        guidances,
        per_class,
        seed,
        out_dir,
        click.echo,
        backend=backend,
        precision=precision,
    )


@click.command("demo")
@click.option(
    "--run",
    "run_dir",
    default="runs/digits",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Run directory of the demo.",
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="digits", show_default=True)
@click.option("--fresh", is_flag=True, help="Start over: remove the run directory first.")
@click.option(
    "--per-class",
    type=click.IntRange(min=2),
    default=50,
    show_default=True,
    help="Samples per class for the figures.",
)
def demo(run_dir, preset, fresh, per_class):
    """Train, export, sample and score the demo, reusing the stages already done."""
    from bld_workflows.demo import run_demo

    run_demo(run_dir, preset, fresh=fresh, per_class=per_class, echo=click.echo)
