"""The rules a Q/DQ ONNX must follow for TensorRT to build it as an explicit-quantization
(INT8) model. A property of the graph, checked anywhere: no GPU and no TensorRT needed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from edgekit.errors import BadInputError
from edgekit.export.qdq import _constants

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM")


def check_trt_qdq(onnx_path: str | Path) -> list[str]:
    """Problems that stop TensorRT from using a Q/DQ ONNX as an INT8 model; ``[]`` when none.

    TensorRT supports symmetric quantization only: every QuantizeLinear/DequantizeLinear needs
    constant positive scales and an int8 zero point of 0; quantized (int32) biases are not
    accepted; per-channel scales need opset 13 or later; operator-oriented (QLinear*) and integer
    ops (ConvInteger, MatMulInteger, DynamicQuantizeLinear) are not supported. A model without
    any Q/DQ node is not an explicit-quantization model at all.
    """
    import onnx

    p = Path(onnx_path)
    if not p.is_file():
        raise BadInputError(f"ONNX file {p} does not exist; check the path")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise BadInputError(f"{p} is not a readable ONNX file ({exc})") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    consts = _constants(model.graph)
    issues: dict[str, list[str]] = defaultdict(list)
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    if not qdq:
        return [
            f"{p.name} has no QuantizeLinear/DequantizeLinear nodes: "
            "it is not an explicit-quantization model"
        ]
    for node in qdq:
        label = node.name or node.output[0]
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            issues["scale is not a constant (TensorRT needs build-time scales)"].append(label)
        else:
            if np.any(scale <= 0):
                issues["scale is not positive"].append(label)
            if scale.size > 1 and opset < 13:
                issues[f"per-channel scales need opset >= 13 (model has {opset})"].append(label)
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zp_name is not None:
            zp = consts.get(zp_name)
            if zp is None:
                issues["zero point is not a constant"].append(label)
            elif zp.dtype == np.int32:
                issues[
                    "int32 zero point: a quantized bias, which TensorRT does not take; "
                    "keep biases in float (ONNX Runtime: extra_options={'QuantizeBias': False})"
                ].append(label)
            elif zp.dtype != np.int8:
                issues[
                    f"{zp.dtype} zero point: asymmetric {zp.dtype} quantization; "
                    "TensorRT needs int8 with zero point 0 (ONNX Runtime: activation_type=QInt8, "
                    "extra_options={'ActivationSymmetric': True})"
                ].append(label)
            elif np.any(zp != 0):
                issues[
                    "int8 zero point is not 0 (asymmetric); TensorRT needs symmetric quantization "
                    "(ONNX Runtime: extra_options="
                    "{'ActivationSymmetric': True, 'WeightSymmetric': True})"
                ].append(label)
        elif node.op_type == "QuantizeLinear":
            out_type = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            if out_type != onnx.TensorProto.INT8:
                issues[
                    "QuantizeLinear without a zero point quantizes to uint8; "
                    "TensorRT needs an int8 zero point of 0"
                ].append(label)
        if node.op_type == "DequantizeLinear":
            data = consts.get(node.input[0])
            if data is not None and data.dtype != np.int8 and zp_name is None:
                issues[f"dequantizes constant {data.dtype} data; TensorRT needs int8"].append(label)
    for node in model.graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS:
            issues["operator-oriented or integer op, which TensorRT does not support"].append(
                f"{node.name or node.output[0]} ({node.op_type})"
            )
    problems = []
    for message, labels in issues.items():
        shown = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
        problems.append(f"{message}: {shown}")
    return problems
