"""`bld-export doctor`: what this machine can run, checked rather than assumed.

GPU, driver and CUDA runtime (through cuda-python), each TensorRT flavour's version, NVRTC,
CuPy, and which onnxruntime execution providers ACTUALLY start: onnxruntime-gpu lists the
CUDA and TensorRT providers even without a GPU and then silently runs on the CPU, so each one
gets a real session and `get_providers()` is read back. With a GPU, a TensorRT builder and
`--bundle`, it builds that bundle's engines and checks parity with the CPU runtime.
"""

from __future__ import annotations

import importlib
import tempfile
from importlib.resources import files
from pathlib import Path

import click

PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def provider_status() -> dict[str, str]:
    """provider -> "starts" | "listed, but a session falls back to ..." | "fails: ..."."""
    import onnxruntime as ort

    model = files("bld_engines").joinpath("data", "probe.onnx").read_bytes()
    status = {}
    available = ort.get_available_providers()
    for provider in PROVIDERS:
        if provider not in available:
            status[provider] = "not in this onnxruntime"
            continue
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 4  # the fallback warning is what we report ourselves
            session = ort.InferenceSession(model, options, providers=[provider])
            used = session.get_providers()
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            status[provider] = f"fails: {' '.join(str(e).split())[:160]}"
            continue
        status[provider] = (
            "starts"
            if used and used[0] == provider
            else f"listed, but a session falls back to {', '.join(used)}"
        )
    return status


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return "not installed"
    except Exception as e:  # noqa: BLE001 - broken installs raise anything
        return f"broken ({type(e).__name__}: {e})"
    return str(getattr(module, "__version__", "installed"))


def _nvrtc() -> str:
    from bld_runtime.backends.cudart import import_cuda
    from bld_runtime.errors import BackendUnavailableError

    try:
        cuda = import_cuda()
        err, major, minor = cuda.nvrtc.nvrtcVersion()
    except BackendUnavailableError:
        return "needs cuda-python"
    except Exception as e:  # noqa: BLE001 - a missing libnvrtc raises the loader's error
        return f"not loadable ({' '.join(str(e).split())[:120]})"
    return f"{major}.{minor}" if int(err) == 0 else f"error {err}"


@click.command("doctor")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="With a GPU: build this bundle's engines and check parity with the CPU.",
)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
def doctor(bundle, precision):
    """Report the GPU, driver, CUDA, TensorRT, NVRTC, CuPy and onnxruntime providers here."""
    import onnxruntime as ort

    from bld_runtime.backends.cudart import probe
    from bld_runtime.trt_flavours import available_versions

    info = probe()
    if info.count:
        click.echo(
            f"GPU           {info.name} (sm_{info.compute_capability.replace('.', '')}), "
            f"{info.count} device{'s' if info.count > 1 else ''}"
        )
    else:
        click.echo(f"GPU           none usable: {info.problem}")
    click.echo(f"CUDA          driver {info.driver or 'none'}, runtime {info.runtime or 'none'}")
    click.echo(f"cuda-python   {_module_version('cuda.bindings')}   NVRTC {_nvrtc()}")
    for module, version in available_versions().items():
        click.echo(f"{module:<13} {version or 'not installed'}")
    click.echo(f"cupy          {_module_version('cupy')}")
    click.echo(f"onnxruntime   {ort.__version__} ({ort.get_device()} build)")
    for provider, status in provider_status().items():
        click.echo(f"  {provider:<27} {status}")
    if bundle is None:
        return
    if not info.count:
        click.echo("engine check  skipped: no GPU here (engines run on a GPU)")
        return
    _engine_check(bundle, precision)


def _engine_check(bundle, precision) -> None:
    from bld_runtime.backends import BackendOptions
    from bld_runtime.pipeline import Pipeline

    from .builder import BuildOptions, build_bundle
    from .parity import check_parity

    with tempfile.TemporaryDirectory(prefix="bld-doctor-") as cache:
        results = build_bundle(bundle, cache, BuildOptions(precision=precision))
        click.echo(
            f"engine check  built {len(results)} engines ({sum(r.seconds for r in results):.1f}s)"
        )
        gpu = Pipeline.load(
            bundle,
            backend="tensorrt",
            precision=precision,
            options=BackendOptions(trt_cache_dir=cache),
        )
        memory = ", ".join(
            f"{name} {size / 2**20:.1f}"
            for name, size in sorted(gpu.backend.device_memory().items())
        )
        click.echo(f"engine memory MiB per execution context: {memory}")
        cpu = Pipeline.load(bundle, backend="cpu", precision=precision)
        report = check_parity(gpu, cpu)
    click.echo(f"parity        {'ok' if report.ok else 'FAILED'}: {report.describe()}")
    if not report.ok:
        from bld_runtime.errors import BldError

        raise BldError(f"the TensorRT pipeline disagrees with the CPU runtime: {report.describe()}")
