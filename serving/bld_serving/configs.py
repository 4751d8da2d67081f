"""config.pbtxt of every model `bld-export triton` writes, built as Triton's own ModelConfig.

The configs are protobuf messages of Triton's model_config.proto (the copy tritonclient
ships), written with protobuf's text format, so a field name, type or enum value Triton would
not parse cannot be written. `check_config` adds what the proto cannot say: the rules Triton
applies when it loads a model (batch axis, reshape of per-row scalars, decoupled, instance
kinds, plan files), so a repository is checked here as far as it can be without the backend.

The served protocol (names, types) comes from bld_runtime.protocol; graph I/O from the
bundle manifest's GraphSpec.
"""

from __future__ import annotations

from dataclasses import dataclass

from bld_runtime import protocol
from bld_runtime.bits import packed_bytes
from bld_runtime.manifest import BATCH, GraphSpec, Manifest

from .errors import ServingError

# manifest dtype -> Triton data type
DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


def proto():
    """(model_config_pb2, text_format), or a clear error naming the extra to install."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise ServingError(
            f"writing Triton configs needs tritonclient[grpc] ({e}); install "
            f"it with pip install 'bld[serving]'"
        ) from None
    return model_config_pb2, text_format


@dataclass(frozen=True)
class Serving:
    """The serving choices of one repository (bld-export triton's options)."""

    backend: str = "cpu"  # cpu | cuda | tensorrt-ep | tensorrt
    precision: str = "fp32"
    max_batch: int = 16
    queue_delay_us: int = 2000
    instances: int = 1
    threads: int = 0  # onnxruntime intra-op threads per instance (0 = one per core)
    python_env: str | None = None  # EXECUTION_ENV_PATH
    preview_every: int = 4  # bld_stream's default preview interval (0 = none)
    trt_cache: str | None = None  # tensorrt-ep: onnxruntime's TensorRT engine cache

    @property
    def gpu(self) -> bool:
        return self.backend != "cpu"


def _parameters(config, values: dict[str, str]) -> None:
    for key, value in values.items():
        if value not in (None, ""):
            config.parameters[key].string_value = str(value)


def _bundle_parameters(manifest: Manifest) -> dict[str, str]:
    img, lat = manifest.image, manifest.latent
    return {
        protocol.PARAM_IMAGE: f"{img.height}x{img.width}x{img.channels}",
        protocol.PARAM_LATENT: f"{lat.height}x{lat.width}x{lat.bits}",
        protocol.PARAM_CLASSES: str(manifest.classes.count),
        protocol.PARAM_STEPS: str(manifest.schedule.sampling_steps),
        protocol.PARAM_GUIDANCE: repr(manifest.defaults.guidance),
        protocol.PARAM_TEMPERATURE: repr(manifest.defaults.temperature),
    }


def _batching(config, serving: Serving) -> None:
    config.max_batch_size = serving.max_batch
    config.dynamic_batching.max_queue_delay_microseconds = serving.queue_delay_us


def _instances(config, pb, count: int, gpu: bool) -> None:
    group = config.instance_group.add()
    group.count = count
    group.kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU


def pipeline_model(
    name: str,
    manifest: Manifest,
    serving: Serving,
    decoupled: bool,
    graph_models: dict[str, str] | None = None,
):
    """`bld` (decoupled=False) or `bld_stream`: the Python model running Pipeline in-process.

    With graph_models (role -> model name), the GPU layout's BLS `bld`: same protocol, but
    the graphs run in those models, and its instances are CPU instances that drive them.
    """
    pb, _ = proto()
    config = pb.ModelConfig(name=name, backend="python")
    _batching(config, serving)
    L, C = manifest.latent.shape
    # mask and known_bits are (L, C), but declared variable and ragged: a wrong shape then
    # reaches the model, which refuses it with the runtime's own message (Triton's own names
    # the max_batch_size setting, which misleads a client), and does not split the batch.
    dims = {
        protocol.MASK.name: [-1, -1],
        protocol.KNOWN_BITS.name: [-1, -1],
        protocol.IMAGE.name: list(manifest.image.shape),
        protocol.BITS.name: [packed_bytes(L, C)],
    }
    for spec in protocol.STREAM_INPUTS if decoupled else protocol.INPUTS:
        config.input.add(
            name=spec.name,
            data_type=getattr(pb, "TYPE_" + spec.dtype),
            dims=dims.get(spec.name, [1]),
            optional=spec.optional,
            allow_ragged_batch=-1 in dims.get(spec.name, [1]),
        )
    for spec in protocol.STREAM_OUTPUTS if decoupled else protocol.OUTPUTS:
        config.output.add(
            name=spec.name,
            data_type=getattr(pb, "TYPE_" + spec.dtype),
            dims=dims.get(spec.name, [1]),
        )
    if decoupled:
        config.model_transaction_policy.decoupled = True
    _instances(config, pb, serving.instances, serving.gpu and not graph_models)
    runtime = {"bld_precision": serving.precision}
    if graph_models:
        runtime.update({f"bld_model_{role}": model for role, model in graph_models.items()})
    else:
        runtime.update(
            {
                "bld_backend": serving.backend,
                "bld_threads": str(serving.threads),
                "bld_trt_cache": serving.trt_cache,
            }
        )
    if decoupled:
        runtime["bld_preview_every"] = str(serving.preview_every)
    _parameters(
        config,
        {**_bundle_parameters(manifest), **runtime, "EXECUTION_ENV_PATH": serving.python_env},
    )
    return config


# --- GPU layout: one model per graph, driven by a BLS model --------------------------------


def _tensor(pb, spec, graph: str):
    if not spec.shape or spec.shape[0] != BATCH:
        raise ServingError(
            f"graph {graph!r}: {spec.name} has shape {list(spec.shape)}; Triton "
            f"batching needs the dynamic batch axis {BATCH!r} first"
        )
    rest = list(spec.shape[1:])
    if any(isinstance(d, str) for d in rest):
        raise ServingError(
            f"graph {graph!r}: {spec.name} has a dynamic axis besides the "
            f"batch ({list(spec.shape)}); this repository layout needs fixed "
            f"dims"
        )
    return rest, DTYPES[spec.dtype]


def graph_model(
    name: str,
    role: str,
    graph: GraphSpec,
    serving: Serving,
    plans: dict[str, str] | None = None,
    default_plan: str | None = None,
):
    """One bundle graph as `onnxruntime_onnx` (cpu, cuda, tensorrt-ep: TensorRT accelerator
    with its engine cache) or `tensorrt_plan`: plans by compute capability ("8.6" -> file
    name), and default_plan, a hardware-compatible plan for the GPUs without one of their
    own."""
    pb, _ = proto()
    config = pb.ModelConfig(name=name)
    _batching(config, serving)
    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        for spec in specs:
            dims, dtype = _tensor(pb, spec, role)
            tensor = getattr(config, kind).add(name=spec.name, data_type=getattr(pb, dtype))
            if dims:
                tensor.dims.extend(dims)
            else:  # a per-row scalar: Triton needs dims [1]; the graph takes shape [batch]
                tensor.dims.append(1)
                tensor.reshape.SetInParent()
    if serving.backend == "tensorrt":
        if not plans and not default_plan:
            raise ServingError(
                f"graph {role!r}: no TensorRT plan found (build them with "
                f"bld-export engine, or pass --plan)"
            )
        config.platform = "tensorrt_plan"
        newest = max(plans or {"0.0": None}, key=lambda cc: tuple(map(int, cc.split("."))))
        config.default_model_filename = default_plan or plans[newest]
        for cc, file in sorted((plans or {}).items()):
            config.cc_model_filenames[cc] = file
    else:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
        if serving.backend == "tensorrt-ep":
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
                name="tensorrt"
            )
            trt = {
                "precision_mode": "FP16" if serving.precision == "fp16" else "FP32",
                "trt_engine_cache_enable": "true",
                "trt_engine_cache_path": serving.trt_cache or "/tmp/bld_trt_cache",
                "max_workspace_size_bytes": str(1 << 30),
            }
            for key, value in trt.items():
                accelerator.parameters[key] = value
        if serving.threads:
            _parameters(config, {"intra_op_thread_count": str(serving.threads)})
    _instances(config, pb, serving.instances, serving.gpu)
    return config


# --- text and checks ---------------------------------------------------------------------


def to_text(config) -> str:
    _, text_format = proto()
    return text_format.MessageToString(config)


def parse(text: str, source: str):
    """config.pbtxt text -> ModelConfig; a field Triton's proto lacks is an error."""
    pb, text_format = proto()
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ServingError(f"{source}: not a valid Triton model config ({e})") from None
    return config


def check_config(config, source: str, files: set[str] = frozenset()) -> None:
    """Triton's load-time rules that the proto cannot express; `files` = the model's files."""
    pb, _ = proto()

    def fail(message):
        raise ServingError(f"{source}: {message}")

    if not config.name:
        fail("the model has no name")
    if bool(config.backend) == bool(config.platform):
        fail("a model names exactly one of backend and platform")
    if config.max_batch_size < 1:
        fail(f"max_batch_size must be >= 1 for dynamic batching, got {config.max_batch_size}")
    if (
        config.HasField("dynamic_batching")
        and config.dynamic_batching.max_queue_delay_microseconds < 0
    ):
        fail("max_queue_delay_microseconds must be >= 0")
    for kind in ("input", "output"):
        names = [t.name for t in getattr(config, kind)]
        if len(set(names)) != len(names):
            fail(f"duplicate {kind} names {names}")
        for t in getattr(config, kind):
            if t.data_type == pb.TYPE_INVALID:
                fail(f"{kind} {t.name!r} has no data type")
            variable = config.backend == "python" and kind == "input"  # checked by model.py
            if not t.dims or any(d < 1 and not (variable and d == -1) for d in t.dims):
                fail(f"{kind} {t.name!r} needs positive dims, got {list(t.dims)}")
            if t.HasField("reshape") and (list(t.dims) != [1] or list(t.reshape.shape)):
                fail(f"{kind} {t.name!r}: only a per-row scalar (dims [1]) is reshaped, to []")
    decoupled = config.model_transaction_policy.decoupled
    if decoupled and config.backend != "python":
        fail("only the Python model streams (decoupled)")
    if not config.instance_group or any(g.count < 1 for g in config.instance_group):
        fail("every instance group needs count >= 1")
    if config.platform == "tensorrt_plan":
        if not config.cc_model_filenames and not config.default_model_filename:
            fail(
                "tensorrt_plan needs cc_model_filenames (plans per compute capability) or a "
                "default_model_filename"
            )
        if files and config.default_model_filename and config.default_model_filename not in files:
            fail(
                f"default_model_filename {config.default_model_filename!r} is missing from the "
                f"version folder"
            )
        for cc, file in config.cc_model_filenames.items():
            major, _, minor = cc.partition(".")
            if not (major.isdigit() and minor.isdigit()):
                fail(f"cc_model_filenames key {cc!r} is not a compute capability like '8.6'")
            if files and file not in files:
                fail(f"cc_model_filenames[{cc!r}] = {file!r} is missing from the version folder")
        if any(g.kind != pb.ModelInstanceGroup.KIND_GPU for g in config.instance_group):
            fail("TensorRT plans run on KIND_GPU instances only")
    elif config.platform == "onnxruntime_onnx":
        if files and config.default_model_filename not in files:
            fail(f"{config.default_model_filename} is missing from the version folder")
    elif config.backend == "python":
        if files and "model.py" not in files:
            fail("model.py is missing from the version folder")
    else:
        fail(f"unexpected backend/platform {config.backend or config.platform!r}")
