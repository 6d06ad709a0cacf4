"""Q/DQ graph utilities: store quantized weights as INT8 initializers.

A fake-quantized model exports as ``float weight → QuantizeLinear → DequantizeLinear``: the file
still holds fp32 weights, so it is as large as the fp32 model. Folding each weight's
``QuantizeLinear`` into an INT8 initializer keeps exactly the same arithmetic (the runtime would
quantize the same constant the same way) and makes the file about 4× smaller.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def quantize_constant(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear on a constant: round half to even, saturate to the zero point's type."""
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    info = np.iinfo(zero_point.dtype)
    q = np.rint(x.astype(np.float64) / scale.astype(np.float64)) + zero_point.astype(np.int64)
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def fold_weight_quantizers(model: Any) -> int:
    """Replace every ``QuantizeLinear`` whose inputs are all constants by an INT8 initializer.
    Returns how many were folded; unused float weights and constants are dropped."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = _constants(graph)
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or not all(i in consts for i in node.input):
            continue
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        x, scale, zp = (consts[i] for i in node.input[:3])
        q = quantize_constant(x, scale, zp, axis if axis >= 0 else axis + x.ndim)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    return len(folded)
