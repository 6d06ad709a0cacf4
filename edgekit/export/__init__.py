"""ONNX export with a parity check against the source model."""

from edgekit.export.onnx import ExportResult, export_onnx, model_params
from edgekit.export.parity import check_parity

__all__ = ["ExportResult", "check_parity", "export_onnx", "model_params"]
