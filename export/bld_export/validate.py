"""Validation of exported graphs: always on, and any failure fails the export.

Static checks, per graph: the ONNX checker (full_check) and strict, type-checking shape
inference; inputs and outputs exactly as declared in graphs.py with a dynamic batch axis; the
declared opset; only ops in TENSORRT_OPS (plain ops that TensorRT's ONNX parser accepts, so
attention is MatMul + Softmax, never a fused op); every MatMul/Gemm/Conv in the declared
precision (an fp16 graph really runs its body in fp16).

Numeric checks, per graph: the same inputs go through ONNX Runtime (CPU), the ONNX reference
evaluator (onnx.reference, an independent numpy implementation of the ONNX spec) and, when the
run's torch models are at hand, the PyTorch module that was exported. Inputs are random and
"real": digits images (for 1-channel models) or random images, encoded by the bundle's encoder
and, for the step graphs, noised to each row's timestep with the forward process. Rows cover the
first, middle and last step, real and null classes, temperatures other than 1 and guidance 0
and 1.5. The reference evaluator is slow on big graphs, so it sees the first rows only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_conv import Conv as _ReferenceConv
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_19 as _ReferenceDequantize
from onnx.reference.ops.op_matmul import MatMul as _ReferenceMatMul
from onnx.reference.ops.op_quantize_linear import QuantizeLinear_19 as _ReferenceQuantize

from .errors import ValidationError
from .graphs import BATCH, Dims, GraphDecl, Models, declare, noised_bits

# ONNX ops our graphs may contain: all are supported by TensorRT 10's ONNX parser (see
# onnx-tensorrt docs/operators.md; Gelu is opset 20's, which the exporter emits at --opset 20)
# and by ONNX Runtime's CPU provider. Anything else, in particular fused attention or
# contrib-domain ops, fails the export.
TENSORRT_OPS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Neg",
        "Abs",
        "Exp",
        "Log",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Relu",
        "Gelu",
        "Sin",
        "Cos",
        "Min",
        "Max",
        "Clip",
        "Where",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "MatMul",
        "Gemm",
        "Conv",
        "Softmax",
        "ReduceMean",
        "ReduceSum",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherND",
        "GatherElements",
        "Expand",
        "Tile",
        "Pad",
        "Resize",
        "Shape",
        "Cast",
        "Constant",
        "ConstantOfShape",
        "Identity",
        "Range",
    }
)
# What the int8 graphs add (QDQ; TensorRT builds them strongly typed as int8 layers).
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

# int8 (the step graphs only, quantize.py) is held to the fp32 model by its largest and its mean
# error: the rounding reaches every logit, and a probability moves most where its logit is near 0.
# Measured on the digits demo (int8 vs the fp32 model, max abs / mean abs): real inputs 0.018 /
# 1.0e-3 (step), 0.061 / 2.8e-3 (guided step); random inputs, which leave the calibrated ranges
# (random bits at the last steps), 0.14 / 8.6e-3; the tiny test model 1.8e-3 / 1.8e-4. Export bugs,
# made by hand in the same graph: every weight scale x2: 1.0 / 0.08-0.12; every activation
# scale / 8 (a calibration that clips): 0.95 / 0.06-0.09; every weight scale x 1.1: 0.53-0.65 /
# 6e-3-2.4e-2; one activation scale / 8: 0.66 / 1.2e-2 (random inputs). ONNX Runtime's integer
# kernels and the reference evaluator's float QDQ agree to 1.2e-7: the tolerance is for the
# quantization itself.
INT8_MAX_TOLERANCE = 0.3
INT8_MEAN_TOLERANCE = 2e-2

# Largest allowed |a - b| between two backends, by precision and output. Probabilities are
# the step and encoder outputs; images are the decoder's, in [-1, 1], where 0.0078 is one uint8
# level. Measured on paper256 with random weights (max over the validation inputs): fp32
# decoder 5e-5, fp32 probabilities 6e-7; fp16 decoder 1.9e-2 (reference evaluator, which
# rounds every op to fp16, vs the fp32 model), fp16 probabilities 7e-4. An export bug (a wrong
# op, a lost cast) shows up as errors of order 0.1 to 1.
TOLERANCES = {
    "fp32": {"probs": 1e-5, "image": 2e-4},
    "fp16": {"probs": 1e-2, "image": 5e-2},
    "int8": {"probs": INT8_MAX_TOLERANCE},
}

ONNX_DTYPES = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "int64": onnx.TensorProto.INT64,
}
COMPUTE_OPS = ("MatMul", "Gemm", "Conv")
PRECISION_TYPES = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}


@dataclass(frozen=True)
class Comparison:
    graph: str
    output: str
    backends: tuple[str, str]
    inputs: str  # "random" or "real", with the batch size
    max_abs: float
    max_rel: float  # max of |a - b| / (|b| + tolerance): bounded near zero
    tolerance: float
    mean_abs: float = 0.0
    mean_tolerance: float | None = None  # int8: the mean |a - b| is bounded too

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance and (
            self.mean_tolerance is None or self.mean_abs <= self.mean_tolerance
        )

    def line(self) -> str:
        a, b = self.backends
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{self.graph:<17} {self.output:<6} {a + ' vs ' + b:<26} {self.inputs:<10} "
            f"max abs {self.max_abs:.2e}  max rel {self.max_rel:.2e}  "
            f"(tol {self.tolerance:.0e})  "
            + (
                f"mean abs {self.mean_abs:.2e} (tol {self.mean_tolerance:.0e})  "
                if self.mean_tolerance is not None
                else ""
            )
            + verdict
        )


# --- static checks ---------------------------------------------------------------------------


def check_graph(path: Path, decl: GraphDecl, opset: int) -> onnx.ModelProto:
    """Checker, strict shape inference, declared I/O, opset, op allow-list and precision."""
    name = decl.name
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValidationError(
            f"{name}: the ONNX checker rejects {path.name}: {_first_line(error)}"
        ) from None
    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise ValidationError(
            f"{name}: shape inference fails on {path.name}: {_first_line(error)}"
        ) from None
    _check_io(name, "input", list(model.graph.input), decl.inputs)
    _check_io(name, "output", list(model.graph.output), decl.outputs)
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", versions.get("ai.onnx")) != opset:
        raise ValidationError(f"{name}: the graph has opset {versions}, expected {opset}")
    allowed = TENSORRT_OPS | QDQ_OPS if decl.precision == "int8" else TENSORRT_OPS
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in allowed:
            op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            raise ValidationError(
                f"{name}: op {op} (node {node.name!r}) is not on the list of "
                f"ops TensorRT's ONNX parser accepts"
            )
    _check_precision(name, inferred, decl.precision)
    return model


def _check_io(graph: str, kind: str, values: list, declared) -> None:
    names = [v.name for v in values]
    if names != [t.name for t in declared]:
        raise ValidationError(
            f"{graph}: {kind}s are {names}, expected {[t.name for t in declared]}"
        )
    for value, spec in zip(values, declared, strict=True):
        tensor = value.type.tensor_type
        if tensor.elem_type != ONNX_DTYPES[spec.dtype]:
            got = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            raise ValidationError(
                f"{graph}: {kind} {spec.name!r} has dtype {got}, expected {spec.dtype}"
            )
        shape = tuple(d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim)
        if shape != tuple(spec.shape):
            raise ValidationError(
                f"{graph}: {kind} {spec.name!r} has shape {list(shape)}, "
                f"expected {list(spec.shape)} (axis 0 must be the dynamic "
                f"{BATCH!r} axis)"
            )


def _check_precision(graph: str, inferred: onnx.ModelProto, precision: str) -> None:
    if precision == "int8":
        _check_int8(graph, inferred)
        return
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    expected = PRECISION_TYPES[precision]
    for node in inferred.graph.node:
        if node.op_type in COMPUTE_OPS:
            got = types.get(node.input[0])
            if got != expected:
                shown = onnx.helper.tensor_dtype_to_np_dtype(got) if got else "unknown"
                raise ValidationError(
                    f"{graph}: {node.op_type} node {node.name!r} computes in "
                    f"{shown}, but the graph is declared {precision}"
                )


def _check_int8(graph: str, model: onnx.ModelProto) -> None:
    """An int8 graph: no MatMul/Gemm reads a float weight, and every one that reads a weight
    (int8, through DequantizeLinear) reads its activation dequantized from int8 too; at least
    one does. The activation-by-activation MatMuls of attention stay fp32 (quantize.py)."""
    weights = {t.name: t.data_type for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def dequantized_from(name: str) -> tuple[int | None, bool]:
        """(the type DequantizeLinear reads to make `name`, whether that is a weight)."""
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None, False
        if dq.input[0] in weights:
            return weights[dq.input[0]], True
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3:
            return None, False
        return weights.get(q.input[2]), False  # the zero point's type is the quantized type

    quantized = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        inputs = list(node.input[:2])
        if any(i in weights for i in inputs):
            raise ValidationError(
                f"{graph}: {node.op_type} node {node.name!r} reads a float weight, but the graph "
                f"is declared int8"
            )
        sources = [dequantized_from(i) for i in inputs]
        if not any(is_weight for _, is_weight in sources):
            continue  # activation x activation (attention): fp32
        for i, (dtype, _) in zip(inputs, sources, strict=True):
            if dtype != onnx.TensorProto.INT8:
                raise ValidationError(
                    f"{graph}: {node.op_type} node {node.name!r} reads {i!r}, which is not "
                    f"dequantized from int8, but the graph is declared int8"
                )
        quantized += 1
    if quantized == 0:
        raise ValidationError(f"{graph}: no MatMul or Gemm computes in int8")


def op_types(model: onnx.ModelProto) -> set[str]:
    return {
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        for n in model.graph.node
    }


# --- backends --------------------------------------------------------------------------------


def onnxruntime_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_torch(module, decl: GraphDecl, feeds: dict) -> dict:
    import torch

    with torch.no_grad():
        out = module(*(torch.from_numpy(feeds[name]) for name in decl.input_names))
    outs = out if isinstance(out, tuple) else (out,)
    return {name: o.numpy() for name, o in zip(decl.output_names, outs, strict=True)}


def _fp32_accumulating(base):
    """The reference op `base`, computing fp16 inputs in fp32 and rounding the result once.

    numpy has no fp16 BLAS, so its fp16 matmul is too slow for big graphs; fp32 accumulation
    with one rounding is also what fp16 GPU kernels do. fp32 inputs run unchanged.
    """

    def _run(self, *args, **kwargs):
        if args[0].dtype != np.float16:
            return base._run(self, *args, **kwargs)
        wide = [a.astype(np.float32) if a is not None else None for a in args]
        return tuple(out.astype(np.float16) for out in base._run(self, *wide, **kwargs))

    return type(base.__name__, (base,), {"op_domain": "", "_run": _run})


def _any_opset(base):
    """The reference op `base` for whatever opset the graph imports. The reference evaluator
    implements QuantizeLinear and DequantizeLinear from opset 19 on; for int8 tensors with a
    scale and zero point the int8 graphs use, opsets 13 to 18 define the same computation
    (19 added float8 types and saturation, 21 blocked quantization)."""
    name, version = base.__name__.rsplit("_", 1)
    schema = onnx.defs.get_schema(name, int(version))  # its attributes, not the newest's
    return type(name, (base,), {"op_domain": "", "op_schema": schema})


REFERENCE_OPS = [
    _fp32_accumulating(_ReferenceMatMul),
    _fp32_accumulating(_ReferenceConv),
    _any_opset(_ReferenceQuantize),
    _any_opset(_ReferenceDequantize),
]


def reference_evaluator(path: Path) -> ReferenceEvaluator:
    return ReferenceEvaluator(str(path), new_ops=REFERENCE_OPS)


# --- inputs ----------------------------------------------------------------------------------


def real_images(dims: Dims, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 NCHW in [-1, 1], labels): digits for 1-channel models, else random."""
    if dims.channels == 1 and dims.height == dims.width:
        from bld_train.data import digits_dataset

        images, labels = digits_dataset(dims.height, split="holdout")
        pick = rng.choice(len(images), count, replace=count > len(images))
        return images.numpy()[pick], labels.numpy()[pick] % max(dims.classes, 1)
    images = rng.uniform(-1.0, 1.0, (count, dims.channels, dims.height, dims.width))
    return images.astype(np.float32), rng.integers(0, max(dims.classes, 1), count)


class InputMaker:
    """Random and real inputs for every graph of a bundle; real bits come from its encoder."""

    def __init__(
        self, bundle_dir: Path, manifest, decls: dict[str, GraphDecl], batch: int, seed: int = 0
    ):
        self.manifest, self.decls, self.batch, self.seed = manifest, decls, batch, seed
        self.dims = decls["encoder"].dims
        rng = np.random.default_rng(seed)
        self.images, self.labels = real_images(self.dims, batch, rng)
        encoder = onnxruntime_session(bundle_dir / manifest.graphs["encoder"].file)
        probs = encoder.run(None, {"image": self.images})[0]
        self.clean_bits = (probs > 0.5).astype(np.float32)

    def random(self, decl: GraphDecl) -> dict:
        return decl.random_inputs(self.batch, np.random.default_rng(self.seed + 1))

    def real(self, decl: GraphDecl) -> dict:
        if decl.kind == "encoder":
            return {"image": self.images}
        if decl.kind == "decoder":
            return {"bits": self.clean_bits}
        rng = np.random.default_rng(self.seed + 2)
        # Offset the condition cycle, so the reference evaluator's first 2 rows of the real
        # set cover the conditions its first 2 rows of the random set do not.
        feeds = decl.step_conditions(self.batch, rng, first_row=2)
        if self.dims.classes:
            conditional = feeds["class_label"] != self.dims.classes
            feeds["class_label"] = np.where(conditional, self.labels, feeds["class_label"])
        schedule = self.manifest.schedule
        bits = noised_bits(
            self.clean_bits,
            feeds["step"],
            schedule.name,
            schedule.train_steps,
            schedule.timesteps,
            rng,
        )
        return {"bits": bits, **feeds}


# --- the numeric comparison ------------------------------------------------------------------


def compare(
    graph: str,
    output: str,
    backends: tuple[str, str],
    inputs: str,
    a: np.ndarray,
    b: np.ndarray,
    tolerance: float,
    mean_tolerance: float | None = None,
) -> Comparison:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValidationError(
            f"{graph}: output {output!r} has shape {a.shape} in {backends[0]} "
            f"but {b.shape} in {backends[1]}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        bad = backends[0] if not np.isfinite(a).all() else backends[1]
        raise ValidationError(
            f"{graph}: output {output!r} has NaN or inf values in {bad} ({inputs} inputs)"
        )
    diff = np.abs(a - b)
    return Comparison(
        graph,
        output,
        backends,
        inputs,
        float(diff.max(initial=0.0)),
        float((diff / (np.abs(b) + tolerance)).max(initial=0.0)),
        tolerance,
        float(diff.mean()) if diff.size else 0.0,
        mean_tolerance,
    )


def validate_graph(
    path: Path,
    decl: GraphDecl,
    inputs: InputMaker,
    module=None,
    reference_batch: int = 2,
    log: Callable[[str], None] | None = None,
    torch_label: str = "torch",
) -> list[Comparison]:
    """Run one graph on random and real inputs in every backend at hand; compare all pairs."""
    session = onnxruntime_session(path)
    reference = reference_evaluator(path) if reference_batch > 0 else None
    results = []
    for kind in ("random", "real"):
        feeds = inputs.random(decl) if kind == "random" else inputs.real(decl)
        batch = len(feeds[decl.input_names[0]])
        outputs = {
            "onnxruntime": dict(zip(decl.output_names, session.run(None, feeds), strict=True))
        }
        if module is not None:
            outputs[torch_label] = _run_torch(module, decl, feeds)
        pairs = [("onnxruntime", torch_label, batch)] if module is not None else []
        if reference is not None:
            n = min(reference_batch, batch)
            small = {k: v[:n] for k, v in feeds.items()}
            outputs["reference"] = dict(
                zip(decl.output_names, reference.run(None, small), strict=True)
            )
            pairs += [("reference", "onnxruntime", n)]
            if module is not None:
                pairs += [("reference", torch_label, n)]
        for a, b, n in pairs:
            for output in decl.output_names:
                tolerance = TOLERANCES[decl.precision][output]
                result = compare(
                    decl.name,
                    output,
                    (a, b),
                    f"{kind} b={n}",
                    outputs[a][output][:n],
                    outputs[b][output][:n],
                    tolerance,
                    INT8_MEAN_TOLERANCE if decl.precision == "int8" else None,
                )
                if log:
                    log(result.line())
                if not result.ok:
                    raise ValidationError(
                        f"{decl.name}: output {output!r} differs between {a} and {b} on {kind} "
                        f"inputs: max abs error {result.max_abs:.3g}, max rel error "
                        f"{result.max_rel:.3g}, mean abs error {result.mean_abs:.3g} (tolerance "
                        f"{tolerance:g} abs"
                        + (
                            f", {result.mean_tolerance:g} mean abs"
                            if result.mean_tolerance is not None
                            else ""
                        )
                        + f", {decl.precision})"
                    )
                results.append(result)
    return results


def declarations_for(manifest) -> dict[str, GraphDecl]:
    """The graphs.py declarations a manifest must match (with or without the fp16 and int8
    sets)."""
    fp16 = any(spec.precision == "fp16" for spec in manifest.graphs.values())
    int8 = any(spec.precision == "int8" for spec in manifest.graphs.values())
    decls = {d.name: d for d in declare(Dims.from_manifest(manifest), fp16=fp16, int8=int8)}
    if set(decls) != set(manifest.graphs):
        raise ValidationError(
            f"the bundle has graphs {sorted(manifest.graphs)}, expected {sorted(decls)}"
        )
    for name, decl in decls.items():
        spec = manifest.graphs[name]
        declared = (
            decl.precision,
            [(t.name, t.dtype, tuple(t.shape)) for t in decl.inputs],
            [(t.name, t.dtype, tuple(t.shape)) for t in decl.outputs],
        )
        listed = (
            spec.precision,
            [(t.name, t.dtype, tuple(t.shape)) for t in spec.inputs],
            [(t.name, t.dtype, tuple(t.shape)) for t in spec.outputs],
        )
        if declared != listed:
            raise ValidationError(
                f"graphs.{name}: the manifest's precision and I/O {listed} "
                f"differ from the declaration {declared}"
            )
    return decls


def validate_bundle(
    bundle_dir,
    manifest,
    models: Models | None = None,
    batch: int = 4,
    reference_batch: int = 2,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[Comparison]:
    """Every check on every graph of a bundle; raises ValidationError on the first failure.

    With `models` (the run's torch models) the graphs are also compared with PyTorch; without
    them ONNX Runtime is compared with the reference evaluator only.
    """
    bundle_dir = Path(bundle_dir)
    decls = declarations_for(manifest)
    for name, decl in decls.items():
        check_graph(bundle_dir / manifest.graphs[name].file, decl, manifest.graphs[name].opset)
    if log:
        log(
            f"static checks passed for {len(decls)} graphs (checker, shape inference, I/O, "
            f"opset, op allow-list, precision)"
        )
    inputs = InputMaker(bundle_dir, manifest, decls, batch, seed)
    results = []
    for name, decl in decls.items():
        start = time.perf_counter()
        module, label = None, "torch"
        if models is not None and decl.precision == "fp16":
            # PyTorch's fp16 kernels on CPU are far slower than its fp32 ones, so fp16 graphs
            # are held to the fp32 model, within the fp16 tolerance: that bounds export errors
            # and fp16 rounding together.
            module, label = decls[name.removesuffix("_fp16")].build(models), "torch-fp32"
        elif models is not None and decl.precision == "int8":
            # int8 graphs are quantized from the fp32 ones: held to the fp32 model, within the
            # int8 tolerances (max and mean), which bounds quantization and export errors.
            module, label = decl.build(models), "torch-fp32"
        elif models is not None:
            module = decl.build(models)
        results += validate_graph(
            bundle_dir / manifest.graphs[name].file,
            decl,
            inputs,
            module,
            reference_batch,
            log,
            torch_label=label,
        )
        if log:
            log(f"{name}: validated in {time.perf_counter() - start:.1f}s")
    return results


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = [
    "TENSORRT_OPS",
    "TOLERANCES",
    "Comparison",
    "check_graph",
    "op_types",
    "compare",
    "validate_graph",
    "validate_bundle",
    "declarations_for",
    "InputMaker",
    "real_images",
    "onnxruntime_session",
]
