"""What a (quantized) ONNX really contains: Q/DQ and integer ops, which weighted layers are INT8."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.ort_quantizer import WEIGHTED_OPS, load_onnx
from edgekit.export.trt_qdq import INTEGER_OPS, QDQ_OPS

_WEIGHTED_INTEGER_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")


def quantization_summary(onnx_path: Path | str) -> dict[str, Any]:
    """What a (quantized) ONNX really contains.

    Returns counts of ``QuantizeLinear``, ``DequantizeLinear``, ``QLinear`` (all QLinear* ops),
    ``ConvInteger``, ``MatMulInteger`` and ``DynamicQuantizeLinear`` nodes;
    ``quantized_op_types`` / ``float_op_types`` (op type → count; a node is quantized when it
    is an integer op or takes a dequantized input); ``quantized_weighted`` / ``float_weighted``
    (names of Conv/ConvTranspose/Gemm/MatMul-like nodes whose weights are / are not 8-bit);
    ``int8_weight_bytes`` (bytes of 8-bit weight tensors).
    """
    from onnx import numpy_helper

    graph = load_onnx(onnx_path).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    counts = Counter(n.op_type for n in graph.node)

    def is_8bit(name: str) -> bool:
        return name in inits and numpy_helper.to_array(inits[name]).dtype in (np.int8, np.uint8)

    def weight_source(tensor: str) -> str | None:
        """The initializer a weight comes from, through layout ops and DequantizeLinear."""
        node = producer.get(tensor)
        while node is not None and node.op_type in ("Transpose", "Reshape", "Identity"):
            tensor, node = node.input[0], producer.get(node.input[0])
        if node is not None and node.op_type == "DequantizeLinear":
            tensor = node.input[0]
        return tensor if tensor in inits else None

    quantized_types: Counter[str] = Counter()
    float_types: Counter[str] = Counter()
    quantized_weighted: list[str] = []
    float_weighted: list[str] = []
    for node in graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "DynamicQuantizeLinear":
            continue
        integer_op = node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS
        dequantized = any(
            i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input
        )
        (quantized_types if integer_op or dequantized else float_types)[node.op_type] += 1
        if node.op_type in WEIGHTED_OPS + _WEIGHTED_INTEGER_OPS and len(node.input) > 1:
            # QLinearConv/QLinearMatMul carry (x, x_scale, x_zero_point, w, ...).
            weight = weight_source(node.input[3 if node.op_type.startswith("QLinear") else 1])
            if weight is not None:  # a MatMul of two activations has no weight
                (quantized_weighted if is_8bit(weight) else float_weighted).append(node.name)

    # Weights are at least 2-D; scales and zero points are 0-D or 1-D.
    int8_bytes = sum(
        numpy_helper.to_array(t).nbytes
        for t in graph.initializer
        if is_8bit(t.name) and len(t.dims) >= 2
    )
    return {
        "QuantizeLinear": counts["QuantizeLinear"],
        "DequantizeLinear": counts["DequantizeLinear"],
        "QLinear": sum(c for t, c in counts.items() if t.startswith("QLinear")),
        "ConvInteger": counts["ConvInteger"],
        "MatMulInteger": counts["MatMulInteger"],
        "DynamicQuantizeLinear": counts["DynamicQuantizeLinear"],
        "quantized_op_types": dict(sorted(quantized_types.items())),
        "float_op_types": dict(sorted(float_types.items())),
        "quantized_weighted": quantized_weighted,
        "float_weighted": float_weighted,
        "int8_weight_bytes": int(int8_bytes),
    }
