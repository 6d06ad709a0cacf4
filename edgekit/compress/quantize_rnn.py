"""INT8 for recurrent networks (LSTM/GRU, e.g. CRNN text recognisers) on ONNX Runtime.

Static QDQ leaves ``LSTM``/``GRU`` nodes in float: in a conv + BiLSTM recogniser most of the
time then stays fp32, and on an AVX2-only CPU the Q/DQ around the convolutions costs more than
it saves. ONNX Runtime's dynamic quantization turns ``LSTM`` into ``DynamicQuantizeLSTM`` (int8
weights, u8×s8 GEMMs, activations quantized at run time) and MatMul/Gemm into
``MatMulInteger``. When :func:`edgekit.export.patterns.detect` finds LSTM/GRU nodes, the INT8
step adds two candidates, timed and gated like every other variant:

- ``ort-int8-dynamic-rnn``: dynamic INT8 on LSTM + MatMul/Gemm; everything else float.
- ``ort-int8-rnn``: the same plus static QDQ on the convolutions (calibrated like
  ``ort-int8-static``), when the graph has any; this pays once the convs are wide enough.

ONNX Runtime has no integer GRU kernel, so a GRU stays float (the notes say so); OpenVINO's
NNCF quantizes ``LSTMSequence`` but ignores a ``GRUSequence`` with ``linear_before_reset`` (the
form PyTorch exports), which is recorded as well.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.compress.base import Variant
from edgekit.compress.ort_quantizer import (
    external_files,
    feed_count,
    has_external_data,
    in_temp_cwd,
    load_onnx,
    preprocessed,
    quantize_static,
    quiet_root_logger,
)
from edgekit.compress.quantize_ort import _static_options
from edgekit.errors import require

if TYPE_CHECKING:
    from edgekit.compress.base import Context
    from edgekit.compress.quantize import Int8Config
    from edgekit.export.patterns import GraphPatterns

Feeds = list[dict[str, np.ndarray]]

DYNAMIC_OPS = ("LSTM", "MatMul", "Gemm")
CONV_OPS = ("Conv",)
def rnn_reason(config: Int8Config, patterns: GraphPatterns) -> str | None:
    """Why the recurrent scheme applies (None when it does not): the graph has LSTM/GRU nodes,
    the scheme is ``auto`` and the transformer scheme does not already apply."""
    if config.scheme != "auto" or patterns.transformer or not patterns.rnn:
        return None
    return patterns.describe_rnn()


def scheme_text(why: str, *, convs: bool) -> str:
    """The ``scheme:`` note of a recurrent-scheme variant."""
    conv = "static QDQ on Conv (uint8 activations, int8 per-channel weights), " if convs else ""
    return (
        f"scheme: recurrent ({conv}dynamic INT8 on LSTM and MatMul/Gemm: DynamicQuantizeLSTM and "
        f"MatMulInteger, int8 weights, activations quantized at run time) — {why}"
    )


def ort_int8_rnn(
    config: Int8Config,
    onnx_path: Path,
    out: Path,
    *,
    why: str,
    feeds: Feeds | None = None,
    name: str = "ort-int8-dynamic-rnn",
) -> Variant:
    """Dynamic INT8 on LSTM + MatMul/Gemm; with ``feeds``, static QDQ on the convolutions first
    (same calibration settings as ``ort-int8-static``)."""
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with preprocessed(onnx_path, config.exclude) as (pre, pre_notes):
        present = Counter(n.op_type for n in load_onnx(pre, weights=False).graph.node)
        src = pre
        # Every conv, the shallow first one included: keeping a 1-channel first conv float was
        # measured slower (0.87× against 0.72× ORT fp32 on text-recognizer, AVX2), because the
        # MaxPool between it and the next, quantized conv then runs in uint8 NCHW.
        convs = bool(feeds) and any(present[t] for t in CONV_OPS)
        if convs:
            src = pre.with_name("convs-int8.onnx")
            quantize_static(
                pre, src, list(feeds or ()), exclude=config.exclude, op_types=CONV_OPS,
                **_static_options(config),
            )  # fmt: skip
        with in_temp_cwd(), quiet_root_logger():
            quantize_dynamic(
                str(src),
                str(out),
                op_types_to_quantize=list(DYNAMIC_OPS),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(config.exclude),
                use_external_data_format=has_external_data(src),
            )
    granularity = "per-channel" if config.per_channel else "per-tensor"
    notes = [
        scheme_text(why, convs=convs),
        f"LSTM and MatMul/Gemm: int8 {granularity} weights, activations quantized at run time",
    ]
    if convs:
        n = feed_count(list(feeds or ()))
        notes.append(f"Conv: static QDQ, calibration: {n} samples, method {config.calib_method}")
    else:
        notes.append("Conv stays float")
    if present["GRU"] or present["RNN"]:
        notes.append(
            f"{present['GRU'] + present['RNN']} GRU/RNN node(s) stay float: ONNX Runtime has no "
            "integer GRU/RNN kernel (an LSTM has one: DynamicQuantizeLSTM)"
        )
    notes.extend(pre_notes)
    if config.exclude:
        notes.append(f"kept in float (exclude): {', '.join(config.exclude)}")
    techniques = ["quantize:int8-dynamic", *(["quantize:int8-static"] if convs else [])]
    return Variant(
        name=name,
        runtime="onnxruntime",
        precision="int8",
        path=out,
        techniques=techniques,
        notes=notes,
        extra_files=external_files(out),
    )


def openvino_note(patterns: GraphPatterns) -> str:
    """What NNCF does with the recurrent layers of this graph."""
    ops = {op for op, _ in patterns.recurrent}
    parts = []
    if "LSTM" in ops:
        parts.append("NNCF quantizes LSTMSequence (inputs and weights)")
    if "GRU" in ops:
        parts.append(
            "NNCF leaves a GRUSequence with linear_before_reset (PyTorch's GRU) in float"
        )
    return "recurrent layers: " + ("; ".join(parts) or "none NNCF quantizes")


def rnn_candidates(
    config: Int8Config,
    onnx_path: Path,
    feeds: Feeds,
    workdir: Path,
    patterns: GraphPatterns,
    ctx: Context,
    made_so_far: list[Variant],
    record: dict[str, object],
) -> list[Variant]:
    """The recurrent-scheme candidates for ``onnx_path`` (none unless :func:`rnn_reason`).
    Also notes on the OpenVINO variants of ``made_so_far`` what NNCF did with the recurrent
    layers, and sets ``record["scheme"]`` to ``"recurrent"``."""
    why = rnn_reason(config, patterns)
    if why is None:
        return []
    record["scheme"] = "recurrent"
    for v in made_so_far:
        if v.runtime == "openvino" and v.precision == "int8":
            v.notes.append(openvino_note(patterns))
    if "onnxruntime" not in config.runtimes:
        return []
    ctx.progress(f"recurrent scheme: {why}; INT8 dynamic (ONNX Runtime) on LSTM + MatMul/Gemm")
    made = [ort_int8_rnn(config, onnx_path, workdir / "model.ort-int8-dynamic-rnn.onnx", why=why)]
    if feeds and any(n.op_type in CONV_OPS for n in load_onnx(onnx_path, weights=False).graph.node):
        ctx.progress("INT8 (ONNX Runtime): static QDQ on Conv + dynamic LSTM/MatMul")
        made.append(
            ort_int8_rnn(
                config, onnx_path, workdir / "model.ort-int8-rnn.onnx", why=why, feeds=feeds,
                name="ort-int8-rnn",
            )  # fmt: skip
        )
    return made
