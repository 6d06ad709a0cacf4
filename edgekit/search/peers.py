"""Peer pipelines: what a user would otherwise run by hand, with each tool's documented defaults.

- ONNX Runtime ``quantize_static(model, out, reader)`` (QDQ, per-tensor, MinMax),
- ONNX Runtime ``quantize_dynamic(model, out)`` (every supported op, Conv included),
- NNCF ``quantize(ov_model, Dataset)`` → ``openvino.save_model`` (OpenVINO INT8),
- torch eager fp32 (the module as trained, saved as a ``torch.export`` program).

They are calibrated on the same samples edgekit uses, so the comparison isolates the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class _Reader:
    """An ONNX Runtime ``CalibrationDataReader`` over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _feeds(job: Any) -> list[dict[str, np.ndarray]]:
    from edgekit.compress.quantize import calibration_feeds

    return calibration_feeds(job.calib, job.source_onnx, len(job.calib))


def build(kind: str, job: Any) -> tuple[Path, list[Path], list[str]]:
    from edgekit.compress.ort_quantizer import in_temp_cwd, quiet_root_logger

    out = job.out_dir
    if kind == "peer:ort-quantize_static":
        from onnxruntime.quantization import quantize_static

        path = out / "model.onnx"
        with in_temp_cwd(), quiet_root_logger():
            quantize_static(str(job.source_onnx), str(path), _Reader(_feeds(job)))
        return path, [], ["onnxruntime.quantization.quantize_static defaults (QDQ, per-tensor, MinMax)"]
    if kind == "peer:ort-quantize_dynamic":
        from onnxruntime.quantization import quantize_dynamic

        path = out / "model.onnx"
        with in_temp_cwd(), quiet_root_logger():
            quantize_dynamic(str(job.source_onnx), str(path))
        return path, [], ["onnxruntime.quantization.quantize_dynamic defaults (all supported ops, Conv included)"]
    if kind == "peer:nncf-quantize-openvino":
        import nncf
        import openvino as ov

        model = ov.convert_model(str(job.source_onnx))
        quantized = nncf.quantize(model, nncf.Dataset(_feeds(job)))
        path = out / "model.xml"
        ov.save_model(quantized, str(path))
        return path, [path.with_suffix(".bin")], ["nncf.quantize defaults on the OpenVINO model, openvino.save_model"]
    if kind == "peer:torch-eager-fp32":
        return _torch_program(job), [], ["torch eager fp32, the module as trained (torch.export program)"]
    raise ValueError(f"unknown peer {kind}")


def _torch_program(job: Any) -> Path:
    import torch

    from edgekit.io.models import load_model

    loaded = load_model(job.model_path, **job.load_options)
    if loaded.module is None or not loaded.eager:
        raise ValueError("torch eager needs the model as a torch module (reference model, --arch or a pickle)")
    names = list(job.eval.names)
    sample = job.eval.head(2).inputs
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(loaded.module.eval(), args, dynamic_shapes=tuple({0: batch} for _ in args))
    path = job.out_dir / "model.pt2"
    torch.export.save(program, str(path))
    return path
