"""FLOPs of one graph call per image, read off the ONNX graph itself.

MatMul, Gemm and Conv dominate every graph we export, so we count those: 2 FLOPs per
multiply-accumulate. Shapes come from ONNX shape inference with the batch axis fixed to 1, so
the count is per image and includes everything the graph does for that image (the guided
step runs the denoiser twice, and its count says so). Elementwise ops, norms and softmax are
left out; they are a few percent at most.
"""

from __future__ import annotations

import math

import onnx

from .errors import ExportError

COUNTED_OPS = ("MatMul", "Gemm", "Conv")


def graph_flops(model: onnx.ModelProto | str) -> int:
    """FLOPs of one call of `model` (a ModelProto or a path) for a batch of 1."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model)
    shapes = _shapes_at_batch_one(model)
    total = 0
    for node in model.graph.node:
        if node.op_type in COUNTED_OPS:
            total += _node_flops(node, shapes)
    return total


def _shapes_at_batch_one(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shape of every tensor, from shape inference with every symbolic input dim = 1."""
    graph = model.graph
    # Weights only matter through their shapes: pass big ones as typed inputs, so shape
    # inference never copies hundreds of MB. Small ones (reshape targets) keep their values.
    small = [t for t in graph.initializer if math.prod(t.dims) <= 1024]
    weights = [
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if math.prod(t.dims) > 1024
    ]
    inputs = []
    for value in list(graph.input) + list(graph.output):
        fixed = onnx.ValueInfoProto()
        fixed.CopyFrom(value)
        for dim in fixed.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
        inputs.append(fixed)
    n_in = len(graph.input)
    light = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.node, graph.name, inputs[:n_in] + weights, inputs[n_in:], initializer=small
        ),
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
    )
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for value in list(g.input) + list(g.output) + list(g.value_info):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for init in small:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _shape(shapes: dict, name: str, node: onnx.NodeProto) -> tuple[int, ...]:
    if name not in shapes:
        raise ExportError(
            f"cannot count FLOPs: the shape of {name!r} (input or output of "
            f"{node.op_type} node {node.name!r}) is unknown after shape inference"
        )
    return shapes[name]


def _node_flops(node: onnx.NodeProto, shapes: dict) -> int:
    out = _shape(shapes, node.output[0], node)
    if node.op_type == "MatMul":
        a = _shape(shapes, node.input[0], node)
        return 2 * math.prod(out) * a[-1]  # every output element is a length-K dot product
    if node.op_type == "Gemm":
        a = _shape(shapes, node.input[0], node)
        trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
        return 2 * math.prod(out) * (a[0] if trans_a else a[1])
    w = _shape(shapes, node.input[1], node)  # Conv: (M, C / group, k_h, k_w)
    return 2 * math.prod(out) * math.prod(w[1:])


def format_flops(flops: int) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops} FLOP"


__all__ = ["graph_flops", "format_flops", "COUNTED_OPS"]
