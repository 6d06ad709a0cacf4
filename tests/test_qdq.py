from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.export.qdq import fold_weight_quantizers, quantize_constant


def _qdq_matmul() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["wq"], axis=1),
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wd"], axis=1),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(scale, "s"),
            numpy_helper.from_array(np.zeros(4, np.int8), "zp"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_folding_keeps_outputs_and_stores_int8() -> None:
    model = _qdq_matmul()
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    before = _run(model, x)
    assert fold_weight_quantizers(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul"]
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types["wq"] == TensorProto.INT8 and "w" not in types
    np.testing.assert_array_equal(_run(model, x), before)


def test_quantize_constant_rounds_half_to_even_and_saturates() -> None:
    q = quantize_constant(np.array([0.5, 1.5, 2.5, 1000.0, -1000.0]), np.array(1.0), np.array(0, np.int8), 0)
    assert q.tolist() == [0, 2, 2, 127, -128]
