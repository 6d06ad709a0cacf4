"""ONNX Runtime on the CPU: one session, ``threads`` intra-op threads, all graph optimizations."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.runtimes.base import COMPUTE_LAYERS, BoundCall, Runtime, TensorSpec, precision_verdict
from edgekit.runtimes.table import ONNXRUNTIME

PROVIDER = "CPUExecutionProvider"
# Ops that compute in 8-bit integers on ONNX Runtime's CPU kernels (after QDQ fusion).
INT8_OPS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
        "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
        "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QAttention",
        "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QEmbedLayerNormalization",
    }
)
# Above this size the optimized graph is not re-serialized just to count its ops.
OP_SUMMARY_MAX_BYTES = 64 << 20

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


class OnnxRuntime(Runtime):
    """ONNX Runtime, CPU execution provider."""

    name = ONNXRUNTIME.name

    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(path), self._options(), providers=[PROVIDER])
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._op_summary: dict[str, Any] | None = None
        return (
            [_spec(a) for a in self._session.get_inputs()],
            [_spec(a) for a in self._session.get_outputs()],
        )

    def _options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only
        return so

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(self._output_names, feed))

    def bind_for_timing(self, feed: Mapping[str, np.ndarray]) -> BoundCall:
        """One IOBinding per feed, made once: inputs are OrtValues over the feed's arrays (no copy),
        outputs are allocated by ONNX Runtime on every run as ``onnxruntime_perf_test`` lets them
        be; ``infer`` is ``run_with_iobinding`` alone and ``read`` copies the outputs out."""
        import onnxruntime as ort

        binding = self._session.io_binding()
        for name, arr in feed.items():  # the bound OrtValue holds a reference to the array it shares
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr)))
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        infer = partial(self._session.run_with_iobinding, binding)
        return BoundCall(binding.synchronize_inputs, infer, binding.copy_outputs_to_cpu)

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "device": "CPU",
            "execution_provider": self._session.get_providers()[0],
            "graph_optimization": "ORT_ENABLE_ALL",
        }
        info.update(self.op_summary())
        return info

    def op_summary(self) -> dict[str, Any]:
        """Op types of the graph ONNX Runtime really executes (after fusing Q/DQ pairs into
        QLinear*/QGemm kernels), the count of int8 kernels and of Q/DQ nodes left in the graph,
        and the precision verdict over compute ops. A Q/DQ model whose compute ops stayed float
        (``int8_ops == 0``) runs in float with fake quantization. Computed once; skipped for
        models over 64 MB."""
        if self._op_summary is not None:
            return self._op_summary
        assert self.path is not None
        size = sum(f.stat().st_size for f in _model_files(self.path))
        if size > OP_SUMMARY_MAX_BYTES:
            self._op_summary = {"ops": None, "ops_note": f"not counted: model is {size >> 20} MB"}
            return self._op_summary
        ops, float_kind = self._optimized_graph_facts()
        int8 = sum(n for op, n in ops.items() if op in INT8_OPS)
        qdq = ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0)
        compute = {
            "int8": int8,
            float_kind: sum(n for op, n in ops.items() if op in COMPUTE_LAYERS - INT8_OPS),
        }
        self._op_summary = {
            "ops": dict(sorted(ops.items())),
            "int8_ops": int8,
            "qdq_nodes": qdq,
            "ops_by_precision": {k: v for k, v in compute.items() if v},
            "precision": precision_verdict(compute),
        }
        return self._op_summary

    def _optimized_graph_facts(self) -> tuple[Counter[str], str]:
        """Op-type counts of the optimized graph, and whether its float weights are fp32 or fp16."""
        import onnx
        import onnxruntime as ort

        assert self.path is not None
        with tempfile.TemporaryDirectory(prefix="edgekit-ort-") as tmp:
            so = self._options()
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            so.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "weights.bin"
            )
            ort.InferenceSession(str(self.path), so, providers=[PROVIDER])
            graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
        kinds = Counter(i.data_type for i in graph.initializer)
        half = kinds[onnx.TensorProto.FLOAT16] > kinds[onnx.TensorProto.FLOAT]
        return Counter(n.op_type for n in graph.node), "fp16" if half else "fp32"


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise BadInputError(
            f"tensor {arg.name!r} has type {arg.type}, which edgekit cannot feed or read"
        )
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorSpec(arg.name, shape, dtype)


def _model_files(path: Path) -> list[Path]:
    """The .onnx file and the external-data files next to it that it references."""
    files = [path]
    data = path.with_name(path.name + ".data")
    if data.exists():
        files.append(data)
    return files
