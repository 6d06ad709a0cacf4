"""ONNX export with a parity check against the source model."""

from edgekit.export.onnx import ExportResult, check_parity, export_onnx, model_params

__all__ = ["ExportResult", "check_parity", "export_onnx", "model_params"]
