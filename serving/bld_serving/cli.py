"""`bld-export triton BUNDLE -o REPO ...`: write a Triton model repository serving a bundle.

bld_export's CLI loads this command when it is run, through the entry-point group
"bld_export.commands" (pyproject.toml), so `bld-export` neither imports bld_serving nor needs
tritonclient for its other commands.
"""

from __future__ import annotations

from pathlib import Path

import click

from bld_runtime.backends import PRECISIONS


@click.command("triton")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "repo",
    required=True,
    type=click.Path(path_type=Path),
    help="Model repository folder to write (new or empty; --force replaces one).",
)
@click.option(
    "--backend",
    type=click.Choice(["cpu", "cuda", "tensorrt-ep", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="cpu/cuda/tensorrt-ep: the runtime's backend inside the Python models "
    "(with --graphs: onnxruntime_onnx graph models); tensorrt: tensorrt_plan "
    "graph models driven by a BLS model.",
)
@click.option(
    "--graphs",
    is_flag=True,
    help="GPU layout: one Triton model per graph plus a BLS model running the loop.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="int8: the bundle's *_int8 step graphs (bld-export onnx --int8), with --backend cpu "
    "or tensorrt.",
)
@click.option(
    "--max-batch",
    default=16,
    show_default=True,
    type=int,
    help="Triton's max_batch_size (at most the bundle's max_batch).",
)
@click.option(
    "--queue-delay-us",
    default=2000,
    show_default=True,
    type=int,
    help="Dynamic batching: how long a request may wait for others.",
)
@click.option(
    "--instances",
    default=1,
    show_default=True,
    type=int,
    help="Model instances (per GPU for GPU backends); each owns its pipeline.",
)
@click.option(
    "--threads",
    default=0,
    show_default=True,
    type=int,
    help="onnxruntime intra-op threads per instance (0 = one per core).",
)
@click.option(
    "--python-env",
    default=None,
    help="EXECUTION_ENV_PATH of the Python models: a venv or conda-pack archive "
    "with bld, numpy<2 and onnxruntime (see docs/serving.md).",
)
@click.option(
    "--preview-every",
    default=4,
    show_default=True,
    type=int,
    help="bld_stream's default preview interval in steps (0 = final image only).",
)
@click.option(
    "--trt-cache",
    default=None,
    help="tensorrt-ep: folder for TensorRT's engine cache on the server.",
)
@click.option(
    "--engine-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="tensorrt: an engine cache written by bld-export engine.",
)
@click.option(
    "--tensorrt-version",
    default=None,
    metavar="X.Y.Z.B",
    help="tensorrt: take the engine cache's plans of this TensorRT version (your "
    "Triton container's) when it holds several.",
)
@click.option(
    "--plan",
    "plan_args",
    multiple=True,
    metavar="GRAPH@CC=FILE",
    help="tensorrt: a plan for one graph role and compute capability, "
    "e.g. step@8.6=step.plan (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace an existing repository.")
def triton(
    bundle,
    repo,
    backend,
    graphs,
    precision,
    max_batch,
    queue_delay_us,
    instances,
    threads,
    python_env,
    preview_every,
    trt_cache,
    engine_cache,
    tensorrt_version,
    plan_args,
    force,
):
    """Write a Triton Inference Server model repository serving BUNDLE."""
    from .configs import Serving
    from .errors import ServingError
    from .plans import collect_plans
    from .repository import server_args, write_repository

    serving = Serving(
        backend=backend,
        precision=precision,
        max_batch=max_batch,
        queue_delay_us=queue_delay_us,
        instances=instances,
        threads=threads,
        python_env=python_env,
        preview_every=preview_every,
        trt_cache=trt_cache,
    )
    if backend != "tensorrt" and (engine_cache or plan_args or tensorrt_version):
        raise ServingError(
            "--engine-cache, --plan and --tensorrt-version are for --backend tensorrt"
        )
    plans = (
        collect_plans(bundle, precision, max_batch, engine_cache, plan_args, tensorrt_version)
        if backend == "tensorrt"
        else None
    )
    names = write_repository(bundle, repo, serving, graphs=graphs, plans=plans, force=force)
    click.echo(
        f"wrote {repo}: models {', '.join(names)} (configs checked against Triton's "
        f"model_config.proto)"
    )
    needed = server_args(repo)
    if needed:  # version-compatible plans: Triton refuses them without the flag
        click.echo(f"serve it with: tritonserver --model-repository {repo} {' '.join(needed)}")
