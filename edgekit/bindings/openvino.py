"""OpenVINO's binding: INT8 through NNCF, an fp16-weight IR, bf16 where the CPU computes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.compress.backend import RuntimeBackend
from edgekit.runtimes.openvino import bf16_support
from edgekit.runtimes.table import OPENVINO


def techniques() -> RuntimeBackend:
    """What the techniques need from OpenVINO: INT8 through NNCF (its ignored scope keeps layers
    in float; they are ranked with the Q/DQ placement on weighted-layer inputs, NNCF's default,
    after its INT8 LSTM/GRU layers, which that placement cannot rank),
    an IR with fp16 weights, the bf16 variant on CPUs that compute bf16 natively, and which
    layers of an IR are quantized."""
    from edgekit.compress.quantize_ov import ov_fp16_ir, ov_int8, ov_mappable, ov_quantized_ops, recurrent_nodes
    from edgekit.runtimes.table import TENSORRT

    row = OPENVINO
    return RuntimeBackend(
        runtime=row.name, title="OpenVINO via NNCF", prefix=row.prefix, folder=row.folder,
        int8=ov_int8, int8_out=f"{row.folder}/model.{row.prefix}-int8.xml",
        fp16=ov_fp16_ir, fp16_out=f"{row.folder}/model.{row.prefix}-fp16.xml",
        placement=TENSORRT.name, keep_float=ov_mappable, unranked=recurrent_nodes, summary=ov_quantized_ops,
        int8_extras=_bf16_variant,
    )  # fmt: skip


def _bf16_variant(
    onnx_path: Path, workdir: Path, record: dict[str, Any], progress: Callable[[str], None]
) -> list[Any]:
    """``ov-bf16`` when the CPU computes bf16 natively; otherwise none, and the record says why."""
    from edgekit.compress.quantize_ov import ov_bf16_ir

    ok, why = bf16_support()
    record["bf16"] = why
    if not ok:
        return []
    progress("OpenVINO bf16 (same IR, INFERENCE_PRECISION_HINT=bf16)")
    return [ov_bf16_ir(onnx_path, workdir / OPENVINO.folder / f"model.{OPENVINO.prefix}-bf16.xml")]
