"""A runtime edgekit does not ship, added the way LiteRT or ExecuTorch would be: this one module
plus one table line (``register(ROW)``).

It executes ONNX files with ``onnx.reference.ReferenceEvaluator`` (onnx's own Python
implementation of every operator: a different engine from ONNX Runtime). Its INT8 variant is the
standard Q/DQ ONNX made by ONNX Runtime's quantizer, which the reference evaluator runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.backend import Int8Settings, RuntimeBackend
from edgekit.compress.base import Variant
from edgekit.runtimes.base import Runtime, TensorSpec, specs_from_onnx
from edgekit.runtimes.table import RuntimeInfo

NAME = "onnxref"
OPSET = 21
ROW = RuntimeInfo(
    NAME, f"{__name__}:ReferenceRuntime", package="onnx", module="onnx", suffixes=(".onnx",),
    aliases=("ref",), prefix="ref", folder=NAME, techniques=f"{__name__}:techniques",
)  # fmt: skip


class ReferenceRuntime(Runtime):
    """ONNX models run by onnx's reference evaluator; ``calls`` counts the inferences it ran."""

    name = NAME
    calls = 0

    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import onnx
        from onnx import version_converter
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(path))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < OPSET:  # the evaluator implements the newer QuantizeLinear/DequantizeLinear only
            model = version_converter.convert_version(model, OPSET)
        self._session = ReferenceEvaluator(model)
        return specs_from_onnx(path)

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        type(self).calls += 1
        return [np.array(out) for out in self._session.run(None, feed)]

    def _describe(self) -> dict[str, Any]:
        return {"device": "CPU", "engine": "onnx.reference.ReferenceEvaluator"}


def _int8(
    config: Int8Settings,
    onnx_path: Path,
    feeds: list[dict[str, np.ndarray]],
    out: Path,
    /,
    *,
    transformer: str | None = None,
    calibration_cache: Path | None = None,
) -> Variant:
    from edgekit.compress.quantize_ort import ort_int8

    variant = ort_int8(config, onnx_path, feeds, out, transformer=transformer, calibration_cache=calibration_cache)
    variant.name, variant.runtime = f"{ROW.prefix}-int8", NAME
    variant.notes.append("run by onnx.reference.ReferenceEvaluator")
    return variant


def techniques() -> RuntimeBackend:
    """Static INT8 through ONNX Runtime's Q/DQ quantizer (its placement ranks the layers)."""
    from edgekit.compress.qdq_summary import quantization_summary

    return RuntimeBackend(
        runtime=NAME, title="ONNX reference evaluator", prefix=ROW.prefix, folder=ROW.folder,
        int8=_int8, int8_out=f"{ROW.folder}/model.{ROW.prefix}-int8.onnx",
        placement="onnxruntime", summary=quantization_summary,
    )  # fmt: skip
