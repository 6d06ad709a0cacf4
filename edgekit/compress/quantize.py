"""INT8 post-training quantization of the exported fp32 ONNX, one variant per runtime.

- ONNX Runtime: static QDQ (calibrated activations) or dynamic (MatMul/Gemm only), see
  :mod:`edgekit.compress.quantize_ort`.
- OpenVINO: IR quantized by NNCF, see :mod:`edgekit.compress.quantize_ov`.
- TensorRT: an explicit, symmetric Q/DQ ONNX that the device turns into an engine, see
  :mod:`edgekit.compress.quantize_trt`.

A graph with attention blocks (:mod:`edgekit.export.patterns`) gets the transformer scheme:
SmoothQuant + MatMul/Gemm-only symmetric QDQ on ONNX Runtime, NNCF ``ModelType.TRANSFORMER`` on
OpenVINO, and ``ort-int8-dynamic-matmul`` as an extra candidate; every other model is quantized
exactly as before (same bytes). Each variant's notes start with ``scheme: …`` (also in
``ctx.records["quantize:int8"]["variants"][name]["scheme"]``). On a CPU with native bf16 the
OpenVINO fp32 IR is also offered as ``ov-bf16``.

Calibration uses the first ``calib_size`` samples of ``ctx.calib`` in order, one sample per
feed, so the same data set always gives byte-identical files.

Under an accuracy budget (``ctx.budget``, from ``--max-drop`` and the fidelity thresholds) the
static variants come from :class:`edgekit.compress.budget_search.BudgetSearch`, which keeps the
most sensitive layers in float until each variant is within budget; the choice is recorded in
``ctx.records["budget"]`` and in each variant's notes.

What differs per runtime (which backend function quantizes for it, where its files go, how its
artifacts are inspected) comes from its :class:`~edgekit.compress.backend.RuntimeBackend` in
``ctx.backends``: this module dispatches on nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import PartialBuild
from edgekit.compress.backend import RuntimeBackend, check_runtimes, graph_step_backends
from edgekit.compress.base import Context, Variant, register
from edgekit.compress.calibration import calibration_facts, calibration_feeds, model_inputs
from edgekit.compress.qdq_summary import quantization_summary
from edgekit.compress.quantize_ov import ov_fp32_ir, ov_quantized_ops
from edgekit.errors import BadInputError
from edgekit.export.trt_qdq import check_trt_qdq

__all__ = [
    "Int8Config",
    "calibration_feeds",
    "check_trt_qdq",
    "model_inputs",
    "ov_fp32_ir",
    "ov_quantized_ops",
    "quantization_summary",
]


MODES = ("static", "dynamic")
CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_SCHEMES = ("auto", "cnn", "transformer")


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
        check_runtimes("Int8Config", self.runtimes)
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
            raise BadInputError(f"calib_size={self.calib_size!r} must be a positive integer (e.g. 300)")
        for name in self.exclude:
            if not isinstance(name, str) or not name:
                raise BadInputError(f"exclude must list ONNX node names (strings), got {name!r}")


@register(Int8Config, "graph")
def _int8(config: Int8Config, onnx_path: Path, ctx: Context) -> list[Variant]:
    """Quantize ``onnx_path`` to INT8 for each runtime of ``config``, into ``ctx.workdir``."""
    onnx_path, backends, chosen = graph_step_backends(
        onnx_path, ctx.backends, config.runtimes, lambda b: b.int8 is not None or b.int8_dynamic is not None,
        "quantize to INT8",
    )  # fmt: skip
    workdir = Path(ctx.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    feeds: list[dict[str, np.ndarray]] = []
    calib_notes: list[str] = []
    record: dict[str, Any] = ctx.records.setdefault("quantize:int8", {"variants": {}})
    if any(not _dynamic(config, b) for b in chosen):
        feeds = calibration_feeds(ctx.calib, onnx_path, config.calib_size)
        facts, calib_notes = calibration_facts(feeds)
        record["calibration"] = facts
        if ctx.calib.directional_only:
            calib_notes.append("calibrated on generated (random) samples: accuracy figures are indicative only")

    from edgekit.export.patterns import detect

    patterns = detect(onnx_path)
    record["patterns"] = patterns.as_dict()
    transformer = _transformer_reason(config, patterns.describe(), patterns.transformer)
    record["scheme"] = "transformer" if transformer else "default"
    if transformer:
        ctx.progress(f"transformer scheme: {transformer}")

    # Under an accuracy budget the static variants come from a search that keeps the most
    # sensitive layers in float (edgekit.compress.budget_search); without one, nothing changes.
    search = None
    if ctx.budget is not None and feeds:
        from edgekit.compress.budget_search import BudgetSearch

        search = BudgetSearch(config, onnx_path, feeds, ctx, transformer=transformer)
    variants: list[Variant] = []
    failed: dict[str, BaseException] = {}

    def attempt(b: RuntimeBackend, build: Any) -> None:
        """Run one runtime's part; with several runtimes, a failure stays that runtime's."""
        if b.runtime in failed:
            return
        try:
            variants.extend(build())
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:
            if len(chosen) < 2:
                raise
            failed[b.runtime] = exc

    for b in chosen:
        args = (config, b, onnx_path, workdir, ctx, feeds, search, transformer, calib_notes)
        attempt(b, lambda args=args: [_main_variant(*args)])
    for b in chosen:
        if transformer and b.int8_dynamic is not None and not _dynamic(config, b):
            attempt(b, lambda b=b: [_matmul_candidate(config, b, onnx_path, workdir, ctx, transformer)])
    from edgekit.compress.quantize_rnn import rnn_candidates

    # Recurrent layers (LSTM/GRU): ONNX Runtime candidates with dynamic INT8 on them; notes on the rest.
    rnn = partial(rnn_candidates, config, onnx_path, feeds, workdir, patterns, ctx, variants, record)
    ort = next((b for b in chosen if b.runtime == "onnxruntime"), None)
    if ort is not None:
        attempt(ort, rnn)
    else:
        variants.extend(rnn())
    for b in chosen:
        if b.int8_extras is not None:
            attempt(b, lambda b=b: b.int8_extras(onnx_path, workdir, record, ctx.progress))
    if search is not None:
        search.record()

    settings = {k: getattr(config, k) for k in config.__dataclass_fields__}
    for v in variants:
        backend = backends.get(v.runtime)
        summary = backend.summary(v.path) if backend.summary is not None else {}
        used = settings
        if search is not None and search.kept(v.name):
            used = {**settings, "exclude": (*config.exclude, *search.kept(v.name))}
        scheme = next((n for n in v.notes if n.startswith("scheme: ")), None)
        if scheme is None and v.precision in ("int8", "mixed") and backend.default_scheme:
            scheme = backend.default_scheme
            v.notes.insert(0, scheme)
        record["variants"][v.name] = {"config": used, "summary": summary, "scheme": scheme}
    if failed:
        if not variants:
            raise next(iter(failed.values()))
        raise PartialBuild(variants, failed)
    return variants


def _main_variant(
    config: Int8Config, b: RuntimeBackend, onnx_path: Path, workdir: Path, ctx: Context,
    feeds: list[dict[str, np.ndarray]], search: Any, transformer: str | None, calib_notes: list[str],
) -> Variant:  # fmt: skip
    """The runtime's INT8 variant: dynamic, or static (searched under an accuracy budget)."""
    if _dynamic(config, b):
        return _dynamic_variant(config, b, onnx_path, workdir, ctx)
    ctx.progress(f"INT8 static ({b.title}), calibrating on {len(feeds)} feeds")
    assert b.int8 is not None
    out = workdir / b.int8_out
    if search is not None:
        variant = search.run(b, out)
    else:
        variant = b.int8(config, onnx_path, feeds, out, transformer=transformer)
    variant.notes.extend(calib_notes)
    return variant


def _matmul_candidate(
    config: Int8Config, b: RuntimeBackend, onnx_path: Path, workdir: Path, ctx: Context, transformer: str
) -> Variant:
    """Dynamic INT8 on MatMul/Gemm only: the transformer candidate next to the static scheme."""
    assert b.int8_dynamic is not None
    ctx.progress(f"INT8 dynamic ({b.title}), MatMul/Gemm only: a transformer candidate")
    name = f"{b.prefix}-int8-dynamic-matmul"
    dynamic = b.int8_dynamic(config, onnx_path, workdir / b.folder / f"model.{name}.onnx", name=name)
    dynamic.notes.insert(0, f"scheme: transformer candidate (dynamic INT8, MatMul/Gemm only) — {transformer}")
    return dynamic


def _dynamic(config: Int8Config, backend: RuntimeBackend) -> bool:
    """Whether ``backend`` quantizes dynamically under ``config`` (``mode`` applies to runtimes
    that have a dynamic INT8 backend; the others are always static)."""
    return backend.int8_dynamic is not None and (config.mode == "dynamic" or backend.int8 is None)


def _dynamic_variant(config: Int8Config, b: RuntimeBackend, onnx_path: Path, workdir: Path, ctx: Context) -> Variant:
    ctx.progress(f"INT8 dynamic ({b.title}), MatMul/Gemm only")
    assert b.int8_dynamic is not None
    variant = b.int8_dynamic(config, onnx_path, workdir / b.int8_dynamic_out)
    if ctx.budget is not None:
        variant.notes.append(
            f"kept in float: {list(config.exclude)} (the accuracy-budget search covers "
            "static INT8; the gate still measures this variant)"
        )
    return variant


def _transformer_reason(config: Int8Config, found: str, is_transformer: bool) -> str | None:
    """Why the transformer scheme applies (None when it does not)."""
    if config.scheme == "cnn":
        return None
    if config.scheme == "transformer":
        return f"requested (scheme='transformer'); {found}"
    return found if is_transformer else None
