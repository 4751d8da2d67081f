"""`bld bench`: the command (added to `bld` through the entry-point group "bld.commands")."""

from __future__ import annotations

import sys

import click

from bld_runtime.cli import (
    pin_threads_for,
    pin_threads_option,
    precision_option,
    thread_pool_option,
)
from bld_runtime.errors import BldError

from . import IDLE_SECONDS


def _int_list(ctx, param, value):
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"batch sizes must be integers >= 1, got {value!r}")
    return out


def _names(ctx, param, value):
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@click.command(help="Time the sampling loop stage by stage, side by side with PyTorch.")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--backend",
    "backend_names",
    multiple=True,
    callback=_names,
    help="cpu, cuda, tensorrt-ep, openvino, cpp (the C++ runtime's libbld, `make cpp`), torch, "
    "torch-compile, torch-reference, each "
    "optionally NAME:PRECISION (e.g. openvino:bf16, torch-compile:bf16) to run another "
    "precision than --precision; repeat or comma-separate (default: cpu, plus torch with "
    "--run). They run in turns, A B A B.",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The run directory the bundle was exported from (for torch backends).",
)
@click.option(
    "--batch",
    "batches",
    default="1,4,16",
    callback=_int_list,
    show_default=True,
    help="Batch sizes, comma-separated.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Denoising steps; must match the bundle's (default: the bundle's).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Untimed rounds per batch size (torch.compile compiles in these).",
)
@click.option(
    "--iters",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed rounds per batch size.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for every backend and the GEMM peak (default: usable cores).",
)
@click.option(
    "--guidance",
    type=click.FloatRange(min=0),
    default=None,
    help="Guidance scale (default: the bundle's).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Temperature (default: the bundle's).",
)
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=0, show_default=True)
@precision_option(
    "The precision of backends named without one (bf16: the fp32 graphs in bfloat16 "
    "on openvino, torch.autocast on the PyTorch backends)."
)
@thread_pool_option(
    "The runtime backends' onnxruntime threads (Python's and cpp's): one pool for the process, "
    "or a pool per session (bld sample --thread-pool)."
)
@pin_threads_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON (schema bld-bench/1) instead of the table.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write latency and throughput vs batch size per backend to this PNG.",
)
@click.option(
    "--idle",
    type=click.FloatRange(min=0),
    default=IDLE_SECONDS,
    show_default=True,
    help="Seconds of idle before every run, so that each is a request arriving at a quiet "
    "machine and no contender's spinning threads slow the next; 0 times runs back to back, as "
    "a busy server would see them.",
)
@click.option("--no-peak", is_flag=True, help="Skip measuring the GEMM peak.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(
    bundle,
    backend_names,
    run_dir,
    batches,
    steps,
    warmup,
    iters,
    threads,
    guidance,
    temperature,
    seed,
    precision,
    thread_pool,
    pin_threads,
    as_json,
    plot,
    idle,
    no_peak,
    quiet,
):
    import json

    from rich.console import Console

    from .core import benchmark
    from .report import render_table, write_plot

    err = Console(stderr=True)
    names = backend_names or (["cpu", "torch"] if run_dir else ["cpu"])
    if plot is not None:  # fail before minutes of measuring, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BldError("--plot needs matplotlib (pip install matplotlib)") from None
    report = benchmark(
        bundle,
        names,
        batches,
        run_dir=run_dir,
        steps=steps,
        warmup=warmup,
        iters=iters,
        threads=threads,
        guidance=guidance,
        temperature=temperature,
        seed=seed,
        precision=precision,
        thread_pool=thread_pool,
        pin_threads=pin_threads_for(pin_threads, thread_pool),
        idle=idle,
        measure_peak=not no_peak,
        log=(lambda s: None) if quiet else (lambda s: err.print(s)),
    )
    if plot is not None:
        write_plot(report, plot)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: do not squeeze the table into 80 columns
            console = Console(width=160)
        render_table(report, console)


def main():  # python -m bld_bench.cli, without the `bld` entry point
    from bld_runtime.cli import OneLineErrorGroup

    group = OneLineErrorGroup(commands={"bench": bench})
    group.main(["bench", *sys.argv[1:]], prog_name="bld")


if __name__ == "__main__":
    main()
