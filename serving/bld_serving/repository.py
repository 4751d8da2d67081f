"""Write a Triton model repository for a bundle (`bld-export triton`).

In-process layout (default; every backend but `tensorrt`):

    REPO/bld/config.pbtxt              Python model, dynamic batching
    REPO/bld/1/model.py                models/pipeline_model.py
    REPO/bld/1/bundle/                 the bundle: bld.json + graphs, hashes checked at load
    REPO/bld_stream/...                the same, decoupled: step previews, then the image

Graph layout (`graphs=True`, for GPU servers; `tensorrt` always):

    REPO/bld/                          Python BLS model: the K steps and the Philox draws
    REPO/bld_step/, bld_step_guided/, bld_decoder/
                                       one model per graph: onnxruntime_onnx (model.onnx;
                                       tensorrt-ep adds the TensorRT accelerator) or
                                       tensorrt_plan (one plan per compute capability)

Version-compatible plans load only in a tritonserver started with
`--backend-config=tensorrt,version-compatible=true`: their graph models record
`bld_version_compatible: "true"`, `server_args(REPO)` lists the flag (the local server passes
it) and `bld-export triton` prints it.

The repository is built in a staging folder beside REPO, checked (every config parses as
Triton's ModelConfig and follows its load rules; every file it names is there), then moved into
place by bld_runtime.files.replacing_directory, under REPO's lock: a failed or killed export
leaves REPO as it was (a later export finishes or undoes a half-done replacement).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from bld_runtime.backends import PRECISIONS
from bld_runtime.backends.base import graph_names
from bld_runtime.errors import ManifestError
from bld_runtime.files import replacing_directory
from bld_runtime.manifest import MANIFEST_NAME, load_bundle
from bld_runtime.protocol import MODEL, STREAM_MODEL

from . import configs
from .configs import Serving
from .errors import ServingError
from .plans import ANY_GPU, ROLES, VERSION_COMPATIBLE_ARG, Plans

BACKENDS = ("cpu", "cuda", "tensorrt-ep", "tensorrt")
# Served: the bundle's graph precisions (bld_runtime.backends.PRECISIONS); int8 (the *_int8 step
# graphs) with the runtime's cpu backend or TensorRT engines of them; the onnxruntime GPU
# backends refuse int8, as the runtime does.
INT8_BACKENDS = ("cpu", "tensorrt")
DEFAULT_PLAN = "model.plan"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the graphs are read-only data: share the bytes when we can
    except OSError:
        shutil.copy2(src, dst)


def _copy_bundle(bundle, target: Path) -> None:
    _link_or_copy(bundle.directory / MANIFEST_NAME, target / MANIFEST_NAME)
    for graph in bundle.manifest.graphs.values():
        _link_or_copy(bundle.directory / graph.file, target / graph.file)


def _model_file(name: str) -> str:
    return resources.files("bld_serving.models").joinpath(name).read_text()


def _write_model(repo: Path, config, files: dict[str, str | Path]) -> None:
    """config.pbtxt plus the version folder 1/ (name -> text, or a Path to link or copy)."""
    folder = repo / config.name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(configs.to_text(config))
    for name, content in files.items():
        if isinstance(content, Path):
            _link_or_copy(content, folder / "1" / name)
        else:
            (folder / "1" / name).write_text(content)


def check_repository(repo: str | os.PathLike) -> list[str]:
    """Parse and check every model of a repository; returns the model names."""
    repo = Path(repo)
    names = []
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        source = str(config_path)
        config = configs.parse(config_path.read_text(), source)
        if config.name != config_path.parent.name:
            raise ServingError(
                f"{source}: the model is named {config.name!r} but its folder "
                f"{config_path.parent.name!r}; Triton needs them equal"
            )
        version = config_path.parent / "1"
        files = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
        if not files:
            raise ServingError(f"{source}: version folder {version} is empty")
        configs.check_config(config, source, files)
        names.append(config.name)
    if not names:
        raise ServingError(f"{repo} holds no model (no */config.pbtxt)")
    return names


def _check_options(serving: Serving) -> None:
    if serving.backend not in BACKENDS:
        raise ServingError(
            f"--backend must be one of {', '.join(BACKENDS)}, got {serving.backend!r}"
        )
    for name in ("max_batch", "instances"):
        if getattr(serving, name) < 1:
            raise ServingError(
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(serving, name)}"
            )
    for name in ("queue_delay_us", "threads", "preview_every"):
        if getattr(serving, name) < 0:
            raise ServingError(
                f"--{name.replace('_', '-')} must be >= 0, got {getattr(serving, name)}"
            )
    if serving.precision not in PRECISIONS:
        raise ServingError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {serving.precision!r}"
        )
    if serving.precision == "int8" and serving.backend not in INT8_BACKENDS:
        raise ServingError(
            f"--precision int8 is served with --backend {' or '.join(INT8_BACKENDS)}, "
            f"not {serving.backend}"
        )
    if (
        serving.python_env
        and not Path(serving.python_env).is_absolute()
        and not serving.python_env.startswith("$$TRITON_MODEL_DIRECTORY")
    ):
        raise ServingError(
            f"--python-env must be an absolute path (or start with "
            f"$$TRITON_MODEL_DIRECTORY), got {serving.python_env!r}"
        )


def write_repository(
    bundle_dir,
    out_dir,
    serving: Serving | None = None,
    graphs: bool = False,
    plans: Plans | None = None,
    force: bool = False,
) -> list[str]:
    """Write the repository for `bundle_dir` to `out_dir`; returns the model names.

    plans: for the `tensorrt` backend, the plans of every sampling graph (bld_serving.plans).
    """
    serving = serving or Serving()
    _check_options(serving)
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    if serving.max_batch > manifest.max_batch:
        raise ServingError(
            f"--max-batch {serving.max_batch} is above the bundle's max_batch "
            f"of {manifest.max_batch} (its graphs and engines are built for it)"
        )
    try:
        names = graph_names(bundle, serving.precision)
    except ManifestError as e:
        raise ServingError(str(e)) from None
    if serving.backend == "tensorrt":
        graphs = True
        if plans is None or plans.missing():
            raise ServingError(
                "the tensorrt backend needs a plan for every sampling graph "
                "(bld_serving.plans.collect_plans)"
            )
    bundle.verify_files()  # the repository carries these very files

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ServingError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ServingError(f"{out} exists and is not empty (use --force to replace it)")
    with replacing_directory(out, f"model repository {out}") as staged:
        if graphs:
            _write_graph_layout(staged, bundle, names, serving, plans or Plans())
        else:
            for name, decoupled in ((MODEL, False), (STREAM_MODEL, True)):
                config = configs.pipeline_model(name, manifest, serving, decoupled)
                _write_model(staged, config, {"model.py": _model_file("pipeline_model.py")})
                _copy_bundle(bundle, staged / name / "1" / "bundle")
        models = check_repository(staged)
    return models


def server_args(repo: str | os.PathLike) -> list[str]:
    """The tritonserver arguments this repository needs beyond --model-repository."""
    for config_path in sorted(Path(repo).glob("*/config.pbtxt")):
        config = configs.parse(config_path.read_text(), str(config_path))
        param = config.parameters.get("bld_version_compatible")
        if param is not None and param.string_value == "true":
            return [VERSION_COMPATIBLE_ARG]
    return []


def _plan_files(found: dict[str, Path]) -> tuple[dict[str, Path], dict[str, str], str | None]:
    """(version-folder files, cc -> file name, default plan file name or None)."""
    files = {
        f"model.sm{cc.replace('.', '')}.plan": path for cc, path in found.items() if cc != ANY_GPU
    }
    by_cc = {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in found if cc != ANY_GPU}
    default = None
    if ANY_GPU in found:
        files[DEFAULT_PLAN] = found[ANY_GPU]
        default = DEFAULT_PLAN
    return files, by_cc, default


def _write_graph_layout(
    repo: Path, bundle, names: dict[str, str], serving: Serving, plans: Plans
) -> None:
    manifest = bundle.manifest
    models = {role: f"{MODEL}_{role}" for role in ROLES}
    for role, model in models.items():
        name = names[role]
        spec = manifest.graphs[name]
        if serving.backend == "tensorrt":
            files, by_cc, default = _plan_files(plans.by_role[role])
            config = configs.graph_model(model, name, spec, serving, by_cc, default)
            if plans.tensorrt_version:
                config.parameters["bld_tensorrt_version"].string_value = plans.tensorrt_version
            if plans.version_compatible:
                config.parameters["bld_version_compatible"].string_value = "true"
        else:
            files = {"model.onnx": bundle.directory / spec.file}
            config = configs.graph_model(model, name, spec, serving)
        config.parameters["bld_graph"].string_value = name
        config.parameters["bld_sha256"].string_value = spec.sha256
        _write_model(repo, config, files)
    config = configs.pipeline_model(MODEL, manifest, serving, decoupled=False, graph_models=models)
    _write_model(
        repo,
        config,
        {
            "model.py": _model_file("bls_model.py"),
            "pipeline_model.py": _model_file("pipeline_model.py"),
        },
    )
    _copy_bundle(bundle, repo / MODEL / "1" / "bundle")
