"""SmoothQuant for ONNX: move activation outliers into the weights before static INT8.

Transformers carry a few activation channels that are 10–100× larger than the rest (typically
at the output of a LayerNorm). A per-tensor activation scale then spends all 256 levels on those
channels and every other channel rounds to zero. SmoothQuant (Xiao et al., 2023) rescales each
input channel ``k`` of a MatMul by ``s_k = max|X_k|^α / max|W_k|^(1-α)``: ``X / s`` feeds
``s · W``, the same product in exact arithmetic, with a flatter activation to quantize.

Here ``1 / s`` is folded into the producer of ``X`` (a ``LayerNormalization``'s scale and bias,
or the ``Mul``/``Add`` constants of a decomposed LayerNorm), so the smoothed graph has exactly
the nodes of the original. Activations whose producer cannot absorb the scale stay as they are.
The per-channel maxima come from one ONNX Runtime pass over the calibration feeds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Feeds = list[dict[str, np.ndarray]]

DEFAULT_ALPHA = 0.5


@dataclass
class SmoothResult:
    """What :func:`smooth` changed: the MatMuls whose inputs were smoothed, and the producers
    that absorbed the scales."""

    alpha: float
    matmuls: list[str] = field(default_factory=list)
    folded_into: list[str] = field(default_factory=list)
    max_ratio: float = 1.0  # the largest channel max / median channel max seen before smoothing

    def note(self) -> str:
        if not self.matmuls:
            return "SmoothQuant: no MatMul input could be smoothed (no foldable LayerNorm producer)"
        return (
            f"SmoothQuant alpha {self.alpha:g} on {len(self.matmuls)} MatMul input(s), scales "
            f"folded into {len(self.folded_into)} LayerNorm(s); largest activation channel was "
            f"{self.max_ratio:.0f}× the median channel"
        )


def _fold_targets(producer: Any, inits: dict[str, Any], uses: dict[str, int]) -> list[str] | None:
    """The initializers that scale the output of ``producer`` per channel (scale and bias), or
    None when the producer cannot absorb a per-channel scale."""
    if producer is None:
        return None
    if producer.op_type == "LayerNormalization":
        names = [n for n in producer.input[1:3] if n]
    elif producer.op_type == "Add":
        # Decomposed LayerNorm: Add(Mul(normalized, gamma), beta).
        beta = next((n for n in producer.input if n in inits), None)
        return [beta] if beta is not None and uses[beta] == 1 else None
    else:
        return None
    if not names or any(n not in inits or uses[n] != 1 for n in names):
        return None
    return names


def _channel_absmax(model: Any, tensors: list[str], feeds: Feeds) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of ``tensors`` over every feed: one ONNX Runtime run."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            m = np.abs(np.asarray(value, dtype=np.float32)).reshape(-1, value.shape[-1]).max(0)
            maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
    return maxima


def _decomposed_gamma(add: Any, producer: dict[str, Any], inits: dict[str, Any], uses: dict[str, int]) -> str | None:
    mul = next((producer[i] for i in add.input if i in producer), None)
    if mul is None or mul.op_type != "Mul" or uses[mul.output[0]] != 1:
        return None
    gamma = next((n for n in mul.input if n in inits), None)
    return gamma if gamma is not None and uses[gamma] == 1 else None


def smooth(onnx_in: Path, onnx_out: Path, feeds: Feeds, alpha: float = DEFAULT_ALPHA) -> SmoothResult:
    """Write ``onnx_in`` with SmoothQuant applied to ``onnx_out`` (same nodes, rescaled
    constants). Only MatMuls with a constant 2-D weight whose activation comes from a
    LayerNorm (all of whose consumers are such MatMuls) are smoothed."""
    import onnx
    from onnx import numpy_helper

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be between 0 and 1")
    model = onnx.load(str(onnx_in))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = defaultdict(int)
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            uses[i] += 1
            consumers[i].append(node)

    def weighted_matmul(node: Any) -> bool:
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        return node.op_type == "MatMul" and w is not None and len(w.dims) == 2 and uses[w.name] == 1

    plans: dict[str, tuple[list[Any], list[str]]] = {}
    for x, users in consumers.items():
        if x in inits or not users or not all(weighted_matmul(n) and n.input[0] == x for n in users):
            continue
        targets = _fold_targets(producer.get(x), inits, uses)
        if targets is None:
            continue
        if producer[x].op_type == "Add":
            gamma = _decomposed_gamma(producer[x], producer, inits, uses)
            if gamma is None:
                continue
            targets = [gamma, *targets]
        plans[x] = (users, targets)

    result = SmoothResult(alpha=alpha)
    if not plans:
        onnx.save(model, str(onnx_out))
        return result
    maxima = _channel_absmax(model, list(plans), feeds)
    for x, (users, targets) in plans.items():
        xmax = maxima[x].astype(np.float64)
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float64) for n in users]
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        ok = (xmax > 0) & (wmax > 0)
        scale = np.ones_like(xmax)
        scale[ok] = xmax[ok] ** alpha / wmax[ok] ** (1.0 - alpha)
        scale = np.clip(scale, 1e-5, 1e5)
        result.max_ratio = max(result.max_ratio, float(xmax.max() / max(np.median(xmax), 1e-12)))
        for node, w in zip(users, weights, strict=True):
            _replace(inits[node.input[1]], (w * scale[:, None]).astype(np.float32))
            result.matmuls.append(node.name)
        for name in targets:
            t = numpy_helper.to_array(inits[name]).astype(np.float64)
            _replace(inits[name], (t / scale).astype(np.float32))
        result.folded_into.append(producer[x].name)
    onnx.save(model, str(onnx_out))
    return result


def _replace(tensor: Any, values: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
