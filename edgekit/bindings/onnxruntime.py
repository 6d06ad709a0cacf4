"""ONNX Runtime's binding: static QDQ INT8, dynamic INT8 on MatMul/Gemm, FP16."""

from __future__ import annotations

from edgekit.compress.backend import RuntimeBackend
from edgekit.runtimes.table import ONNXRUNTIME


def techniques() -> RuntimeBackend:
    """What the techniques need from ONNX Runtime: static QDQ INT8 (its own Q/DQ placement, or the
    transformer scheme), dynamic INT8 on MatMul/Gemm, FP16, and the Q/DQ graph summary."""
    from edgekit.compress.fp16 import ort_fp16
    from edgekit.compress.qdq_summary import quantization_summary
    from edgekit.compress.quantize_ort import CNN_SCHEME, ort_int8, ort_int8_dynamic

    row = ONNXRUNTIME
    return RuntimeBackend(
        runtime=row.name, title="ONNX Runtime", prefix=row.prefix, folder=row.folder,
        int8=ort_int8, int8_out=f"model.{row.prefix}-int8-static.onnx",
        int8_dynamic=ort_int8_dynamic, int8_dynamic_out=f"model.{row.prefix}-int8-dynamic.onnx",
        fp16=ort_fp16, fp16_out=f"model.{row.prefix}-fp16.onnx",
        placement=row.name, summary=quantization_summary, default_scheme=CNN_SCHEME,
    )  # fmt: skip
