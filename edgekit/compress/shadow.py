"""Ranking every quantized node in one pass: the float model plus, beside each quantized node, a
copy fed through that node's own Q/DQ from the float tensors (its output is the node quantized
alone); one run scores them all. The accuracy-budget search ranks with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.calibration import model_inputs
from edgekit.compress.sensitivity import (
    ONE_PASS_UNIT,
    SENSITIVITY_SAMPLES,
    SQNR_CAP_DB,
    LayerScore,
    quantized_nodes,
)
from edgekit.io.data import Dataset

SHADOW = "edgekit-shadow/"


def _copy_node(node: Any, inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    import onnx

    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(inputs)
    del new.output[:]
    new.output.extend(outputs)
    new.name = outputs[0]
    return new


ShadowPlan = dict[str, tuple[str, str, str, bool]]  # node → (op type, float out, shadow out, ReLU)


def _shadow_model(float_onnx: Path, qdq_onnx: Path, skip: Sequence[str]) -> tuple[Any, ShadowPlan]:
    """The float model plus, for every quantized node of ``qdq_onnx``, a copy of that node with
    its Q/DQ inputs computed from the *float* tensors: its output is the node quantized alone.
    Returns the model and node → (op type, float output, shadow output, apply ReLU)."""
    import onnx

    fmodel, qmodel = onnx.load(str(float_onnx)), onnx.load(str(qdq_onnx))
    qinits = {t.name: t for t in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    float_op = {o: n.op_type for n in fmodel.graph.node for o in n.output}
    float_tensors = set(float_op) | {i.name for i in fmodel.graph.input}
    needed: set[str] = set()
    nodes: list[Any] = []

    def mapped(tensor: str, tag: str) -> str | None:
        """``tensor`` of the quantized graph, rebuilt in the shadow model from float tensors."""
        if not tensor:
            return ""
        if tensor in qinits:
            needed.add(tensor)
            return SHADOW + tensor
        node = producer.get(tensor)
        if node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            ins = [mapped(i, tag) for i in node.input]
            if any(i is None for i in ins):
                return None
            out = f"{SHADOW}{tag}/{tensor}"
            nodes.append(_copy_node(node, [i or "" for i in ins], [out]))
            return out
        return tensor if tensor in float_tensors else None  # a float activation

    consumers: dict[str, list[Any]] = {}
    for n in qmodel.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def float_name(out: str) -> str | None:
        """The float graph's name of a node output (a quantized graph output is renamed and
        reaches its name through Q → DQ)."""
        if out in float_op:
            return out
        for q in consumers.get(out, []):
            for dq in consumers.get(q.output[0], []) if q.op_type == "QuantizeLinear" else []:
                if dq.op_type == "DequantizeLinear" and dq.output[0] in float_op:
                    return str(dq.output[0])
        return None

    plan: ShadowPlan = {}
    for name, op_type in quantized_nodes(qdq_onnx):
        node = next(n for n in qmodel.graph.node if n.name == name)
        out = float_name(node.output[0])
        if name in set(skip) or out is None:
            continue
        ins = [mapped(i, name) for i in node.input]
        if any(i is None for i in ins):
            continue
        outs = [f"{SHADOW}{name}/out{j}" for j in range(len(node.output))]
        nodes.append(_copy_node(node, [i or "" for i in ins], outs))
        # A Conv+Relu fused by the quantizer writes the Relu's output name, unclamped.
        plan[name] = (op_type, out, outs[0], float_op[out] == "Relu" and node.op_type != "Relu")
    for t in needed:
        copy = onnx.TensorProto()
        copy.CopyFrom(qinits[t])
        copy.name = SHADOW + t
        fmodel.graph.initializer.append(copy)
    fmodel.graph.node.extend(nodes)
    known = {o.name for o in fmodel.graph.output}
    for tensor in sorted({t for _, f, sh, _ in plan.values() for t in (f, sh)} - known):
        fmodel.graph.output.append(onnx.ValueInfoProto(name=tensor))
    domains = {o.domain for o in fmodel.opset_import}
    fmodel.opset_import.extend(o for o in qmodel.opset_import if o.domain not in domains)
    return fmodel, plan


def rank_layers(
    float_onnx: Path,
    qdq_onnx: Path,
    data: Dataset,
    *,
    max_samples: int = SENSITIVITY_SAMPLES,
    skip: Sequence[str] = (),
) -> list[LayerScore]:
    """Rank the quantized nodes of ``qdq_onnx`` in one pass, most sensitive first.

    ``float_onnx`` is the float graph ``qdq_onnx`` was made from (same tensor names). One model
    holds the float graph and, beside each quantized node, a copy fed through that node's own
    Q/DQ (same scales and int8 weights) from the float tensors; one run on the first
    ``max_samples`` samples of ``data`` gives every node's output SQNR when it alone is quantized,
    with float inputs. Cost: one inference, whatever the layer count.
    """
    import onnxruntime as ort

    model, plan = _shadow_model(Path(float_onnx), Path(qdq_onnx), skip)
    if not plan:
        return []
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fetch = sorted({t for _, f, sh, _ in plan.values() for t in (f, sh)})
    signal = dict.fromkeys(plan, 0.0)
    noise = dict.fromkeys(plan, 0.0)
    specs = model_inputs(float_onnx)
    arrays = data.head(max_samples).bind(list(specs))
    n = len(next(iter(arrays.values())))
    for i in range(0, n, 16):
        feed = {k: np.asarray(v[i : i + 16], dtype=specs[k][1]) for k, v in arrays.items()}
        got = dict(zip(fetch, session.run(fetch, feed), strict=True))
        for name, (_, f, sh, relu) in plan.items():
            ref = np.asarray(got[f], dtype=np.float64)
            q = np.asarray(got[sh], dtype=np.float64)
            q = np.maximum(q, 0.0) if relu else q
            signal[name] += float(np.sum(ref**2))
            noise[name] += float(np.sum((ref - q) ** 2))

    def db(name: str) -> float:
        if noise[name] <= 0 or signal[name] <= 0:
            return SQNR_CAP_DB
        return min(SQNR_CAP_DB, 10.0 * float(np.log10(signal[name] / noise[name])))

    scores = [LayerScore(name, op_type, db(name), ONE_PASS_UNIT) for name, (op_type, *_) in plan.items()]
    return sorted(scores, key=lambda s: s.score)  # stable: ties keep graph order
