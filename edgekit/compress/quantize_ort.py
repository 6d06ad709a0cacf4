"""ONNX Runtime INT8 backend: static QDQ (the CNN scheme and the transformer scheme) and dynamic
INT8 for the CPU, and one-node quantization for per-layer sensitivity."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.compress.base import Variant
from edgekit.compress.ort_quantizer import (
    Feeds,
    external_files,
    feed_count,
    has_external_data,
    in_temp_cwd,
    load_onnx,
    preprocess,
    preprocessed,
    quantize_static,
    quantize_static_from,
    quiet_root_logger,
    static_variant,
)
from edgekit.compress.quantize_trt import trt_int8_qdq, trt_options
from edgekit.errors import require

if TYPE_CHECKING:
    from edgekit.compress.backend import Int8Settings

__all__ = ["ort_int8", "ort_int8_dynamic", "ort_int8_static", "ort_int8_static_transformer", "preprocess",
           "quantize_only"]  # fmt: skip

CNN_SCHEME = (
    "scheme: default (every quantizable op, activations uint8 asymmetric, weights int8 "
    "per-channel)"
)
_NO_SATURATION = (
    "weights use 7 bits (reduce_range) so u8×s8 products cannot saturate on x86 CPUs without VNNI"
)
_MAY_SATURATE = (
    "weights use all 8 bits (reduce_range=False): u8×s8 products may saturate on x86 CPUs "
    "without VNNI (AVX2 only)"
)



def _static_options(config: Int8Settings) -> dict[str, Any]:
    return {
        "activation_type": "uint8",
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "calib_method": config.calib_method,
        "extra_options": {"ActivationSymmetric": config.symmetric_activations},
    }


def ort_int8_static(
    config: Int8Settings,
    onnx_path: Path,
    feeds: Feeds,
    out: Path,
    *,
    calibration_cache: Path | None = None,
) -> Variant:
    """Static QDQ INT8 for ONNX Runtime's CPU execution provider.

    uint8 activations with int8 weights (U8S8), ONNX Runtime's recommended pairing for x86
    CPUs; ``config.reduce_range`` keeps weights to 7 bits for CPUs without VNNI.
    ``calibration_cache`` (a JSON file) stores the calibrated ranges on the first call and reuses
    them on later calls with the same model and feeds (an accuracy-budget search re-quantizes
    many times).
    """
    out = Path(out).resolve()
    pre_notes = quantize_static_from(
        onnx_path, out, feeds, exclude=config.exclude, options=_static_options(config),
        calibration_cache=calibration_cache,
    )  # fmt: skip
    symmetry = "symmetric" if config.symmetric_activations else "asymmetric"
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        f"QDQ format; activations uint8 {symmetry}, weights int8 symmetric {granularity} "
        "(U8S8: ONNX Runtime's recommended pairing for x86 CPUs)",
        _NO_SATURATION if config.reduce_range else _MAY_SATURATE,
        f"calibration: {feed_count(feeds)} samples, method {config.calib_method}",
        *pre_notes,
    ]
    return _static_variant(config, out, notes)


def _static_variant(config: Int8Settings, out: Path, notes: list[str]) -> Variant:
    return static_variant("ort-int8-static", "onnxruntime", out, config.exclude, notes)


TRANSFORMER_OPS = ("MatMul", "Gemm")


def _transformer_options(config: Int8Settings) -> dict[str, Any]:
    """The CNN scheme's options, on MatMul/Gemm only and symmetric on both sides."""
    return {
        **_static_options(config),
        "op_types": TRANSFORMER_OPS,
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True},
    }


def transformer_scheme_text(config: Int8Settings, why: str) -> str:
    """The ``scheme:`` note of a transformer-scheme variant."""
    return (
        f"scheme: transformer (SmoothQuant alpha {config.smooth_alpha:g}, MatMul/Gemm only, "
        f"per-channel symmetric weights, symmetric activations, {config.calib_method} "
        f"calibration) — {why}"
    )


def ort_int8_static_transformer(
    config: Int8Settings,
    onnx_path: Path,
    feeds: Feeds,
    out: Path,
    *,
    why: str = "transformer scheme requested",
    calibration_cache: Path | None = None,
    float_copy: Path | None = None,
) -> Variant:
    """Static QDQ INT8 for transformers on ONNX Runtime: SmoothQuant first (activation outliers
    folded into the LayerNorms and the weights, :mod:`edgekit.compress.smoothquant`), then only
    MatMul/Gemm quantized, weights int8 per channel, activations symmetric. Softmax, LayerNorm,
    GELU, residual Adds and the attention mask stay float: quantizing them is what makes the
    CNN scheme collapse on transformers. ``float_copy`` receives the smoothed float model (the
    float graph with the quantized graph's tensor names and scales)."""
    from edgekit.compress.smoothquant import smooth

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        smoothed = pre.with_name("smoothed.onnx")
        sq = smooth(pre, smoothed, feeds, config.smooth_alpha)
        if float_copy is not None:
            shutil.copyfile(smoothed, float_copy)
        quantize_static(
            smoothed,
            out,
            feeds,
            exclude=config.exclude,
            calibration_cache=calibration_cache,
            **_transformer_options(config),
        )
    notes = [
        transformer_scheme_text(config, why),
        sq.note(),
        "QDQ format; activations uint8 symmetric, weights int8 symmetric per-channel on "
        "MatMul/Gemm; Softmax, LayerNorm, GELU and residual Adds stay float",
        _NO_SATURATION if config.reduce_range else _MAY_SATURATE,
        f"calibration: {feed_count(feeds)} samples, method {config.calib_method}",
        *pre_notes,
    ]
    return _static_variant(config, out, notes)


# Q/DQ placements, named after the runtime whose rules they follow: ONNX Runtime's own (every
# quantizable op) and TensorRT's (symmetric int8 on the inputs of weighted layers, also NNCF's).
SCHEMES = ("onnxruntime", "tensorrt")


def quantize_only(
    config: Int8Settings,
    preprocessed: Path,
    feeds: Feeds,
    out: Path,
    nodes: tuple[str, ...],
    *,
    scheme: str = "onnxruntime",
    calibration_cache: Path,
) -> None:
    """Quantize only ``nodes`` of a model already passed through :func:`preprocess` (per-layer
    sensitivity measures one layer at a time).

    ``scheme`` picks the settings and Q/DQ placement: ``"onnxruntime"`` as
    :func:`ort_int8_static`, ``"tensorrt"`` as :func:`trt_int8_qdq` (symmetric int8, Q/DQ on
    the inputs of weighted layers only: also the placement of NNCF's default preset).
    """
    if not nodes:
        raise ValueError("quantize_only needs at least one node (an empty list means all)")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; choose one of {', '.join(SCHEMES)}")
    options = _SCHEME_OPTIONS[scheme](config)
    quantize_static(
        Path(preprocessed),
        Path(out),
        feeds,
        exclude=(),
        only=tuple(nodes),
        calibration_cache=calibration_cache,
        **options,
    )


def ort_int8_dynamic(
    config: Int8Settings, onnx_path: Path, out: Path, *, name: str = "ort-int8-dynamic"
) -> Variant:
    """Dynamic INT8 for ONNX Runtime, restricted to MatMul/Gemm.

    Dynamic Conv becomes ConvInteger, several times slower than fp32 on CPU: Conv stays float.
    """
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    op_types = ["MatMul", "Gemm"]
    with preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        present = Counter(n.op_type for n in load_onnx(pre, weights=False).graph.node)
        with in_temp_cwd(), quiet_root_logger():
            quantize_dynamic(
                str(pre),
                str(out),
                op_types_to_quantize=op_types,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(config.exclude),
                use_external_data_format=has_external_data(pre),
            )
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        f"only MatMul/Gemm quantized (int8 {granularity} weights, activations quantized at run "
        "time); Conv stays float: dynamic Conv (ConvInteger) is much slower on CPU",
        _NO_SATURATION if config.reduce_range else _MAY_SATURATE,
        *pre_notes,
    ]
    if not any(present[t] for t in op_types):
        notes.append(
            "the model has no MatMul or Gemm: dynamic INT8 quantized nothing, "
            "this variant computes like fp32"
        )
    if config.exclude:
        notes.append(f"kept in float (exclude): {', '.join(config.exclude)}")
    return Variant(
        name=name,
        runtime="onnxruntime",
        precision="int8",
        path=out,
        techniques=["quantize:int8-dynamic"],
        notes=notes,
        extra_files=external_files(out),
    )




_SCHEME_OPTIONS = {"onnxruntime": _static_options, "tensorrt": trt_options}
SCHEME_BUILDERS = {"onnxruntime": ort_int8_static, "tensorrt": trt_int8_qdq}


def ort_int8(
    config: Int8Settings,
    onnx_path: Path,
    feeds: Feeds,
    out: Path,
    *,
    transformer: str | None = None,
    calibration_cache: Path | None = None,
) -> Variant:
    """Static INT8 for ONNX Runtime: the transformer scheme when ``transformer`` says why, the
    default (CNN) scheme otherwise."""
    if transformer:
        return ort_int8_static_transformer(
            config, onnx_path, feeds, out, why=transformer, calibration_cache=calibration_cache
        )
    return ort_int8_static(config, onnx_path, feeds, out, calibration_cache=calibration_cache)
