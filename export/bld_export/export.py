"""Export a trained run to a self-describing bundle: ONNX graphs + bld.json, validated.

    export_bundle(run_dir, out_dir, fp16=False, int8=False, opset=17, max_batch=64) -> Manifest

Every graph declared in graphs.py is exported (recording its facts in its ONNX metadata,
`bld.graph`; the int8 step graphs are quantized from the fp32 ones, calibrated on trajectories
the fp32 bundle samples: quantize.py), its FLOPs counted, the manifest written, and the whole
bundle validated (validate.py) inside a staging directory next to `out_dir`. Only a bundle that
passed every check is moved into place (bld_runtime.files.replacing_directory), so a failed
export leaves no partial bundle behind, and an export killed at any instant leaves the old or the
new bundle, restored by the next command that touches it.

Exporter choice (torch 2.13): the torch.export-based exporter (`dynamo=True`) gives clean
graphs: about half the nodes of the TorchScript exporter (`dynamo=False`, deprecated since
torch 2.9), which leaves Constant/Identity/Shape chains around every reshape and gather, and
the onnxscript optimizer folds the rest. It also keeps the batch axis symbolic end to end. Its
one trap: where torch.export cannot keep a declared dynamic axis it silently falls back to a
specialized graph, which validation catches (every input and output must have the "batch" axis).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime
import torch

import bld_runtime
from bld_runtime import contract
from bld_runtime.files import replacing_directory, sha256_file
from bld_runtime.manifest import (
    FORMAT,
    GRAPH_METADATA_KEY,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ClassesSpec,
    Defaults,
    GraphSpec,
    ImageSpec,
    LatentSpec,
    Manifest,
    Producer,
    ScheduleSpec,
    TensorSpec,
    load_bundle,
    write_manifest,
)

from .errors import ExportError
from .flops import format_flops, graph_flops
from .graphs import Dims, GraphDecl, Models, decl_facts, declare
from .opset import EXPORTER_OPSET, convert_18_to_17
from .quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    calibration_feeds,
    quantize_step_graph,
    share_activation_scales,
)
from .validate import validate_bundle

MIN_OPSET = 17  # LayerNormalization is one op from 17 on
MAX_OPSET = 20  # the newest TensorRT 10's ONNX parser reads


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset must be between {MIN_OPSET} and {MAX_OPSET} (LayerNormalization "
            f"needs 17, TensorRT 10 parses up to 20), got {opset}"
        )
    return opset


class Stages:
    """Per-stage progress lines with wall-clock timings."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log = log or (lambda line: None)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, label: str):
        start = time.perf_counter()
        yield
        self.timings[label] = elapsed = time.perf_counter() - start
        self.log(f"[{elapsed:7.1f}s] {label}")


def export_graph(
    decl: GraphDecl, models: Models, path: Path, opset: int, schedule: ScheduleSpec
) -> None:
    """Export one declared graph to `path` with the torch.export-based ONNX exporter; its
    metadata records the facts it was built for (graphs.decl_facts)."""
    module = decl.build(models)
    captured = io.StringIO()
    try:
        # The exporter narrates every pass, logs that it exports at opset 18 and converts down,
        # and warns about ops we never use; keep all that out of the progress output.
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            _quiet_loggers(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                decl.example_inputs(),
                None,
                input_names=decl.input_names,
                output_names=decl.output_names,
                dynamic_shapes=decl.dynamic_shapes(),
                opset_version=max(opset, EXPORTER_OPSET),
                dynamo=True,
                optimize=True,
                verbose=False,
            )
            model = program.model_proto
    except Exception as error:  # the exporter raises many types
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"{decl.name}: torch.onnx.export failed: {type(error).__name__}: {detail}"
        ) from error
    if opset < EXPORTER_OPSET:
        # Convert after the exporter's optimizer ran: it folds Pad into Conv, for one.
        convert_18_to_17(model)
    for node in model.graph.node:
        # The exporter records each node's Python stack trace and module path: they make the
        # files depend on where the code lives and several times larger, and nothing reads them.
        del node.metadata_props[:]
    model.doc_string = f"bld {decl.name} graph ({decl.precision})"
    del model.metadata_props[:]
    model.metadata_props.add(
        key=GRAPH_METADATA_KEY, value=json.dumps(decl_facts(decl, opset, schedule), sort_keys=True)
    )
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet_loggers(names=("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript")):
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def tensor_specs(decls) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name=t.name, dtype=t.dtype, shape=tuple(t.shape)) for t in decls)


def build_manifest(
    bundle_dir: Path,
    decls: tuple[GraphDecl, ...],
    ae_cfg,
    prior_cfg,
    opset: int,
    max_batch: int,
    flops: dict[str, int],
) -> Manifest:
    graphs = {
        d.name: GraphSpec(
            file=d.file,
            sha256=sha256_file(bundle_dir / d.file),
            precision=d.precision,
            opset=opset,
            inputs=tensor_specs(d.inputs),
            outputs=tensor_specs(d.outputs),
            flops=flops[d.name],
        )
        for d in decls
    }
    return Manifest(
        format=FORMAT,
        schema_version=SCHEMA_VERSION,
        image=ImageSpec(
            height=ae_cfg.image_size, width=ae_cfg.image_size, channels=ae_cfg.in_channels
        ),
        latent=LatentSpec(height=ae_cfg.latent_size, width=ae_cfg.latent_size, bits=ae_cfg.bits),
        classes=ClassesSpec(count=prior_cfg.num_classes, null_class=prior_cfg.num_classes),
        schedule=schedule_spec(prior_cfg),
        defaults=Defaults(temperature=1.0, guidance=0.0),
        max_batch=max_batch,
        graphs=graphs,
        producer=Producer(
            bld=bld_runtime.__version__,
            torch=str(torch.__version__),
            onnx=onnx.__version__,
            onnxruntime=onnxruntime.__version__,
        ),
    )


def schedule_spec(prior_cfg) -> ScheduleSpec:
    timesteps = contract.sampling_timesteps(prior_cfg.train_steps, prior_cfg.sampling_steps)
    return ScheduleSpec(
        name=prior_cfg.schedule,
        train_steps=prior_cfg.train_steps,
        sampling_steps=prior_cfg.sampling_steps,
        timesteps=tuple(int(t) for t in timesteps),
    )


def _check_output_dir(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"output path {out_dir} exists and is not a directory")
    if not any(out_dir.iterdir()):
        return
    if not force:
        raise ExportError(f"output directory {out_dir} is not empty; pass --force to replace it")
    if not (out_dir / MANIFEST_NAME).is_file():
        # --force replaces an old bundle, never an arbitrary directory someone pointed -o at.
        raise ExportError(
            f"output directory {out_dir} is not empty and holds no {MANIFEST_NAME}; "
            f"refusing to replace it even with --force"
        )


def export_bundle(
    run_dir,
    out_dir,
    fp16: bool = False,
    opset: int = MIN_OPSET,
    max_batch: int = 64,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    validation_batch: int = 4,
    int8: bool = False,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
) -> Manifest:
    """Export `run_dir` to a validated bundle at `out_dir`; returns its manifest.

    `progress` receives one line per stage (with timings) and per validation comparison.
    `force` replaces an existing bundle at `out_dir`; a non-empty non-bundle is never replaced.
    `int8` adds the int8 step graphs, calibrated on `calibration_images` sampled images per
    step graph (quantize.py).
    """
    check_opset(opset)
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ExportError(f"max batch must be a positive integer, got {max_batch}")
    if not isinstance(calibration_images, int) or calibration_images < 1:
        raise ExportError(
            f"calibration images must be a positive integer, got {calibration_images}"
        )
    out_dir = Path(out_dir)
    _check_output_dir(out_dir, force)
    stages = Stages(progress)
    with stages.stage(f"load run {run_dir}"):
        models = Models.load(run_dir)
    ae_cfg, prior_cfg = models.autoencoder.cfg, models.prior_cfg
    if (prior_cfg.latent_size, prior_cfg.bits) != (ae_cfg.latent_size, ae_cfg.bits):
        raise ExportError(
            f"the prior expects {prior_cfg.latent_size}x{prior_cfg.latent_size} "
            f"tokens of {prior_cfg.bits} bits, but the autoencoder makes "
            f"{ae_cfg.latent_size}x{ae_cfg.latent_size} of {ae_cfg.bits}"
        )
    decls = declare(Dims.from_configs(ae_cfg, prior_cfg), fp16=fp16, int8=int8)
    exported = tuple(d for d in decls if d.precision != "int8")
    quantized = tuple(d for d in decls if d.precision == "int8")

    with replacing_directory(out_dir, f"bundle {out_dir}") as tmp:
        _check_output_dir(out_dir, force)  # again, now that we hold the lock
        flops = {}
        schedule = schedule_spec(prior_cfg)

        def exported_graph(decl: GraphDecl) -> None:
            flops[decl.name] = graph_flops(str(tmp / decl.file))
            size = (tmp / decl.file).stat().st_size / 1e6
            stages.log(
                f"{'':10}{decl.file}: {size:.1f} MB, {format_flops(flops[decl.name])} per image"
            )

        for decl in exported:
            with stages.stage(f"export {decl.name} ({decl.precision}, opset {opset})"):
                export_graph(decl, models, tmp / decl.file, opset, schedule)
            exported_graph(decl)
        if quantized:
            # The fp32 bundle samples the calibration trajectories, through the runtime's loop.
            write_manifest(
                tmp, build_manifest(tmp, exported, ae_cfg, prior_cfg, opset, max_batch, flops)
            )
            from bld_runtime.pipeline import Pipeline

            fp32 = Pipeline.load(tmp)
            for decl in quantized:
                with stages.stage(
                    f"quantize {decl.name} (int8 QDQ, calibrated on {calibration_images} "
                    f"sampled images x {fp32.num_steps} steps)"
                ):
                    quantize_step_graph(
                        tmp / f"{decl.kind}.onnx",
                        tmp / decl.file,
                        decl,
                        calibration_feeds(fp32, decl.kind, calibration_images),
                        opset,
                        schedule,
                    )
                exported_graph(decl)
            del fp32
            names = {decl.kind: tmp / decl.file for decl in quantized}
            if set(names) == {"step", "step_guided"}:
                with stages.stage("share the int8 step graphs' activation scales"):
                    share_activation_scales(names["step"], names["step_guided"])
        with stages.stage("write manifest (sha256 of every graph)"):
            manifest = build_manifest(tmp, decls, ae_cfg, prior_cfg, opset, max_batch, flops)
            write_manifest(tmp, manifest)
            bundle = load_bundle(tmp)  # what the runtime will read
            bundle.verify_files()
            manifest = bundle.manifest
        with stages.stage(
            "validate (checker, shape inference, ONNX Runtime vs reference evaluator vs PyTorch)"
        ):
            validate_bundle(
                tmp,
                manifest,
                models,
                batch=validation_batch,
                log=lambda line: stages.log(f"{'':10}{line}"),
            )
    stages.log(f"bundle written to {out_dir} in {sum(stages.timings.values()):.1f}s")
    return manifest


__all__ = [
    "export_bundle",
    "export_graph",
    "build_manifest",
    "check_opset",
    "MIN_OPSET",
    "MAX_OPSET",
    "Stages",
]
