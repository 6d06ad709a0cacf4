"""TensorRT's binding: the explicit Q/DQ ONNX and the fp32 ONNX, built into engines on the device."""

from __future__ import annotations

from edgekit.compress.backend import RuntimeBackend
from edgekit.runtimes.table import TENSORRT


def techniques() -> RuntimeBackend:
    """What the techniques need from TensorRT: the symmetric explicit Q/DQ ONNX and the fp32 ONNX
    for an FP16 build, both turned into engines on the device. Without a GPU here, the budget
    search executes the Q/DQ graph in ONNX Runtime (same scales and placement)."""
    from edgekit.compress.fp16 import trt_fp16
    from edgekit.compress.qdq_summary import quantization_summary
    from edgekit.compress.quantize_trt import TRT_SCHEME, trt_int8_qdq
    from edgekit.runtimes.table import ONNXRUNTIME

    row = TENSORRT
    return RuntimeBackend(
        runtime=row.name, title="TensorRT explicit Q/DQ", prefix=row.prefix, folder=row.folder,
        int8=trt_int8_qdq, int8_out=f"{row.folder}/model.{row.prefix}-int8-qdq.onnx",
        fp16=trt_fp16, fp16_out=f"{row.folder}/model.{row.prefix}-fp16.onnx",
        placement=row.name, follows_transformer=False, summary=quantization_summary,
        default_scheme=TRT_SCHEME, measured_in=ONNXRUNTIME.name, proxy_note=PROXY_NOTE,
        device_build=row.device_build, on_cpu=False,
    )  # fmt: skip


PROXY_NOTE = (
    "measured by executing the Q/DQ graph in ONNX Runtime on the CPU; TensorRT's kernels "
    "(and FP16 for the float layers) may differ: check with 'edgekit bench' on the device"
)
