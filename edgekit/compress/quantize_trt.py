"""TensorRT INT8 backend: the symmetric explicit Q/DQ ONNX that the device builds into an INT8
engine, made with ONNX Runtime's quantizer and checked against TensorRT's Q/DQ rules
(:func:`edgekit.export.trt_qdq.check_trt_qdq`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.compress.base import Variant
from edgekit.compress.ort_quantizer import (
    WEIGHTED_OPS,
    Feeds,
    feed_count,
    quantize_static_from,
    static_variant,
)
from edgekit.errors import IntegrityError
from edgekit.export.trt_qdq import check_trt_qdq

if TYPE_CHECKING:
    from edgekit.compress.backend import Int8Settings

TRT_SCHEME = (
    "scheme: TensorRT explicit Q/DQ (symmetric int8 on the inputs of weighted layers; TensorRT "
    "chooses the precision of everything else)"
)


def trt_options(config: Int8Settings) -> dict[str, Any]:
    return {
        "activation_type": "int8",
        "per_channel": config.per_channel,
        "reduce_range": False,
        "calib_method": config.calib_method,
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "QDQKeepRemovableActivations": True,
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
        },
    }


def trt_int8_qdq(
    config: Int8Settings,
    onnx_path: Path,
    feeds: Feeds,
    out: Path,
    *,
    transformer: str | None = None,
    calibration_cache: Path | None = None,
) -> Variant:
    """Explicit-quantization ONNX for TensorRT: symmetric int8 Q/DQ, zero point 0 everywhere.

    Placement follows TensorRT's recommendations: Q/DQ on the inputs of weighted layers, not on
    their outputs; activations such as ReLU stay explicit so TensorRT can fuse them; one Q/DQ
    pair per consumer; biases stay float (TensorRT's DequantizeLinear takes int8 only and it
    quantizes biases itself); weights use the full int8 range. Checked by :func:`check_trt_qdq`.
    ``calibration_cache`` works as in :func:`~edgekit.compress.quantize_ort.ort_int8_static`;
    ``transformer`` changes nothing (TensorRT chooses the precision of the unquantized layers).
    """
    out = Path(out).resolve()
    pre_notes = quantize_static_from(
        onnx_path, out, feeds, exclude=config.exclude, options=trt_options(config),
        calibration_cache=calibration_cache,
    )  # fmt: skip
    problems = check_trt_qdq(out)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise IntegrityError(f"{out} is not a valid TensorRT Q/DQ model: {'; '.join(problems[:5])}{more}")
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        f"explicit Q/DQ: int8 symmetric activations and {granularity} weights, zero points 0, "
        "float biases",
        f"calibration: {feed_count(feeds)} samples, method {config.calib_method}",
        "the engine is built on the device (edgekit build); Q/DQ layers need no precision flag",
        *pre_notes,
    ]
    return static_variant("trt-int8-qdq", "tensorrt", out, config.exclude, notes)


