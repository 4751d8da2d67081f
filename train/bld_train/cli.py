"""`bld train autoencoder|prior`: the training commands (added to `bld` via an entry point).

Without the installed `bld` entry point: python -m bld_train.cli autoencoder --preset tiny ...
Under torchrun, put `--` before the command (torchrun would take `--run` for its `--run-path`):
    torchrun --standalone --nproc_per_node 2 -m bld_train.cli -- autoencoder --run RUN ...
"""

from __future__ import annotations

import os
import sys

import click

from bld_runtime.cli import OneLineErrorGroup
from bld_train.config import PRESETS

_common = [
    click.option(
        "--run",
        "run_dir",
        required=True,
        type=click.Path(file_okay=False),
        help="Run directory (holds autoencoder/ and prior/).",
    ),
    click.option(
        "--steps",
        type=click.IntRange(min=1),
        default=None,
        help="Override the preset's number of optimizer steps.",
    ),
    click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint."),
    click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=None,
        help="Override the preset's seed (new runs only).",
    ),
    click.option("--device", default=None, help="torch device; default cuda:LOCAL_RANK or cpu."),
    click.option("--no-amp", is_flag=True, help="Train in float32 even on CUDA."),
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=min(4, os.cpu_count() or 1),
        show_default=True,
        help="Data loader processes for image folders.",
    ),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def common_options(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@click.group(
    cls=OneLineErrorGroup, help="Train the binary autoencoder and the diffusion prior of a run."
)
def train():
    pass


@train.command(help="Train (or --resume) RUN/autoencoder.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Model and training settings (default: digits; on --resume: the saved ones).",
)
@click.option(
    "--data",
    "data",
    default=None,
    help="'digits' or a folder of images (overrides the preset's data).",
)
@click.option(
    "--lpips",
    "lpips",
    default=None,
    type=click.Path(dir_okay=False),
    help="Local LPIPS-VGG16 safetensors file for the perceptual term (paper256 has one "
    "at weight 1, as upstream; see train/bld_train/losses.py). Never downloaded.",
)
@common_options
def autoencoder(preset, data, lpips, run_dir, steps, resume, seed, device, no_amp, workers, quiet):
    from bld_train.train_autoencoder import train_autoencoder

    train_autoencoder(
        run_dir=run_dir,
        preset=preset,
        resume=resume,
        steps=steps,
        seed=seed,
        data=data,
        device=device,
        amp=not no_amp,
        workers=workers,
        progress=not quiet,
        perceptual_weights=lpips,
    )


@train.command(help="Train (or --resume) RUN/prior on the latents of RUN/autoencoder.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Default: the preset RUN/autoencoder was trained with.",
)
@common_options
def prior(preset, run_dir, steps, resume, seed, device, no_amp, workers, quiet):
    from bld_train.train_prior import train_prior

    train_prior(
        run_dir=run_dir,
        preset=preset,
        resume=resume,
        steps=steps,
        seed=seed,
        device=device,
        amp=not no_amp,
        workers=workers,
        progress=not quiet,
    )


@train.command(
    help="Create RUN with untrained (random) weights for both stages: for exporting "
    "and benchmarking configurations too big to train here."
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), required=True)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def init(preset, run_dir, seed):
    from bld_train.checkpoint import init_random_run
    from bld_train.config import preset as load_preset

    init_random_run(run_dir=run_dir, preset=load_preset(preset), seed=seed)
    click.echo(f"wrote an untrained {preset} run to {run_dir}")


if __name__ == "__main__":
    # torchrun may pass the `--` separator through; it is not part of our command line.
    train(args=[a for i, a in enumerate(sys.argv[1:]) if not (i == 0 and a == "--")])
