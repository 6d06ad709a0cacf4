"""ONNX Runtime's quantizer, as edgekit runs it: pre-processing (in a temporary directory, with the
fallbacks this stack needs), static QDQ quantization over a list of feeds, and file helpers.
The INT8 backends (:mod:`~edgekit.compress.quantize_ort`, :mod:`~edgekit.compress.quantize_trt`)
build on it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.base import Variant
from edgekit.errors import BadInputError, require

Feeds = list[dict[str, np.ndarray]]
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # layers with a weight input


class _FeedReader:
    """ONNX Runtime ``CalibrationDataReader`` over a list of feeds (ORT checks only for
    ``get_next``, so no ORT import is needed here)."""

    def __init__(self, feeds: Feeds) -> None:
        self._feeds = feeds
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._feeds):
            return None
        self._i += 1
        return self._feeds[self._i - 1]

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = self._feeds[start_index:end_index]
        self._i = 0


@contextlib.contextmanager
def in_temp_cwd() -> Iterator[Path]:
    """Work in a fresh temporary directory (some ORT tools leave files in the current one)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantization tools log advice through the root logger; keep it out of CLI output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def load_onnx(onnx_path: Path | str, *, weights: bool = True) -> Any:
    import onnx

    return onnx.load(str(onnx_path), load_external_data=weights)


def has_external_data(onnx_path: Path) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in load_onnx(onnx_path, weights=False).graph.initializer)


def external_files(out: Path) -> list[Path]:
    data = out.with_name(out.name + ".data")
    return [data] if data.exists() else []


def feed_count(feeds: Feeds) -> int:
    return sum(len(next(iter(f.values()))) for f in feeds)


def preprocess(onnx_path: Path, out_path: Path) -> list[str]:
    """ORT's quantization pre-processing (shape inference + basic graph optimization).

    Upgrades opset < 13 first (per-channel Q/DQ needs it) and skips symbolic shape inference
    when it cannot complete. Returns notes on anything done differently from the default.
    """
    require("onnxruntime")
    import onnx
    from onnxruntime.quantization import quant_pre_process

    notes: list[str] = []
    src = Path(onnx_path).resolve()
    out_path = Path(out_path).resolve()
    external = has_external_data(src)
    with in_temp_cwd() as tmp, quiet_root_logger():
        model = load_onnx(src, weights=False)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 13:
            from onnx import version_converter

            src_upgraded = tmp / "opset13.onnx"
            onnx.save(version_converter.convert_version(load_onnx(src), 13), str(src_upgraded))
            src = src_upgraded
            notes.append(f"upgraded ONNX opset {opset} → 13 first (per-channel Q/DQ needs it)")
        kwargs: dict[str, Any] = {
            "save_as_external_data": external,
            "all_tensors_to_one_file": True,
        }
        try:
            quant_pre_process(str(src), str(out_path), **kwargs)
        except Exception as exc:  # ORT raises a bare Exception here
            if "Incomplete symbolic shape inference" not in str(exc):
                raise
            quant_pre_process(str(src), str(out_path), skip_symbolic_shape=True, **kwargs)
            notes.append("pre-processing skipped symbolic shape inference (incomplete here)")
    return notes


@contextlib.contextmanager
def preprocessed(onnx_path: Path, exclude: tuple[str, ...]) -> Iterator[tuple[Path, list[str]]]:
    """The pre-processed model in a temporary directory, after checking ``exclude`` against it."""
    with tempfile.TemporaryDirectory(prefix="edgekit-pre-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        notes = preprocess(onnx_path, pre)
        if exclude:
            names = [n.name for n in load_onnx(pre, weights=False).graph.node]
            missing = [e for e in exclude if e not in set(names)]
            if missing:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise BadInputError(
                    f"exclude names {missing} are not nodes of the pre-processed ONNX graph; "
                    f"its nodes are: {shown}"
                )
        yield pre, notes


def quantize_static(
    src: Path,
    out: Path,
    feeds: Feeds,
    *,
    activation_type: str,
    per_channel: bool,
    reduce_range: bool,
    calib_method: str,
    exclude: tuple[str, ...],
    extra_options: dict[str, Any],
    only: tuple[str, ...] = (),
    calibration_cache: Path | None = None,
    op_types: tuple[str, ...] = (),
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, out = Path(src).resolve(), Path(out).resolve()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 MinMaxCalibrater drops every full chunk
    # of collected outputs without merging its ranges, so only the last partial chunk would count
    # (and a feed count that is a multiple of the chunk fails with "No data is collected.").
    options = dict(extra_options)
    # The histogram calibrators (percentile, entropy) print their progress on stdout.
    with in_temp_cwd(), quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(src),
            str(out),
            _FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            nodes_to_quantize=list(only),
            op_types_to_quantize=list(op_types) or None,
            calibrate_method=methods[calib_method],
            calibration_providers=["CPUExecutionProvider"],
            use_external_data_format=has_external_data(src),
            extra_options=options,
            # Ranges depend on the model and the feeds only, not on which nodes are quantized:
            # a cache written by the first call serves every later one (same bytes, no re-run).
            calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
        )


def quantize_static_from(
    onnx_path: Path,
    out: Path,
    feeds: Feeds,
    *,
    exclude: tuple[str, ...],
    options: dict[str, Any],
    calibration_cache: Path | None = None,
) -> list[str]:
    """Pre-process ``onnx_path`` and quantize it statically into ``out`` (``exclude`` kept in
    float); returns the pre-processing notes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with preprocessed(onnx_path, exclude) as (pre, pre_notes):
        quantize_static(pre, out, feeds, exclude=exclude, calibration_cache=calibration_cache, **options)
    return pre_notes


def static_variant(name: str, runtime: str, out: Path, exclude: tuple[str, ...], notes: list[str]) -> Variant:
    """The variant of a statically quantized ``out``; ``notes`` gain the layers kept in float."""
    if exclude:
        notes.append(f"kept in float (exclude): {', '.join(exclude)}")
    return Variant(
        name=name,
        runtime=runtime,
        precision="int8",
        path=out,
        techniques=["quantize:int8-static"],
        notes=notes,
        extra_files=external_files(out),
    )
