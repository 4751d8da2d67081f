"""The int8 step graphs (`bld-export onnx RUN -o BUNDLE --int8`): QDQ graphs made from the fp32
step graphs with onnxruntime's quantization tools, calibrated on real latents.

What is quantized, and why (measured on the digits demo, 2-core AMD EPYC with AVX512_VNNI):

- Every MatMul and Gemm that has a weight (the embeddings, the time MLP, qkv, the attention
  projection, the MLPs, the head): weights int8 per output channel, symmetric; activations
  int8, symmetric (zero point 0), one scale per tensor. Symmetric int8 activations are what a
  strongly typed TensorRT network builds from the same Q/DQ graph; onnxruntime's CPU kernels ran
  them as fast as asymmetric uint8 activations here (step graph, batch 1 / 4 / 16: 0.245 /
  0.570 / 1.56 ms int8 vs 0.243 / 0.561 / 1.54 ms uint8, fp32 0.276 / 0.620 / 1.90 ms), with
  about the same error (largest probability error over 64 test trajectories x 16 steps: 0.24
  int8, 0.20 uint8), so int8 it is.
- The attention's activation-by-activation MatMuls (Q K^T and softmax V), LayerNorm, softmax,
  GELU, the sigmoid and the posterior stay fp32: they are a small share of the FLOPs at these
  sizes, and the probability arithmetic after the logits is the sampling contract's, which int8
  must not blur. Quantizing single weight MatMuls showed the error spread evenly over all of
  them (no one layer to keep in fp32).
- Biases stay fp32: the step graphs' Gemms (the time MLP) become MatMul + Add before quantizing,
  so no bias gets the int32 DequantizeLinear that TensorRT refuses, and onnxruntime's int8
  MatMul kernels still run them (`_gemms_as_matmul_add`).
- The encoder and decoder stay fp32: they run once per request, not once per step (the
  decoder is one sixteenth of the step graph's calls), and the pixels are what the user sees.

Calibration: the activations' ranges (MinMax, the global minimum and maximum) are taken on the
step graphs' inputs along real sampling trajectories of the bundle's own fp32 graphs, recorded
by the runtime's loop (`Pipeline.generate(trace=True)`): `images` images per graph (seeds 0..,
classes cycling over every class and the null class, temperature 1; the guided graph with
guidance cycling over 0.5, 1.5 and 3), every one of the K steps. Same run, same onnxruntime,
same CPU -> same bytes: the trajectories are the runtime's bits (deterministic by contract) and
MinMax has no randomness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from bld_runtime.manifest import GRAPH_METADATA_KEY, INT8_SUFFIX, ScheduleSpec

from .errors import ExportError
from .graphs import GraphDecl, decl_facts

DEFAULT_CALIBRATION_IMAGES = 256
QUANTIZED_OPS = ("MatMul", "Gemm")
GUIDANCE_CYCLE = (0.5, 1.5, 3.0)
CALIBRATION_SEED = 0
# Images sampled per Pipeline.generate call: the trace holds K states of each. onnxruntime's
# MinMax calibrator keeps only each batch's minima and maxima (its augmented graph reduces every
# tensor), so the calibration's memory does not grow with the tensors. (Its
# CalibMaxIntermediateOutputs option is not used: in onnxruntime 1.32 it drops the collected
# batches without merging their ranges.)
_ROWS_PER_CALL = 256


def calibration_feeds(pipeline, kind: str, images: int) -> Iterator[dict[str, np.ndarray]]:
    """The inputs graph `kind` ("step" or "step_guided") sees along real trajectories.

    `pipeline` is the bundle's fp32 Pipeline; each trajectory's state before step i becomes a
    row with step = i, in batches of at most _ROWS_PER_CALL rows.
    """
    m = pipeline.manifest
    n = images
    classes = np.arange(n) % (m.classes.count + 1)  # every class and the null class
    guidance = None
    if kind == "step_guided":
        guidance = np.resize(np.array(GUIDANCE_CYCLE, np.float32), n)
        classes = np.arange(n) % max(m.classes.count, 1)  # guidance needs a class
    for lo in range(0, n, _ROWS_PER_CALL):
        hi = min(n, lo + _ROWS_PER_CALL)
        generation = pipeline.generate(
            seeds=np.arange(CALIBRATION_SEED + lo, CALIBRATION_SEED + hi, dtype=np.uint64),
            classes=classes[lo:hi],
            guidance=None if guidance is None else guidance[lo:hi],
            trace=True,
        )
        for i in range(pipeline.num_steps):
            feeds = {
                "bits": generation.trace.states[i].astype(np.float32),
                "step": np.full(hi - lo, i, np.int64),
                "class_label": np.asarray(generation.classes, np.int64),
                "temperature": np.ones(hi - lo, np.float32),
            }
            if guidance is not None:
                feeds["guidance"] = guidance[lo:hi]
            yield feeds


def quantize_step_graph(
    source: Path,
    target: Path,
    decl: GraphDecl,
    feeds: Iterator[dict[str, np.ndarray]],
    opset: int,
    schedule: ScheduleSpec,
) -> None:
    """Write the int8 QDQ graph of fp32 step graph `source` to `target`, calibrated on `feeds`;
    its metadata records the facts of `decl` (an *_int8 declaration)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not decl.name.endswith(INT8_SUFFIX) or decl.kind not in ("step", "step_guided"):
        raise ExportError(f"{decl.name}: only the step graphs have int8 versions")
    model = _gemms_as_matmul_add(onnx.load(str(source)), decl.name)
    weights = {t.name for t in model.graph.initializer}
    nodes = [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTIZED_OPS and any(name in weights for name in n.input)
    ]
    if not nodes:
        raise ExportError(f"{decl.name}: {source.name} has no MatMul or Gemm with weights")

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    root = logging.getLogger()
    level = root.level
    # onnxruntime.quantization logs a warning on the root logger asking for its shape-inference
    # pre-processing, which these graphs (shapes inferred at export) do not need.
    root.setLevel(logging.ERROR)
    unfused = target.with_name(target.name + ".matmul-add.onnx")
    onnx.save(model, str(unfused))
    try:
        quantize_static(
            str(unfused),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
            },
        )
    except Exception as error:  # onnxruntime.quantization raises many types
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"{decl.name}: onnxruntime quantization failed: {type(error).__name__}: {detail}"
        ) from error
    finally:
        root.setLevel(level)
        unfused.unlink(missing_ok=True)
    quantized = onnx.load(str(target))
    # Keep the bundle's opset and domain as the fp32 graph has them: QDQ needs nothing else.
    del quantized.opset_import[:]
    quantized.opset_import.extend(model.opset_import)
    quantized.doc_string = f"bld {decl.name} graph ({decl.precision})"
    del quantized.metadata_props[:]
    quantized.metadata_props.add(
        key=GRAPH_METADATA_KEY, value=json.dumps(decl_facts(decl, opset, schedule), sort_keys=True)
    )
    onnx.save(quantized, str(target))


def share_activation_scales(unguided: Path, guided: Path) -> None:
    """Give the int8 step graphs the same activation scales, for each quantized tensor the
    larger of the two calibrations' (both graphs rewritten in place).

    The guided graph runs the denoiser on the conditional and the unconditional rows and mixes
    them with the guidance; at guidance 0 its probabilities are the conditional ones. In fp32
    they are the unguided graph's bit for bit, so a row's bits do not depend on whether its batch
    holds guided rows (the runtime runs the guided graph for a whole batch when any row has
    guidance > 0). Calibrated apart, the int8 graphs quantized the same tensors with different
    scales and broke that: a guidance-0 request served in a batch with guided ones got other bits
    than alone. With shared scales every quantized operation of a conditional row is the same in
    both graphs. The two graphs quantize the same tensors in the same order (the same denoiser;
    checked here by the operators that consume them)."""
    from onnx import numpy_helper

    models = [onnx.load(str(unguided)), onnx.load(str(guided))]
    quantized = [_activation_quantizers(m) for m in models]
    if [op for _, op in quantized[0]] != [op for _, op in quantized[1]]:
        raise ExportError(
            f"{guided.name} and {unguided.name} do not quantize the same tensors in the same "
            "order: their activation scales cannot be shared"
        )
    initializers = [{t.name: t for t in m.graph.initializer} for m in models]
    for (name_a, _), (name_b, _) in zip(quantized[0], quantized[1], strict=True):
        scale = np.maximum(
            numpy_helper.to_array(initializers[0][name_a]),
            numpy_helper.to_array(initializers[1][name_b]),
        )
        for inits, name in ((initializers[0], name_a), (initializers[1], name_b)):
            inits[name].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), name))
    for model, path in zip(models, (unguided, guided), strict=True):
        onnx.save(model, str(path))


def _activation_quantizers(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(scale initializer, the operators its quantized tensor feeds through its
    DequantizeLinear) of every QuantizeLinear, in graph order: the activations (QDQ graphs store
    weights already quantized, behind a DequantizeLinear only)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            fed = sorted(
                user.op_type
                for dq in consumers.get(node.output[0], [])
                for user in consumers.get(dq.output[0], [])
            )
            out.append((node.input[1], ",".join(fed)))
    return out


def _gemms_as_matmul_add(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Every Gemm with a weight as MatMul + Add, in place: quantize_static would give a Gemm's
    bias an int32 DequantizeLinear, which TensorRT refuses ("input has type Int32 but must
    have type FP8, FP4, Int4, Int8, or UInt8", TensorRT-RTX 1.7), and which a Gemm with an fp32
    bias avoids only by losing onnxruntime's int8 kernel (the digits step graph ran as slowly as
    fp32, 0.38 ms against 0.25 at batch 1). A MatMul has no bias: onnxruntime still runs it in
    int8 and adds the fp32 bias after, and TensorRT builds it (the time MLP's two Linear layers
    are the only Gemms of the step graphs)."""
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in weights:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA"):
            raise ExportError(
                f"{name}: Gemm {node.name} is not a Linear layer (alpha, beta, transA)"
            )
        weight = numpy_helper.to_array(weights[node.input[1]])
        matmul_weight = f"{node.input[1]}_for_matmul"
        model.graph.initializer.append(
            numpy_helper.from_array(
                weight.T.copy() if attrs.get("transB") else weight, matmul_weight
            )
        )
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], matmul_weight], [product], name=node.name)
        )
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"
                )
            )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "QUANTIZED_OPS",
    "calibration_feeds",
    "quantize_step_graph",
    "share_activation_scales",
]
