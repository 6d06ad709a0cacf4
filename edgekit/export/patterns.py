"""Graph patterns that decide how a model is quantized: is this ONNX a transformer, a recurrent
network?

A transformer is recognised by its attention blocks: ``MatMul → (Mul/Div/Add/Where …) →
Softmax → MatMul`` where both MatMuls multiply two activations (queries × keys, then
probabilities × values). LayerNorm (``LayerNormalization``, or its decomposed form
``ReduceMean → Sub → Pow → ReduceMean → Add → Sqrt → Div``) and GELU (``Gelu``, or ``Erf`` /
``Tanh`` inside ``x · 0.5 · (1 + erf(x/√2))``) are counted as supporting evidence.

A recurrent network is recognised by its ``LSTM``, ``GRU`` or ``RNN`` nodes (what the exporters
emit for ``nn.LSTM``/``nn.GRU``/``nn.RNN``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Ops allowed between the scores MatMul and the Softmax (scaling, masking, casts, layout).
_SCORE_PATH = ("Mul", "Div", "Add", "Sub", "Where", "Cast", "Reshape", "Transpose", "Identity")
_MAX_HOPS = 6
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


@dataclass(frozen=True)
class GraphPatterns:
    """What :func:`detect` found in a graph."""

    attention: int  # MatMul → Softmax → MatMul blocks
    layernorm: int  # LayerNormalization ops
    layernorm_decomposed: int  # ReduceMean/Sub/Pow/Sqrt/Div chains
    gelu: int  # Gelu ops, or Erf-based GELUs
    attention_nodes: tuple[str, ...] = ()  # the Softmax node of each attention block
    recurrent: tuple[tuple[str, str], ...] = ()  # (op type, node name) of each LSTM/GRU/RNN

    @property
    def transformer(self) -> bool:
        """A transformer has at least one attention block."""
        return self.attention > 0

    @property
    def rnn(self) -> bool:
        """A recurrent network has at least one LSTM, GRU or RNN node."""
        return bool(self.recurrent)

    def describe_rnn(self) -> str:
        if not self.rnn:
            return "no LSTM/GRU/RNN node detected"
        counts = Counter(op for op, _ in self.recurrent)
        found = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        return f"recurrent layers detected ({found})"

    def describe(self) -> str:
        if not self.transformer:
            return "no attention block detected"
        norms = self.layernorm + self.layernorm_decomposed
        return (
            f"{self.attention} attention block(s) (MatMul → Softmax → MatMul), {norms} LayerNorm(s), "
            f"{self.gelu} GELU(s) detected"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_nodes"] = list(self.attention_nodes)
        d["recurrent"] = [list(r) for r in self.recurrent]
        d["transformer"] = self.transformer
        d["rnn"] = self.rnn
        d["summary"] = self.describe()
        return d


def _detect_graph(graph: Any) -> GraphPatterns:
    inits = {t.name for t in graph.initializer}
    consts = inits | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            consumers[i].append(node)

    def activation_matmul(node: Any) -> bool:
        return node.op_type == "MatMul" and not any(i in consts for i in node.input[:2])

    def reaches_back(tensor: str) -> bool:
        """Softmax input ← … ← a MatMul of two activations."""
        for _ in range(_MAX_HOPS):
            node = producer.get(tensor)
            if node is None:
                return False
            if activation_matmul(node):
                return True
            if node.op_type not in _SCORE_PATH:
                return False
            tensor = next((i for i in node.input if i not in consts), "")
        return False

    def reaches_forward(tensor: str) -> bool:
        """Softmax output → … → a MatMul of two activations."""
        frontier = [tensor]
        for _ in range(_MAX_HOPS):
            nxt = []
            for t in frontier:
                for node in consumers.get(t, []):
                    if activation_matmul(node):
                        return True
                    if node.op_type in ("Cast", "Reshape", "Transpose", "Identity", "Where", "Dropout"):
                        nxt.extend(node.output)
            frontier = nxt
        return False

    attention = tuple(
        n.name or n.output[0]
        for n in graph.node
        if n.op_type == "Softmax" and reaches_back(n.input[0]) and reaches_forward(n.output[0])
    )
    counts = Counter(n.op_type for n in graph.node)
    decomposed = 0
    for node in graph.node:
        # ... Sqrt(var + eps) → Div(x - mean, ·): the tail of a decomposed LayerNorm.
        if node.op_type != "Div" or len(node.input) < 2:
            continue
        den, num = producer.get(node.input[1]), producer.get(node.input[0])
        if den is not None and den.op_type == "Sqrt" and num is not None and num.op_type == "Sub":
            decomposed += 1
    gelu = counts["Gelu"] + counts["FastGelu"] + counts["BiasGelu"] + counts["Erf"]
    return GraphPatterns(
        attention=len(attention),
        layernorm=counts["LayerNormalization"] + counts["SkipLayerNormalization"],
        layernorm_decomposed=decomposed,
        gelu=gelu,
        attention_nodes=attention,
        recurrent=tuple(
            (n.op_type, n.name or n.output[0]) for n in graph.node if n.op_type in RECURRENT_OPS
        ),
    )


def detect(onnx_path: Path | str) -> GraphPatterns:
    """Find attention blocks, LayerNorms, GELUs and recurrent layers in the ONNX at ``onnx_path`` (weights are
    not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return _detect_graph(model.graph)
