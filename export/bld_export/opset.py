"""Down-conversion of exported graphs from opset 18 to 17.

torch's exporter implements its ops at opset 18 and converts down with onnx's version
converter, which has no 18 -> 17 adapter for Pad or Split and fails on every graph we make.
Only five ops changed between 17 and 18, and the forms our graphs use mean the same at both
versions, so the conversion is a rewrite of those nodes' attributes and inputs. Anything we
cannot convert exactly is refused; validation then checks the converted graph numerically.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from .errors import ExportError

EXPORTER_OPSET = 18  # the opset torch 2.13's exporter implements natively


def convert_18_to_17(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite an opset-18 model as opset 17, in place; returns it."""
    if model.functions:
        raise ExportError("cannot convert a graph with local functions to opset 17")
    constants = {init.name: init for init in model.graph.initializer}
    constants.update(
        {
            n.output[0]: n.attribute[0].t
            for n in model.graph.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        }
    )
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        convert = _CONVERTERS.get(node.op_type)
        if convert is not None:
            convert(node, constants)
        elif onnx.defs.get_schema(node.op_type, EXPORTER_OPSET).since_version == EXPORTER_OPSET:
            raise _refuse(node, "it has no opset-17 form")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 17
    return model


def _refuse(node: onnx.NodeProto, why: str) -> ExportError:
    return ExportError(
        f"cannot convert {node.op_type} node {node.name!r} to opset 17: {why}; "
        f"export with --opset {EXPORTER_OPSET} or later"
    )


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _drop_attr(node: onnx.NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def _split(node, constants) -> None:
    # 18 says how many equal parts in `num_outputs`; 13..17 infers it from the output count.
    num_outputs = _attr(node, "num_outputs")
    if num_outputs is not None and num_outputs != len(node.output):
        raise _refuse(node, f"num_outputs={num_outputs} but it has {len(node.output)} outputs")
    _drop_attr(node, "num_outputs")


def _pad(node, constants) -> None:
    # 18 added the optional `axes` input; without it Pad means the same as in 13.
    if len(node.input) > 3 and node.input[3]:
        raise _refuse(node, "it pads selected axes")


def _resize(node, constants) -> None:
    # 18 added antialias, axes and keep_aspect_ratio_policy; at their defaults nothing changed.
    if _attr(node, "antialias") not in (None, 0) or _attr(node, "axes") is not None:
        raise _refuse(node, "it uses antialias or axes")
    if _attr(node, "keep_aspect_ratio_policy") not in (None, b"stretch"):
        raise _refuse(node, "it keeps the aspect ratio")
    for name in ("antialias", "keep_aspect_ratio_policy"):
        _drop_attr(node, name)


def _reduce_mean(node, constants) -> None:
    # 18 takes `axes` as an input; 13..17 as an attribute.
    if _attr(node, "noop_with_empty_axes"):
        raise _refuse(node, "it uses noop_with_empty_axes")
    _drop_attr(node, "noop_with_empty_axes")
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            raise _refuse(node, "its axes are computed at run time")
        axes = numpy_helper.to_array(constants[node.input[1]]).tolist()
        del node.input[1:]
        node.attribute.append(onnx.helper.make_attribute("axes", axes))


_CONVERTERS = {"Split": _split, "Pad": _pad, "Resize": _resize, "ReduceMean": _reduce_mean}
