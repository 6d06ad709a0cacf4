"""ONNX Runtime quantization backend: static and dynamic INT8 for the CPU, and the symmetric
explicit Q/DQ ONNX that TensorRT builds into an INT8 engine.

Also :func:`quantization_summary`, which says what a quantized ONNX really contains.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ORT's calibrator keeps every intermediate output until it computes ranges; merging the min/max
# every few feeds gives the same ranges with bounded memory.
_CALIB_CHUNK = 32


class _FeedReader:
    """ONNX Runtime ``CalibrationDataReader`` over a fixed list of feeds (duck-typed: ORT checks
    only for ``get_next``)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
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
    """Run in a fresh temporary directory as the working directory (some ORT tools leave files in cwd)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantization tools log advice through the root logger; keep it out of the CLI output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _has_external_data(onnx_path: Path) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def _node_names(onnx_path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]


def _check_exclude(exclude: tuple[str, ...], onnx_path: Path, where: str) -> None:
    if not exclude:
        return
    names = _node_names(onnx_path)
    missing = [e for e in exclude if e not in set(names)]
    if missing:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise BadInputError(f"exclude names {missing} are not nodes of the {where}; its nodes are: {shown}")


def preprocess(onnx_path: Path, out_path: Path) -> list[str]:
    """ORT's quantization pre-processing (shape inference + basic graph optimization).

    Upgrades opset < 13 first (per-channel Q/DQ needs it); falls back to skipping symbolic shape
    inference when it cannot complete. Returns notes on what was done differently.
    """
    require("onnxruntime", extra=None)
    import onnx
    from onnxruntime.quantization import quant_pre_process

    notes: list[str] = []
    src: Path = Path(onnx_path).resolve()
    out_path = Path(out_path).resolve()
    external = _has_external_data(src)
    with _in_temp_cwd() as tmp, _quiet_root_logger():
        model = onnx.load(str(src), load_external_data=False)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 13:
            from onnx import version_converter

            upgraded = version_converter.convert_version(onnx.load(str(src)), 13)
            src = tmp / "opset13.onnx"
            onnx.save(upgraded, str(src))
            notes.append(f"upgraded the ONNX opset {opset} → 13 before quantizing (per-channel Q/DQ needs it)")
        kwargs: dict[str, Any] = {"save_as_external_data": external, "all_tensors_to_one_file": True}
        try:
            quant_pre_process(str(src), str(out_path), **kwargs)
        except Exception as exc:  # ORT raises a bare Exception here
            if "Incomplete symbolic shape inference" not in str(exc):
                raise
            quant_pre_process(str(src), str(out_path), skip_symbolic_shape=True, **kwargs)
            notes.append("pre-processing skipped symbolic shape inference (it could not complete on this graph)")
    return notes


def _quantize_static(
    src: Path,
    out: Path,
    feeds: list[dict[str, np.ndarray]],
    *,
    activation_type: str,
    per_channel: bool,
    reduce_range: bool,
    calib_method: str,
    exclude: tuple[str, ...],
    extra_options: dict[str, Any],
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, out = Path(src).resolve(), Path(out).resolve()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    options = dict(extra_options)
    if calib_method == "minmax":
        options.setdefault("CalibMaxIntermediateOutputs", _CALIB_CHUNK)
    with _in_temp_cwd(), _quiet_root_logger():
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
            calibrate_method=methods[calib_method],
            calibration_providers=["CPUExecutionProvider"],
            use_external_data_format=_has_external_data(src),
            extra_options=options,
        )


def _external_files(out: Path) -> list[Path]:
    data = out.with_name(out.name + ".data")
    return [data] if data.exists() else []


def ort_int8_static(config: Int8Config, onnx_path: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> Variant:
    """Static QDQ INT8 for ONNX Runtime's CPU execution provider (uint8 activations, int8 weights)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-pre-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        notes = preprocess(onnx_path, pre)
        _check_exclude(config.exclude, pre, "pre-processed ONNX graph")
        _quantize_static(
            pre,
            out,
            feeds,
            activation_type="uint8",
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            calib_method=config.calib_method,
            exclude=config.exclude,
            extra_options={"ActivationSymmetric": config.symmetric_activations},
        )
    n = sum(len(next(iter(f.values()))) for f in feeds)
    notes = [
        "QDQ format; activations uint8"
        + (" symmetric" if config.symmetric_activations else " asymmetric")
        + ", weights int8 symmetric "
        + ("per-channel" if config.per_channel else "per-tensor")
        + " (U8S8: ONNX Runtime's recommended pairing for x86 CPUs)",
        (
            "weights use 7 bits (reduce_range) so u8×s8 products cannot saturate on x86 CPUs without VNNI"
            if config.reduce_range
            else "weights use the full 8 bits (reduce_range=False): may saturate on x86 CPUs without VNNI (AVX2 only)"
        ),
        f"calibration: {n} samples, method {config.calib_method}",
        *notes,
    ]
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


def ort_int8_dynamic(config: Int8Config, onnx_path: Path, out: Path) -> Variant:
    """Dynamic INT8 for ONNX Runtime, restricted to MatMul/Gemm.

    Dynamic Conv becomes ConvInteger, which is several times slower than fp32 on CPU, so Conv
    stays float.
    """
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    op_types = ["MatMul", "Gemm"]
    with tempfile.TemporaryDirectory(prefix="edgekit-pre-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        notes = preprocess(onnx_path, pre)
        _check_exclude(config.exclude, pre, "pre-processed ONNX graph")
        present = Counter(n.op_type for n in _load(pre).graph.node)
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
    notes = [
        "only MatMul/Gemm quantized (weights int8 "
        + ("per-channel" if config.per_channel else "per-tensor")
        + ", activations quantized at run time); Conv left float: dynamic Conv (ConvInteger) is much slower on CPU",
        *notes,
    ]
    if config.reduce_range:
        notes.append("weights use 7 bits (reduce_range) so u8×s8 products cannot saturate on x86 CPUs without VNNI")
    if not any(present[t] for t in op_types):
        notes.append("the model has no MatMul or Gemm: dynamic INT8 quantized nothing, this variant computes like fp32")
    if config.exclude:
        notes.append(f"kept in float (exclude): {', '.join(config.exclude)}")
    return Variant(
        name="ort-int8-dynamic",
        runtime="onnxruntime",
        precision="int8",
        path=out,
        techniques=["quantize:int8-dynamic"],
        notes=notes,
        extra_files=_external_files(out),
    )


def trt_int8_qdq(config: Int8Config, onnx_path: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> Variant:
    """Explicit-quantization ONNX for TensorRT: symmetric int8 Q/DQ (zero point 0 everywhere).

    Placement follows TensorRT's recommendations: Q/DQ on the inputs of weighted layers, not on
    their outputs; activations such as ReLU stay explicit so TensorRT can fuse them; biases stay
    float (TensorRT's DequantizeLinear takes int8 only and quantizes the bias itself); weights
    use the full int8 range. The result is checked with :func:`check_trt_qdq`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-pre-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        notes = preprocess(onnx_path, pre)
        _check_exclude(config.exclude, pre, "pre-processed ONNX graph")
        _quantize_static(
            pre,
            out,
            feeds,
            activation_type="int8",
            per_channel=config.per_channel,
            reduce_range=False,
            calib_method=config.calib_method,
            exclude=config.exclude,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                "QDQKeepRemovableActivations": True,
                "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
            },
        )
    check_trt_qdq(out)
    n = sum(len(next(iter(f.values()))) for f in feeds)
    notes = [
        "explicit Q/DQ, int8 symmetric activations and "
        + ("per-channel" if config.per_channel else "per-tensor")
        + " weights, zero points 0, float biases",
        f"calibration: {n} samples, method {config.calib_method}",
        "the engine is built on the device (edgekit build) from this ONNX; no precision flag is needed for Q/DQ layers",
        *notes,
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


def _load(onnx_path: Path | str) -> Any:
    import onnx

    return onnx.load(str(onnx_path))


def check_trt_qdq(onnx_path: Path | str) -> dict[str, int]:
    """Check that an ONNX is a valid explicit-quantization model for TensorRT.

    Every QuantizeLinear/DequantizeLinear must be int8 with a zero point of 0 (TensorRT's ONNX
    parser rejects anything else), and no operator-oriented or integer ops may appear.
    Returns counts; raises :class:`IntegrityError` naming the offending nodes.
    """
    from onnx import numpy_helper

    model = _load(onnx_path)
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = node.attribute[0].t
    problems: list[str] = []
    counts = Counter(n.op_type for n in model.graph.node)
    for node in model.graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS:
            problems.append(f"{node.name}: {node.op_type} is not supported by TensorRT")
        if node.op_type not in QDQ_OPS:
            continue
        if len(node.input) < 3 or node.input[2] not in consts:
            problems.append(f"{node.name}: no constant zero point (TensorRT needs an explicit int8 zero point of 0)")
            continue
        zp = numpy_helper.to_array(consts[node.input[2]])
        if zp.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {zp.dtype}, TensorRT needs int8")
        elif np.any(zp != 0):
            problems.append(f"{node.name}: zero point is not 0 (asymmetric), TensorRT needs symmetric quantization")
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            q = numpy_helper.to_array(consts[node.input[0]])
            if q.dtype != np.int8:
                problems.append(f"{node.name}: dequantizes {q.dtype} data, TensorRT accepts int8 only")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise IntegrityError(f"{onnx_path} is not a valid TensorRT Q/DQ model: {'; '.join(problems[:5])}{more}")
    return {"QuantizeLinear": counts["QuantizeLinear"], "DequantizeLinear": counts["DequantizeLinear"]}


def quantization_summary(onnx_path: Path | str) -> dict[str, Any]:
    """What a (quantized) ONNX really contains.

    Returns counts of ``QuantizeLinear``, ``DequantizeLinear``, ``QLinear*``, ``ConvInteger``,
    ``MatMulInteger`` and ``DynamicQuantizeLinear`` nodes; ``quantized_op_types`` and
    ``float_op_types`` (op type → count), where a node counts as quantized when it is an integer
    op or takes a dequantized input; ``quantized_weighted`` / ``float_weighted``: names of the
    Conv/ConvTranspose/Gemm/MatMul nodes whose weights are / are not int8; ``int8_weight_bytes``.
    """
    from onnx import numpy_helper

    model = _load(onnx_path)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    counts = Counter(n.op_type for n in graph.node)

    def int8_source(tensor: str) -> bool:
        """True when ``tensor`` is an int8/uint8 initializer, or a DequantizeLinear of one."""
        if tensor in inits:
            return numpy_helper.to_array(inits[tensor]).dtype in (np.int8, np.uint8)
        node = producer.get(tensor)
        while node is not None and node.op_type in ("Transpose", "Reshape", "Identity"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return numpy_helper.to_array(inits[node.input[0]]).dtype in (np.int8, np.uint8)
        return False

    quantized_types: Counter[str] = Counter()
    float_types: Counter[str] = Counter()
    quantized_weighted: list[str] = []
    float_weighted: list[str] = []
    for node in graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "DynamicQuantizeLinear":
            continue
        integer_op = node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS
        dequantized_input = any(
            (p := producer.get(i)) is not None and p.op_type == "DequantizeLinear" for i in node.input
        )
        if integer_op or dequantized_input:
            quantized_types[node.op_type] += 1
        else:
            float_types[node.op_type] += 1
        weighted = node.op_type in WEIGHTED_OPS or node.op_type in ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")
        if weighted:
            # The weight is input 1 except for QLinear ops (input 3).
            w = node.input[3] if node.op_type.startswith("QLinear") else node.input[1] if len(node.input) > 1 else ""
            (quantized_weighted if int8_source(w) else float_weighted).append(node.name)

    int8_bytes = sum(
        numpy_helper.to_array(t).nbytes
        for t in graph.initializer
        if t.data_type in (2, 3) and len(t.dims) >= 2  # UINT8/INT8 weights (zero points are 0-D or 1-D)
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
