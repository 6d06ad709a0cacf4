"""OpenVINO backend: IR conversion (fp32, fp16 weights) and INT8 through NNCF.

Also :func:`ov_quantized_ops`, which says which layers of an IR really run in INT8.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compress.base import Variant
from edgekit.compress.ov_recurrent import RECURRENT_WEIGHT_INPUT, align_recurrent
from edgekit.errors import BadInputError, require

if TYPE_CHECKING:
    from edgekit.compress.backend import Int8Settings

WEIGHTED_TYPES = (
    "Convolution",
    "GroupConvolution",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
    "MatMul",
)
_DECOMPRESSION = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze")
_LAYOUT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Concat", "Split")
_LOW_BIT = ("i8", "u8", "i4", "u4")
_AUTO_NAME = re.compile(r"^(([A-Za-z][A-Za-z0-9]*)_\d+)(/.*)?$")  # (base (prefix)_N)(/suffix)

BF16_NOTE = (
    "OpenVINO's CPU plugin computes in bf16 by default on CPUs with AVX512-BF16 or AMX; "
    "compile with INFERENCE_PRECISION_HINT=f32 for fp32 arithmetic"
)


def _onnx_names(onnx_path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = {n.name for n in graph.node}
    names.update(t for n in graph.node for t in n.output)
    names.update(t.name for t in graph.input)
    names.update(t.name for t in graph.initializer)
    return names


def stable_names(model: Any, reserved: set[str]) -> None:
    """Rename the operations OpenVINO named from a process-wide counter (``Constant_39163``, and
    names built on one, such as NNCF's ``LSTMSequence_23306/fq_output_0``) to names numbered in
    graph order, so the same model always serializes to the same bytes.

    Names in ``reserved`` (the source model's own names), inputs and outputs are kept.
    """
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Result")]
    counted = {
        id(op): m
        for op in ops
        if (m := _AUTO_NAME.match(op.get_friendly_name()))
        and op.get_friendly_name() not in reserved
        and m.group(1) not in reserved  # e.g. ``Conv_3/WithoutBiases`` of an ONNX node ``Conv_3``
    }
    taken = {op.get_friendly_name() for op in ops if id(op) not in counted} | reserved
    bases: dict[str, str] = {}  # counter-numbered name → its graph-order name
    k = 0
    for op in ops:
        m = counted.get(id(op))
        if m is None or m.group(1) in bases:
            continue
        while f"{m.group(2)}_{k}" in taken:
            k += 1
        bases[m.group(1)] = f"{m.group(2)}_{k}"
        taken.add(bases[m.group(1)])
        k += 1
    for op in ops:
        m = counted.get(id(op))
        if m is not None:
            op.set_friendly_name(bases[m.group(1)] + (m.group(3) or ""))


def _convert(onnx_path: Path) -> Any:
    require("openvino")
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def _save(model: Any, onnx_path: Path, out_xml: Path, *, compress_to_fp16: bool) -> Path:
    import openvino as ov

    out_xml.parent.mkdir(parents=True, exist_ok=True)
    stable_names(model, _onnx_names(onnx_path))
    ov.save_model(model, str(out_xml), compress_to_fp16=compress_to_fp16)
    return out_xml.with_suffix(".bin")


def ov_fp32_ir(onnx_path: Path | str, out_xml: Path | str) -> Variant:
    """OpenVINO IR of the fp32 ONNX (``.xml`` + ``.bin``, fp32 weights): variant ``ov-fp32``."""
    onnx_path, out_xml = Path(onnx_path), Path(out_xml)
    model = _convert(onnx_path)
    bin_path = _save(model, onnx_path, out_xml, compress_to_fp16=False)
    return Variant(
        name="ov-fp32",
        runtime="openvino",
        precision="fp32",
        path=out_xml,
        techniques=[],
        notes=[BF16_NOTE],
        extra_files=[bin_path],
    )


def ov_fp16_ir(onnx_path: Path | str, out_xml: Path | str) -> Variant:
    """OpenVINO IR with fp16 weights: variant ``ov-fp16``."""
    onnx_path, out_xml = Path(onnx_path), Path(out_xml)
    model = _convert(onnx_path)
    bin_path = _save(model, onnx_path, out_xml, compress_to_fp16=True)
    return Variant(
        name="ov-fp16",
        runtime="openvino",
        precision="fp16",
        path=out_xml,
        techniques=["quantize:fp16"],
        notes=[
            "weights stored in fp16 (half the size); on a CPU without native fp16 arithmetic "
            "OpenVINO decompresses them at load time and computes in fp32 (or bf16, see below), "
            "so expect no speed-up there",
            BF16_NOTE,
        ],
        extra_files=[bin_path],
    )


def ov_bf16_ir(onnx_path: Path | str, out_xml: Path | str) -> Variant:
    """The fp32 IR again, run with ``INFERENCE_PRECISION_HINT=bf16``: variant ``ov-bf16``. Offer
    it only on a CPU with native bf16 (the OpenVINO runtime module checks that)."""
    variant = ov_fp32_ir(onnx_path, out_xml)
    variant.name, variant.precision, variant.techniques = "ov-bf16", "bf16", ["quantize:bf16"]
    variant.notes = [
        "same IR as ov-fp32 (fp32 weights), compiled with INFERENCE_PRECISION_HINT=bf16: "
        "OpenVINO's own default on this CPU; ov-fp32 is forced to f32",
    ]
    return variant


# OpenVINO's recurrent operations (RECURRENT_WEIGHT_INPUT: the input that holds their weights W).
# The ONNX frontend names them from a counter (``LSTMSequence_22``), not from the ONNX node, so
# they are matched to the ONNX LSTM/GRU/RNN nodes by their order.
OV_RECURRENT = tuple(RECURRENT_WEIGHT_INPUT)


def recurrent_nodes(onnx_path: Path | str) -> list[str]:
    """The ONNX LSTM/GRU/RNN node names, in graph order."""
    from edgekit.export.patterns import detect

    return [name for _op, name in detect(onnx_path).recurrent]


def _ov_names_for(exclude: tuple[str, ...], model: Any, recurrent: Sequence[str] = ()) -> list[str]:
    """OpenVINO operations that came from the named ONNX nodes (a Conv with bias becomes
    ``<name>/WithoutBiases`` + an Add named ``<name>``; the k-th of the ONNX ``recurrent`` nodes
    is the k-th recurrent operation)."""
    skip = ("Constant", "Parameter", "Result")
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in skip]
    rnn_ops = [op.get_friendly_name() for op in ops if op.get_type_name() in OV_RECURRENT]
    by_order = dict(zip(recurrent, rnn_ops, strict=False)) if len(rnn_ops) == len(recurrent) else {}
    names: list[str] = []
    for onnx_name in exclude:
        found = [
            name
            for name in (op.get_friendly_name() for op in ops)
            if name == onnx_name or name.startswith(onnx_name + "/")
        ] or ([by_order[onnx_name]] if onnx_name in by_order else [])
        if not found:
            shown = ", ".join(op.get_friendly_name() for op in ops[:12])
            raise BadInputError(
                f"exclude name {onnx_name!r} matches no OpenVINO operation; "
                f"name ONNX nodes such as: {shown}"
            )
        names.extend(found)
    return names


def ov_mappable(onnx_path: Path | str, names: list[str]) -> list[str]:
    """The ONNX node names among ``names`` that map to OpenVINO operations (which an NNCF
    ignored scope can then keep in float), in the order given."""
    model = _convert(Path(onnx_path))
    recurrent = recurrent_nodes(onnx_path)
    found: list[str] = []
    for name in names:
        try:
            _ov_names_for((name,), model, recurrent)
        except BadInputError:
            continue
        found.append(name)
    return found


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF draws progress bars on stdout and logs at INFO; neither belongs in a CLI's stdout."""
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


NNCF_SMOOTH_ALPHA = 0.95  # NNCF's own default for MatMul in AdvancedSmoothQuantParameters


def ov_int8(
    config: Int8Settings,
    onnx_path: Path,
    feeds: list[dict[str, np.ndarray]],
    out_xml: Path,
    *,
    transformer: str | None = None,
    calibration_cache: Path | None = None,
    align_rnn: bool = True,
) -> Variant:
    """INT8 OpenVINO IR: ``openvino.convert_model`` then ``nncf.quantize`` (default preset:
    symmetric int8 weights per channel and activations, fast bias correction).

    ``transformer`` (the reason, e.g. "attention blocks detected") switches NNCF to
    ``model_type=nncf.ModelType.TRANSFORMER`` with SmoothQuant on MatMul inputs: NNCF then
    leaves Softmax, LayerNorm and the residual path in float and migrates activation outliers
    into the weights. ``calibration_cache`` is not used: NNCF estimates its own ranges.

    INT8 LSTM/GRU sequences are then rewritten so that the CPU plugin's INT8 RNN kernel reads
    them as NNCF meant (:mod:`edgekit.compress.ov_recurrent`); ``align_rnn=False`` keeps NNCF's
    output as it is."""
    require("nncf")
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    model = _convert(onnx_path)
    recurrent = recurrent_nodes(onnx_path)
    ignored = None
    if config.exclude:
        ignored = nncf.IgnoredScope(names=_ov_names_for(config.exclude, model, recurrent))
    extra: dict[str, Any] = {}
    if transformer is not None:
        extra = {
            "model_type": nncf.ModelType.TRANSFORMER,
            "advanced_parameters": AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=NNCF_SMOOTH_ALPHA)
            ),
        }
    with _quiet_nncf():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            subset_size=len(feeds),
            ignored_scope=ignored,
            **extra,
        )
    aligned = align_recurrent(quantized, _convert(onnx_path), recurrent) if align_rnn and recurrent else []
    bin_path = _save(quantized, onnx_path, out_xml, compress_to_fp16=False)
    n = sum(len(next(iter(f.values()))) for f in feeds)
    scheme = (
        f"scheme: transformer (NNCF model_type=TRANSFORMER, SmoothQuant alpha "
        f"{NNCF_SMOOTH_ALPHA:g} on MatMul) — {transformer}"
        if transformer is not None
        else "scheme: default (NNCF default preset, every weighted layer and its inputs)"
    )
    notes = [
        scheme,
        "NNCF post-training quantization, default preset (symmetric int8 weights and activations), "
        "fast bias correction",
        f"calibration: {n} samples with NNCF's own range estimators "
        "(calib_method applies to ONNX Runtime)",
        "non-quantized operations run at OpenVINO's inference precision: " + BF16_NOTE,
    ]
    notes.extend(f"recurrent INT8: {line}" for line in aligned)
    if config.exclude:
        notes.append(f"kept in float (NNCF ignored scope): {', '.join(config.exclude)}")
    return Variant(
        name="ov-int8",
        runtime="openvino",
        precision="int8",
        path=out_xml,
        techniques=["quantize:int8-static"],
        notes=notes,
        extra_files=[bin_path],
    )


def _reaches(output: Any, target: str, through: tuple[str, ...], depth: int) -> Any:
    """The first ``target`` operation found walking up from ``output`` through ``through`` ops."""
    node = output.get_node()
    if node.get_type_name() == target:
        return node
    if depth == 0 or node.get_type_name() not in through:
        return None
    for inp in node.inputs():
        hit = _reaches(inp.get_source_output(), target, through, depth - 1)
        if hit is not None:
            return hit
    return None


def _low_bit_weight(output: Any) -> bool:
    const = _reaches(output, "Constant", _DECOMPRESSION, 5)
    return const is not None and const.get_element_type().get_type_name() in _LOW_BIT


def ov_quantized_ops(xml: Path | str) -> dict[str, Any]:
    """Which layers of an OpenVINO IR are quantized.

    Returns ``FakeQuantize`` (count), ``quantized`` (weighted layers with int8 weights and
    fake-quantized inputs: they run in INT8), ``weight_only`` (int8 weights, float inputs),
    ``float`` (neither), and ``int8_weight_bytes``. Layer names drop OpenVINO's
    ``/WithoutBiases`` suffix so they match the ONNX node names; recurrent layers keep OpenVINO's
    name (``LSTMSequence_3``).
    """
    require("openvino")
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    ops = list(model.get_ordered_ops())
    counts = Counter(op.get_type_name() for op in ops)
    quantized: list[str] = []
    weight_only: list[str] = []
    floating: list[str] = []
    for op in ops:
        weight = RECURRENT_WEIGHT_INPUT.get(op.get_type_name(), 1)
        if op.get_type_name() not in WEIGHTED_TYPES and weight == 1:
            continue
        name = op.get_friendly_name().removesuffix("/WithoutBiases")
        act_fq = _reaches(op.input(0).get_source_output(), "FakeQuantize", _LAYOUT, 4) is not None
        low_bit = _low_bit_weight(op.input(weight).get_source_output())
        (quantized if act_fq and low_bit else weight_only if low_bit else floating).append(name)
    int8_bytes = sum(
        int(np.prod(list(op.get_output_shape(0))))
        for op in ops
        if op.get_type_name() == "Constant"
        and op.get_element_type().get_type_name() in ("i8", "u8")
        and op.get_output_partial_shape(0).is_static
    )
    return {
        "FakeQuantize": counts["FakeQuantize"],
        "quantized": quantized,
        "weight_only": weight_only,
        "float": floating,
        "int8_weight_bytes": int(int8_bytes),
    }
