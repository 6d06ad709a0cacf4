"""ONNX Runtime quantization backend: static and dynamic INT8 for the CPU, and the symmetric
explicit Q/DQ ONNX that TensorRT builds into an INT8 engine.

Also :func:`quantization_summary`, which says what a quantized ONNX really contains, and
:func:`check_trt_qdq`, which checks a Q/DQ ONNX against what TensorRT's parser accepts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compress.base import Variant
from edgekit.errors import BadInputError, IntegrityError, require

if TYPE_CHECKING:
    from edgekit.compress.quantize import Int8Config

Feeds = list[dict[str, np.ndarray]]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_WEIGHTED_INTEGER_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")
_NO_SATURATION = (
    "weights use 7 bits (reduce_range) so u8×s8 products cannot saturate on x86 CPUs without VNNI"
)
_MAY_SATURATE = (
    "weights use all 8 bits (reduce_range=False): u8×s8 products may saturate on x86 CPUs "
    "without VNNI (AVX2 only)"
)


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
def _in_temp_cwd() -> Iterator[Path]:
    """Work in a fresh temporary directory (some ORT tools leave files in the current one)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantization tools log advice through the root logger; keep it out of CLI output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _load(onnx_path: Path | str, *, weights: bool = True) -> Any:
    import onnx

    return onnx.load(str(onnx_path), load_external_data=weights)


def _has_external_data(onnx_path: Path) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in _load(onnx_path, weights=False).graph.initializer)


def _external_files(out: Path) -> list[Path]:
    data = out.with_name(out.name + ".data")
    return [data] if data.exists() else []


def _count(feeds: Feeds) -> int:
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
    external = _has_external_data(src)
    with _in_temp_cwd() as tmp, _quiet_root_logger():
        model = _load(src, weights=False)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 13:
            from onnx import version_converter

            src_upgraded = tmp / "opset13.onnx"
            onnx.save(version_converter.convert_version(_load(src), 13), str(src_upgraded))
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
def _preprocessed(onnx_path: Path, exclude: tuple[str, ...]) -> Iterator[tuple[Path, list[str]]]:
    """The pre-processed model in a temporary directory, after checking ``exclude`` against it."""
    with tempfile.TemporaryDirectory(prefix="edgekit-pre-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        notes = preprocess(onnx_path, pre)
        if exclude:
            names = [n.name for n in _load(pre, weights=False).graph.node]
            missing = [e for e in exclude if e not in set(names)]
            if missing:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise BadInputError(
                    f"exclude names {missing} are not nodes of the pre-processed ONNX graph; "
                    f"its nodes are: {shown}"
                )
        yield pre, notes


def _quantize_static(
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
    with _in_temp_cwd(), _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
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
            use_external_data_format=_has_external_data(src),
            extra_options=options,
            # Ranges depend on the model and the feeds only, not on which nodes are quantized:
            # a cache written by the first call serves every later one (same bytes, no re-run).
            calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
        )


def _static_options(config: Int8Config) -> dict[str, Any]:
    return {
        "activation_type": "uint8",
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "calib_method": config.calib_method,
        "extra_options": {"ActivationSymmetric": config.symmetric_activations},
    }


def ort_int8_static(
    config: Int8Config,
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
    out.parent.mkdir(parents=True, exist_ok=True)
    with _preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        _quantize_static(
            pre,
            out,
            feeds,
            exclude=config.exclude,
            calibration_cache=calibration_cache,
            **_static_options(config),
        )
    symmetry = "symmetric" if config.symmetric_activations else "asymmetric"
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        f"QDQ format; activations uint8 {symmetry}, weights int8 symmetric {granularity} "
        "(U8S8: ONNX Runtime's recommended pairing for x86 CPUs)",
        _NO_SATURATION if config.reduce_range else _MAY_SATURATE,
        f"calibration: {_count(feeds)} samples, method {config.calib_method}",
        *pre_notes,
    ]
    return _static_variant(config, out, notes)


def _static_variant(config: Int8Config, out: Path, notes: list[str]) -> Variant:
    if config.exclude:
        notes.append(f"kept in float (exclude): {', '.join(config.exclude)}")
    return Variant(
        name="ort-int8-static",
        runtime="onnxruntime",
        precision="int8",
        path=out,
        techniques=["quantize:int8-static"],
        notes=notes,
        extra_files=_external_files(out),
    )


TRANSFORMER_OPS = ("MatMul", "Gemm")


def _transformer_options(config: Int8Config) -> dict[str, Any]:
    """The CNN scheme's options, on MatMul/Gemm only and symmetric on both sides."""
    return {
        **_static_options(config),
        "op_types": TRANSFORMER_OPS,
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True},
    }


def transformer_scheme_text(config: Int8Config, why: str) -> str:
    """The ``scheme:`` note of a transformer-scheme variant."""
    return (
        f"scheme: transformer (SmoothQuant alpha {config.smooth_alpha:g}, MatMul/Gemm only, "
        f"per-channel symmetric weights, symmetric activations, {config.calib_method} "
        f"calibration) — {why}"
    )


def ort_int8_static_transformer(
    config: Int8Config,
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
    with _preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        smoothed = pre.with_name("smoothed.onnx")
        sq = smooth(pre, smoothed, feeds, config.smooth_alpha)
        if float_copy is not None:
            shutil.copyfile(smoothed, float_copy)
        _quantize_static(
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
        f"calibration: {_count(feeds)} samples, method {config.calib_method}",
        *pre_notes,
    ]
    return _static_variant(config, out, notes)


SCHEMES = ("onnxruntime", "tensorrt")


def quantize_only(
    config: Int8Config,
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
    options = _static_options(config) if scheme == "onnxruntime" else _trt_options(config)
    _quantize_static(
        Path(preprocessed),
        Path(out),
        feeds,
        exclude=(),
        only=tuple(nodes),
        calibration_cache=calibration_cache,
        **options,
    )


def ort_int8_dynamic(
    config: Int8Config, onnx_path: Path, out: Path, *, name: str = "ort-int8-dynamic"
) -> Variant:
    """Dynamic INT8 for ONNX Runtime, restricted to MatMul/Gemm.

    Dynamic Conv becomes ConvInteger, several times slower than fp32 on CPU: Conv stays float.
    """
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    op_types = ["MatMul", "Gemm"]
    with _preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        present = Counter(n.op_type for n in _load(pre, weights=False).graph.node)
        with _in_temp_cwd(), _quiet_root_logger():
            quantize_dynamic(
                str(pre),
                str(out),
                op_types_to_quantize=op_types,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(config.exclude),
                use_external_data_format=_has_external_data(pre),
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
        extra_files=_external_files(out),
    )


def _trt_options(config: Int8Config) -> dict[str, Any]:
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
    config: Int8Config,
    onnx_path: Path,
    feeds: Feeds,
    out: Path,
    *,
    calibration_cache: Path | None = None,
) -> Variant:
    """Explicit-quantization ONNX for TensorRT: symmetric int8 Q/DQ, zero point 0 everywhere.

    Placement follows TensorRT's recommendations: Q/DQ on the inputs of weighted layers, not on
    their outputs; activations such as ReLU stay explicit so TensorRT can fuse them; one Q/DQ
    pair per consumer; biases stay float (TensorRT's DequantizeLinear takes int8 only and it
    quantizes biases itself); weights use the full int8 range. Checked by :func:`check_trt_qdq`.
    ``calibration_cache`` works as in :func:`ort_int8_static`.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        _quantize_static(
            pre,
            out,
            feeds,
            exclude=config.exclude,
            calibration_cache=calibration_cache,
            **_trt_options(config),
        )
    check_trt_qdq(out)
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        f"explicit Q/DQ: int8 symmetric activations and {granularity} weights, zero points 0, "
        "float biases",
        f"calibration: {_count(feeds)} samples, method {config.calib_method}",
        "the engine is built on the device (edgekit build); Q/DQ layers need no precision flag",
        *pre_notes,
    ]
    if config.exclude:
        notes.append(f"kept in float (exclude): {', '.join(config.exclude)}")
    return Variant(
        name="trt-int8-qdq",
        runtime="tensorrt",
        precision="int8",
        path=out,
        techniques=["quantize:int8-static"],
        notes=notes,
        extra_files=_external_files(out),
    )


def check_trt_qdq(onnx_path: Path | str) -> dict[str, int]:
    """Check that an ONNX is an explicit-quantization model TensorRT's parser accepts: the
    Q/DQ rules of :func:`edgekit.runtimes.tensorrt.check_trt_qdq` (int8 zero points of 0, no
    int32 biases, constant scales) and no operator-oriented (QLinear*) or integer ops. Returns
    the Q and DQ counts; raises :class:`IntegrityError` naming the problems."""
    from edgekit.runtimes.tensorrt import check_trt_qdq as qdq_problems

    problems = qdq_problems(onnx_path)
    nodes = _load(onnx_path).graph.node
    problems += [
        f"{n.name}: {n.op_type} is not supported by TensorRT"
        for n in nodes
        if n.op_type.startswith("QLinear") or n.op_type in INTEGER_OPS
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise IntegrityError(
            f"{onnx_path} is not a valid TensorRT Q/DQ model: {'; '.join(problems[:5])}{more}"
        )
    counts = Counter(n.op_type for n in nodes)
    return {op: counts[op] for op in QDQ_OPS}


def quantization_summary(onnx_path: Path | str) -> dict[str, Any]:
    """What a (quantized) ONNX really contains.

    Returns counts of ``QuantizeLinear``, ``DequantizeLinear``, ``QLinear`` (all QLinear* ops),
    ``ConvInteger``, ``MatMulInteger`` and ``DynamicQuantizeLinear`` nodes;
    ``quantized_op_types`` / ``float_op_types`` (op type → count; a node is quantized when it
    is an integer op or takes a dequantized input); ``quantized_weighted`` / ``float_weighted``
    (names of Conv/ConvTranspose/Gemm/MatMul-like nodes whose weights are / are not 8-bit);
    ``int8_weight_bytes`` (bytes of 8-bit weight tensors).
    """
    from onnx import numpy_helper

    graph = _load(onnx_path).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    counts = Counter(n.op_type for n in graph.node)

    def is_8bit(name: str) -> bool:
        return name in inits and numpy_helper.to_array(inits[name]).dtype in (np.int8, np.uint8)

    def weight_source(tensor: str) -> str | None:
        """The initializer a weight comes from, through layout ops and DequantizeLinear."""
        node = producer.get(tensor)
        while node is not None and node.op_type in ("Transpose", "Reshape", "Identity"):
            tensor, node = node.input[0], producer.get(node.input[0])
        if node is not None and node.op_type == "DequantizeLinear":
            tensor = node.input[0]
        return tensor if tensor in inits else None

    quantized_types: Counter[str] = Counter()
    float_types: Counter[str] = Counter()
    quantized_weighted: list[str] = []
    float_weighted: list[str] = []
    for node in graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "DynamicQuantizeLinear":
            continue
        integer_op = node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS
        dequantized = any(
            i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input
        )
        (quantized_types if integer_op or dequantized else float_types)[node.op_type] += 1
        if node.op_type in WEIGHTED_OPS + _WEIGHTED_INTEGER_OPS and len(node.input) > 1:
            # QLinearConv/QLinearMatMul carry (x, x_scale, x_zero_point, w, ...).
            weight = weight_source(node.input[3 if node.op_type.startswith("QLinear") else 1])
            if weight is not None:  # a MatMul of two activations has no weight
                (quantized_weighted if is_8bit(weight) else float_weighted).append(node.name)

    # Weights are at least 2-D; scales and zero points are 0-D or 1-D.
    int8_bytes = sum(
        numpy_helper.to_array(t).nbytes
        for t in graph.initializer
        if is_8bit(t.name) and len(t.dims) >= 2
    )
    return {
        "QuantizeLinear": counts["QuantizeLinear"],
        "DequantizeLinear": counts["DequantizeLinear"],
        "QLinear": sum(c for t, c in counts.items() if t.startswith("QLinear")),
        "ConvInteger": counts["ConvInteger"],
        "MatMulInteger": counts["MatMulInteger"],
        "DynamicQuantizeLinear": counts["DynamicQuantizeLinear"],
        "quantized_op_types": dict(sorted(quantized_types.items())),
        "float_op_types": dict(sorted(float_types.items())),
        "quantized_weighted": quantized_weighted,
        "float_weighted": float_weighted,
        "int8_weight_bytes": int(int8_bytes),
    }
