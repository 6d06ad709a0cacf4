"""INT8 post-training quantization of the exported fp32 ONNX, one variant per runtime.

- ONNX Runtime: static QDQ (calibrated activations) or dynamic (MatMul/Gemm only), see
  :mod:`edgekit.compress.quantize_ort`.
- OpenVINO: IR quantized by NNCF, see :mod:`edgekit.compress.quantize_ov`.
- TensorRT: an explicit, symmetric Q/DQ ONNX that the device turns into an engine.

A graph with attention blocks (:mod:`edgekit.export.patterns`) gets the transformer scheme:
SmoothQuant + MatMul/Gemm-only symmetric QDQ on ONNX Runtime, NNCF ``ModelType.TRANSFORMER`` on
OpenVINO, and ``ort-int8-dynamic-matmul`` as an extra candidate; every other model is quantized
exactly as before (same bytes). Each variant's notes start with ``scheme: …`` (also in
``ctx.records["quantize:int8"]["variants"][name]["scheme"]``). On a CPU with native bf16 the
OpenVINO fp32 IR is also offered as ``ov-bf16``.

Calibration uses the first ``calib_size`` samples of ``ctx.calib`` in order, one sample per
feed, so the same data set always gives byte-identical files.

Under an accuracy budget (``ctx.budget``, from ``--max-drop`` and the fidelity thresholds) the
static variants come from :class:`edgekit.compress.sensitivity.BudgetSearch`, which keeps the
most sensitive layers in float until each variant is within budget; the choice is recorded in
``ctx.records["budget"]`` and in each variant's notes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.base import Context, Variant, register
from edgekit.compress.quantize_ort import (
    check_trt_qdq,
    ort_int8_dynamic,
    ort_int8_static,
    ort_int8_static_transformer,
    quantization_summary,
    trt_int8_qdq,
)
from edgekit.compress.quantize_ov import ov_bf16_ir, ov_fp32_ir, ov_int8, ov_quantized_ops
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

__all__ = [
    "Int8Config",
    "calibration_feeds",
    "check_trt_qdq",
    "model_inputs",
    "ov_fp32_ir",
    "ov_quantized_ops",
    "quantization_summary",
]

RUNTIMES = ("onnxruntime", "openvino", "tensorrt")
MODES = ("static", "dynamic")
CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_SCHEMES = ("auto", "cnn", "transformer")
CNN_SCHEME = (
    "scheme: default (every quantizable op, activations uint8 asymmetric, weights int8 "
    "per-channel)"
)
TRT_SCHEME = (
    "scheme: TensorRT explicit Q/DQ (symmetric int8 on the inputs of weighted layers; TensorRT "
    "chooses the precision of everything else)"
)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadInputError(f"{field}={value!r} is not valid; choose one of: {', '.join(allowed)}")


@dataclass(frozen=True)
class Int8Config:
    """INT8 post-training quantization.

    ``mode`` applies to ONNX Runtime only (OpenVINO and TensorRT are always static).
    ``calib_method``, ``symmetric_activations`` and ``reduce_range`` apply to the ONNX Runtime
    variants; NNCF uses its own range estimators and preset, TensorRT is always symmetric with
    full-range weights. ``exclude`` names ONNX nodes kept in float on every runtime.

    ``scheme`` picks how: ``"auto"`` (the default) uses the transformer scheme when the graph has
    attention blocks (:func:`edgekit.export.patterns.detect`) and the default scheme otherwise;
    ``"cnn"`` and ``"transformer"`` force one. The transformer scheme is SmoothQuant
    (``smooth_alpha``) plus MatMul/Gemm-only symmetric QDQ on ONNX Runtime, NNCF
    ``ModelType.TRANSFORMER`` on OpenVINO, and adds ``ort-int8-dynamic-matmul`` as a candidate.
    ``search_minutes`` bounds the accuracy-budget search (all runtimes together);
    ``stop_when_no_faster`` stops it from keeping more layers in float once a variant is no
    faster than fp32 on this machine (turn it off when the target is another device).

    ``reduce_range`` defaults to True: ONNX Runtime's guidance for x86 CPUs without VNNI (AVX2
    only) is uint8 activations, int8 weights and 7-bit weights, because the u8×s8 multiply-add
    there saturates 16-bit intermediates. A VNNI or ARM target can pass False for 1 more bit.
    """

    runtimes: tuple[str, ...] = ("onnxruntime", "openvino")
    mode: str = "static"
    per_channel: bool = True
    calib_size: int = 300
    calib_method: str = "minmax"
    exclude: tuple[str, ...] = ()
    symmetric_activations: bool = False
    reduce_range: bool = True
    scheme: str = "auto"
    smooth_alpha: float = 0.5
    search_minutes: float = 10.0
    stop_when_no_faster: bool = True

    def __post_init__(self) -> None:
        # Recipes (TOML) give lists; keep the frozen config hashable.
        object.__setattr__(self, "runtimes", tuple(self.runtimes))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not self.runtimes:
            raise BadInputError(
                f"Int8Config needs at least one runtime; choose from: {', '.join(RUNTIMES)}"
            )
        for rt in self.runtimes:
            _check_choice("runtimes", rt, RUNTIMES)
        if len(set(self.runtimes)) != len(self.runtimes):
            raise BadInputError(f"runtimes {self.runtimes} lists a runtime twice")
        _check_choice("mode", self.mode, MODES)
        _check_choice("calib_method", self.calib_method, CALIB_METHODS)
        _check_choice("scheme", self.scheme, INT8_SCHEMES)
        if not isinstance(self.smooth_alpha, int | float) or not 0.0 <= self.smooth_alpha <= 1.0:
            raise BadInputError(f"smooth_alpha={self.smooth_alpha!r} must be between 0 and 1 (e.g. 0.5)")
        if not isinstance(self.search_minutes, int | float) or self.search_minutes <= 0:
            raise BadInputError(
                f"search_minutes={self.search_minutes!r} must be a positive number of minutes (e.g. 10)"
            )
        if not isinstance(self.calib_size, int) or self.calib_size < 1:
            raise BadInputError(
                f"calib_size={self.calib_size!r} must be a positive integer (e.g. 300)"
            )
        for name in self.exclude:
            if not isinstance(name, str) or not name:
                raise BadInputError(f"exclude must list ONNX node names (strings), got {name!r}")


def model_inputs(onnx_path: Path) -> dict[str, tuple[list[int | str], np.dtype]]:
    """The graph inputs (initializers excluded): name → (shape, symbolic dims as str; dtype)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    specs: dict[str, tuple[list[int | str], np.dtype]] = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        ttype = inp.type.tensor_type
        dims: list[int | str] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in ttype.shape.dim
        ]
        specs[inp.name] = (dims, np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)))
    return specs


def calibration_feeds(
    data: Dataset, onnx_path: Path, calib_size: int
) -> list[dict[str, np.ndarray]]:
    """The first ``calib_size`` samples of ``data`` as feeds keyed by the model's input names.

    One sample per feed (batch 1) unless the model has a fixed batch size, in which case feeds
    hold that many samples and an incomplete last group is dropped. Arrays are cast to the
    model's input types.
    """
    specs = model_inputs(onnx_path)
    if len(data) == 0:
        raise BadInputError(
            "the calibration data set is empty; pass --data with at least a few samples"
        )
    arrays = data.head(calib_size).bind(list(specs))
    batch = 1
    for dims, _ in specs.values():
        if dims and isinstance(dims[0], int) and dims[0] > 0:
            batch = dims[0]
    n = len(next(iter(arrays.values())))
    if n < batch:
        raise BadInputError(
            f"the model has a fixed batch size of {batch} but only {n} calibration samples "
            "were given; pass more samples or export the model with a dynamic batch axis"
        )
    return [
        {k: np.ascontiguousarray(arrays[k][i : i + batch], dtype=specs[k][1]) for k in specs}
        for i in range(0, n - batch + 1, batch)
    ]


def _calibration_facts(feeds: list[dict[str, np.ndarray]]) -> tuple[dict[str, object], list[str]]:
    h = hashlib.sha256()
    identical = True
    for name in sorted(feeds[0]):
        stacked = np.concatenate([f[name] for f in feeds])
        h.update(name.encode())
        h.update(stacked.tobytes())
        identical = identical and bool(np.all(stacked == stacked[:1]))
    n = sum(len(next(iter(f.values()))) for f in feeds)
    notes = []
    if identical and n > 1:
        notes.append(
            f"all {n} calibration samples are identical: activation ranges cannot be estimated; "
            "calibrate on real, varied samples"
        )
    return {"n": n, "sha256": h.hexdigest()}, notes


@register(Int8Config, "graph")
def _int8(config: Int8Config, onnx_path: Path, ctx: Context) -> list[Variant]:
    """Quantize ``onnx_path`` to INT8 for each runtime of ``config``, into ``ctx.workdir``."""
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise BadInputError(f"ONNX model {onnx_path} does not exist; export the model first")
    workdir = Path(ctx.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    needs_calib = "openvino" in config.runtimes or "tensorrt" in config.runtimes or (
        "onnxruntime" in config.runtimes and config.mode == "static"
    )
    feeds: list[dict[str, np.ndarray]] = []
    calib_notes: list[str] = []
    record: dict[str, Any] = ctx.records.setdefault("quantize:int8", {"variants": {}})
    if needs_calib:
        feeds = calibration_feeds(ctx.calib, onnx_path, config.calib_size)
        facts, calib_notes = _calibration_facts(feeds)
        record["calibration"] = facts
        if ctx.calib.directional_only:
            calib_notes.append(
                "calibrated on generated (random) samples: accuracy figures are indicative only"
            )

    from edgekit.export.patterns import detect

    patterns = detect(onnx_path)
    record["patterns"] = patterns.as_dict()
    transformer = _transformer_reason(config, patterns.describe(), patterns.transformer)
    record["scheme"] = "transformer" if transformer else "default"
    if transformer:
        ctx.progress(f"transformer scheme: {transformer}")

    # Under an accuracy budget the static variants come from a search that keeps the most
    # sensitive layers in float (edgekit.compress.sensitivity); without one, nothing changes.
    search = None
    if ctx.budget is not None and feeds:
        from edgekit.compress.sensitivity import BudgetSearch

        search = BudgetSearch(config, onnx_path, feeds, ctx, transformer=transformer)
    ort_static_out = workdir / "model.ort-int8-static.onnx"
    variants: list[Variant] = []
    for runtime in config.runtimes:
        if runtime == "onnxruntime" and config.mode == "static":
            ctx.progress(f"INT8 static (ONNX Runtime), calibrating on {len(feeds)} feeds")
            if search is not None:
                variant = search.ort_static(ort_static_out)
            elif transformer:
                variant = ort_int8_static_transformer(
                    config, onnx_path, feeds, ort_static_out, why=transformer
                )
            else:
                variant = ort_int8_static(config, onnx_path, feeds, ort_static_out)
        elif runtime == "onnxruntime":
            ctx.progress("INT8 dynamic (ONNX Runtime), MatMul/Gemm only")
            variant = ort_int8_dynamic(config, onnx_path, workdir / "model.ort-int8-dynamic.onnx")
            if ctx.budget is not None:
                variant.notes.append(
                    f"kept in float: {list(config.exclude)} (the accuracy-budget search covers "
                    "static INT8; the gate still measures this variant)"
                )
        elif runtime == "openvino":
            ctx.progress(f"INT8 (OpenVINO via NNCF), calibrating on {len(feeds)} feeds")
            out = workdir / "openvino" / "model.ov-int8.xml"
            if search is not None:
                variant = search.openvino(out)
            else:
                variant = ov_int8(config, onnx_path, feeds, out, transformer=transformer)
        else:
            ctx.progress(f"INT8 explicit Q/DQ (TensorRT), calibrating on {len(feeds)} feeds")
            out = workdir / "tensorrt" / "model.trt-int8-qdq.onnx"
            if search is not None:
                variant = search.tensorrt(out)
            else:
                variant = trt_int8_qdq(config, onnx_path, feeds, out)
        if variant.name != "ort-int8-dynamic":
            variant.notes.extend(calib_notes)
        variants.append(variant)
    if transformer and "onnxruntime" in config.runtimes and config.mode == "static":
        ctx.progress("INT8 dynamic (ONNX Runtime), MatMul/Gemm only: a transformer candidate")
        dynamic = ort_int8_dynamic(
            config, onnx_path, workdir / "model.ort-int8-dynamic-matmul.onnx",
            name="ort-int8-dynamic-matmul",
        )  # fmt: skip
        dynamic.notes.insert(0, f"scheme: transformer candidate (dynamic INT8, MatMul/Gemm only) — {transformer}")
        variants.append(dynamic)
    from edgekit.compress.quantize_rnn import rnn_candidates

    variants.extend(rnn_candidates(config, onnx_path, feeds, workdir, patterns, ctx, variants, record))
    if "openvino" in config.runtimes:
        variants.extend(_bf16_variant(onnx_path, workdir, record, ctx))
    if search is not None:
        search.record()

    settings = {k: getattr(config, k) for k in config.__dataclass_fields__}
    for v in variants:
        summary = (
            ov_quantized_ops(v.path) if v.runtime == "openvino" else quantization_summary(v.path)
        )
        used = settings
        if search is not None and search.kept(v.name):
            used = {**settings, "exclude": (*config.exclude, *search.kept(v.name))}
        scheme = next((n for n in v.notes if n.startswith("scheme: ")), None)
        if scheme is None and v.precision in ("int8", "mixed") and v.runtime != "openvino":
            scheme = CNN_SCHEME if v.runtime == "onnxruntime" else TRT_SCHEME
            v.notes.insert(0, scheme)
        record["variants"][v.name] = {"config": used, "summary": summary, "scheme": scheme}
    return variants


def _transformer_reason(config: Int8Config, found: str, is_transformer: bool) -> str | None:
    """Why the transformer scheme applies (None when it does not)."""
    if config.scheme == "cnn":
        return None
    if config.scheme == "transformer":
        return f"requested (scheme='transformer'); {found}"
    return found if is_transformer else None


def _bf16_variant(onnx_path: Path, workdir: Path, record: dict[str, Any], ctx: Context) -> list[Variant]:
    """``ov-bf16`` when the CPU computes bf16 natively; otherwise none, and the record says why."""
    from edgekit.runtimes.openvino import bf16_support

    ok, why = bf16_support()
    record["bf16"] = why
    if not ok:
        return []
    ctx.progress("OpenVINO bf16 (same IR, INFERENCE_PRECISION_HINT=bf16)")
    return [ov_bf16_ir(onnx_path, workdir / "openvino" / "model.ov-bf16.xml")]
