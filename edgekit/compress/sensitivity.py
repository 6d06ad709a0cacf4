"""Per-layer quantization sensitivity: how much quantizing one node alone hurts the model output.

:func:`layer_sensitivity` ranks the quantizable nodes of an fp32 ONNX by how much quantizing
each one *alone* hurts the model's output ("leave one in"): ONNX Runtime's quantizer, with the
calibrated ranges of the full INT8 model (computed once, then cached), quantizes one node at a
time, and the output SQNR against fp32 is measured on held-out samples (``edgekit doctor`` shows
it). Per-tensor errors of the fully quantized model (``onnxruntime.quantization.qdq_loss_debug``)
were not used: each mixes the error of every upstream layer, so it does not say which node to keep
in float. The budget search ranks faster, in one pass (:mod:`edgekit.compress.shadow`).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.benchmarks.accuracy import fidelity
from edgekit.compress.calibration import model_inputs
from edgekit.compress.ort_quantizer import WEIGHTED_OPS
from edgekit.compress.quantize_ort import SCHEME_BUILDERS, preprocess, quantize_only
from edgekit.io.data import Dataset

if TYPE_CHECKING:
    from edgekit.compress.quantize import Int8Config

Feeds = list[dict[str, np.ndarray]]

# Nodes worth keeping in float: they compute on quantized values. Data movement (MaxPool,
# Reshape, Concat …) only carries its producer's scale, so keeping it in float changes nothing.
RANKED_OPS = (
    *WEIGHTED_OPS,
    "Add", "Mul", "Sub", "Div", "Softmax", "AveragePool", "GlobalAveragePool",
    "LayerNormalization", "InstanceNormalization",
)  # fmt: skip
SCORE_UNIT = "dB output SQNR vs fp32 with only this layer quantized (lower = more sensitive)"
ONE_PASS_UNIT = (
    "dB output SQNR of this node quantized alone (its own Q/DQ and int8 weights from the fully "
    "quantized graph) on float inputs (lower = more sensitive)"
)
SQNR_CAP_DB = 100.0
SENSITIVITY_SAMPLES = 64
EVAL_BATCH = 64



def run_outputs(path: Path, data: Dataset) -> np.ndarray:
    """The first output of the ONNX ``path`` on every sample of ``data``, executed by ONNX
    Runtime's CPU kernels (the arithmetic of the Q/DQ graphs its quantizer writes), one thread,
    all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    specs = model_inputs(Path(path))
    bound = data.bind(list(specs))
    arrays = {k: np.asarray(bound[k]).astype(dtype, copy=False) for k, (_, dtype) in specs.items()}
    first = next(iter(specs.values()))[0] if specs else []
    fixed = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None  # a batch baked in
    step = fixed or EVAL_BATCH
    stop = len(data) - len(data) % step if fixed else len(data)
    parts = [
        np.asarray(session.run(None, {k: v[i : i + step] for k, v in arrays.items()})[0])
        for i in range(0, stop, step)
    ]
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class LayerScore:
    """How much quantizing one node hurts the model output."""

    node: str  # the ONNX node name
    op_type: str
    score: float
    unit: str = SCORE_UNIT

    def as_dict(self) -> dict[str, Any]:
        score = 999.0 if np.isinf(self.score) else round(float(self.score), 2)
        return {"node": self.node, "op_type": self.op_type, "score": score, "unit": self.unit}



def quantized_nodes(qdq_onnx: Path | str) -> list[tuple[str, str]]:
    """(name, op type) of the nodes of a QDQ model that compute on dequantized inputs, in graph
    order, restricted to :data:`RANKED_OPS`."""
    import onnx

    graph = onnx.load(str(qdq_onnx), load_external_data=False).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return [
        (n.name, n.op_type)
        for n in graph.node
        if n.op_type in RANKED_OPS and any(i in dequantized for i in n.input)
    ]


def layer_sensitivity(
    fp32_onnx: Path,
    quantized_onnx: Path | None,
    feeds: Feeds,
    eval: Dataset,
    task: str,
    *,
    config: Int8Config | None = None,
    scheme: str = "onnxruntime",
    calibration_cache: Path | None = None,
    max_samples: int = SENSITIVITY_SAMPLES,
    skip: Sequence[str] = (),
) -> list[LayerScore]:
    """Rank the quantizable nodes of ``fp32_onnx``, most sensitive first.

    ``quantized_onnx`` (a QDQ model of ``fp32_onnx``) says which nodes are quantized; when None
    the model is quantized here. Each node is then quantized alone, with ``config`` (default
    :class:`~edgekit.compress.quantize.Int8Config`) and the Q/DQ ``scheme`` (one of
    :data:`~edgekit.compress.quantize_ort.SCHEMES`: ONNX Runtime's own placement, or TensorRT's —
    symmetric, on weighted-layer inputs, also NNCF's). Ranges come from ``feeds``, once
    (``calibration_cache`` keeps them across calls). The first output is compared with fp32 on
    the first ``max_samples`` samples of ``eval``; the score is that SQNR in dB (lower = more
    sensitive). Nodes in ``skip`` are not ranked. Cost: one quantization and one inference of
    ``max_samples`` samples per node.
    """
    from edgekit.compress.quantize import Int8Config

    config = config or Int8Config()
    fp32_onnx = Path(fp32_onnx).resolve()
    data = Dataset(inputs=eval.head(max_samples).inputs, task=task, name=eval.name)
    with tempfile.TemporaryDirectory(prefix="edgekit-sensitivity-") as tmp:
        scratch = Path(tmp)
        cache = Path(calibration_cache or scratch / "ranges.json").resolve()
        if quantized_onnx is None:
            quantized_onnx = scratch / "all.onnx"
            full = dataclasses.replace(config, exclude=())
            SCHEME_BUILDERS[scheme](full, fp32_onnx, feeds, quantized_onnx, calibration_cache=cache)
        candidates = [(n, op) for n, op in quantized_nodes(quantized_onnx) if n not in set(skip)]
        pre = scratch / "preprocessed.onnx"
        preprocess(fp32_onnx, pre)
        reference = run_outputs(fp32_onnx, data)
        scores: list[LayerScore] = []
        for name, op_type in candidates:
            one = scratch / "one-layer.onnx"
            quantize_only(config, pre, feeds, one, (name,), scheme=scheme, calibration_cache=cache)
            out = run_outputs(one, data)
            sqnr = fidelity(task, reference[: len(out)], out).sqnr_db
            scores.append(LayerScore(name, op_type, float(sqnr)))
    return sorted(scores, key=lambda s: s.score)  # stable: ties keep graph order
