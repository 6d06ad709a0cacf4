"""The accuracy-budget search over the static INT8 variants of one INT8 step.

For each runtime, :func:`~edgekit.compress.budget_fit.fit_budget` keeps the most sensitive layers
in float until the variant is within budget; how a runtime keeps a layer in float, which Q/DQ
placement ranks its layers and where its variants are measured come from its
:class:`~edgekit.compress.backend.RuntimeBackend`. Variants are judged by the judge the API layer
put in ``ctx.backends`` (the final gate's rule) and timed on the runtimes it loads.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.compress.backend import RuntimeBackend, need
from edgekit.compress.base import Context, Variant
from edgekit.compress.budget_fit import FitResult, Trial, budget_note, fit_budget
from edgekit.compress.ort_quantizer import Feeds
from edgekit.compress.sensitivity import ONE_PASS_UNIT, LayerScore
from edgekit.compress.shadow import rank_layers

if TYPE_CHECKING:
    from edgekit.benchmarks.gate import Budget
    from edgekit.compress.quantize import Int8Config

TRANSFORMER = "transformer"  # the ranking placement of the transformer scheme
UNRANKED = "not ranked: its runtime quantizes it, the ranking's Q/DQ placement does not; tried first"
RANKING_METHOD = (
    "one pass: beside each quantized node of the fully quantized Q/DQ graph, a copy fed through "
    "its own Q/DQ from the float tensors; one run on held-out samples scores every node's output "
    "SQNR when quantized alone; the variant's "
    "own Q/DQ graph ranks for ort-int8-static, the placement on weighted-layer inputs "
    "(TensorRT's, NNCF's) for ov-int8 and trt-int8-qdq, after the recurrent layers NNCF quantizes "
    "and that placement cannot rank; then bisection on how many top-ranked "
    "layers stay float, every step measured on the variant's runtime"
)


class BudgetSearch:
    """The accuracy-budget search for the static INT8 variants of one INT8 step.

    Rankings are computed only when a plain INT8 variant misses the budget, once per Q/DQ
    placement, in one pass (:func:`~edgekit.compress.shadow.rank_layers`): the runtime's own
    placement (``RuntimeBackend.placement``), or the transformer scheme's when it applies. Each
    search measures on the runtime's ``measured_in`` runtime (TensorRT's Q/DQ graph on ONNX
    Runtime: no GPU). All runtimes share one time limit, ``config.search_minutes``.
    """

    def __init__(
        self,
        config: Int8Config,
        onnx_path: Path,
        feeds: Feeds,
        ctx: Context,
        *,
        transformer: str | None = None,
    ) -> None:
        self.config, self.onnx, self.feeds, self.ctx = config, Path(onnx_path), feeds, ctx
        self.transformer = transformer
        self.budget: Budget = ctx.budget
        self.backends = need(ctx.backends)
        self.deadline = time.perf_counter() + 60.0 * config.search_minutes
        self.scratch = Path(ctx.workdir).resolve() / "budget-search"
        self.scratch.mkdir(parents=True, exist_ok=True)
        # Judge against what the final gate compares with: the source model's fp32 (before any
        # pruning or distillation), with the same threads.
        self.judge = self.backends.judge(ctx.baseline or self.onnx, ctx.eval, self.budget, ctx.threads, ctx.output)
        self.results: dict[str, FitResult] = {}
        self._rankings: dict[str, list[LayerScore]] = {}
        self._ranking_seconds: dict[str, float] = {}

    def kept(self, variant_name: str) -> tuple[str, ...]:
        """The nodes the search kept in float for ``variant_name`` (beyond ``config.exclude``)."""
        found = [r.kept for r in self.results.values() if r.variant.name == variant_name]
        return found[0] if found else ()

    def _config(self, kept: Sequence[str]) -> Int8Config:
        return dataclasses.replace(self.config, exclude=(*self.config.exclude, *kept))

    def _cache(self, scheme: str) -> Path:
        return self.scratch / f"{scheme}-ranges.json"

    def _scheme(self, backend: RuntimeBackend) -> str:
        return TRANSFORMER if self.transformer and backend.follows_transformer else backend.placement

    def ranking(self, scheme: str) -> list[LayerScore]:
        """The one-pass ranking for the Q/DQ placement ``scheme`` (one of
        :data:`~edgekit.compress.quantize_ort.SCHEMES`, or ``"transformer"``), computed once."""
        from edgekit.compress.quantize_ort import SCHEME_BUILDERS, ort_int8_static_transformer, preprocess

        if scheme not in self._rankings:
            self.ctx.progress(f"ranking layers in one pass ({scheme} Q/DQ placement)")
            start = time.perf_counter()
            folder = self.scratch / f"rank-{scheme}"
            folder.mkdir(parents=True, exist_ok=True)
            full = dataclasses.replace(self.config, exclude=())
            qdq, reference = folder / "all.onnx", folder / "float.onnx"
            cache = self._cache(scheme)
            if scheme == TRANSFORMER:
                ort_int8_static_transformer(full, self.onnx, self.feeds, qdq, calibration_cache=cache,
                                            float_copy=reference)  # fmt: skip
            else:
                SCHEME_BUILDERS[scheme](full, self.onnx, self.feeds, qdq, calibration_cache=cache)
                preprocess(self.onnx, reference)
            self._rankings[scheme] = rank_layers(
                reference, qdq, self.ctx.eval, skip=self.config.exclude
            )
            shutil.rmtree(folder, ignore_errors=True)
            self._ranking_seconds[scheme] = time.perf_counter() - start
        return self._rankings[scheme]

    def _speed(self, backend: RuntimeBackend) -> Callable[[Variant], float | None] | None:
        """p50 latency of a variant / the fp32 reference's, batch 1 on real samples, interleaved.
        None when the variant does not run here as deployed (built on the device)."""
        if backend.device_build or not self.config.stop_when_no_faster:
            return None
        from edgekit.benchmarks.latency import cycle, feeds_from, measure

        baseline = self.ctx.baseline or self.onnx
        load, threads = self.backends.load, self.ctx.threads

        def ratio(variant: Variant) -> float | None:
            rts = {
                "fp32": load(self.backends.reference, baseline, threads),
                "variant": load(backend.runtime, variant.path, threads),
            }
            fns = {}
            for key, rt in rts.items():
                arrays = self.ctx.eval.bind([spec.name for spec in rt.inputs])
                fns[key] = cycle(rt, feeds_from(arrays, 1, 8, seed=0))
            stats = measure(fns, warmup=3, budget_s=0.3, min_iters=10, rounds=4)
            return stats["variant"].p50 / max(stats["fp32"].p50, 1e-9)

        return ratio

    def _measure(self, variant: Variant, kept: tuple[str, ...], runtime: str) -> Trial:
        v = self.judge(variant.path, runtime)
        return Trial(kept=kept, reason=v.reason, metric=v.metric, metric_drop=v.metric_drop, fidelity=v.fidelity)

    def run(self, backend: RuntimeBackend, out: Path) -> Variant:
        """``backend``'s static INT8 variant within budget, its files in ``out.parent``: its INT8
        builder keeps the chosen layers in float (``config.exclude``)."""
        assert backend.int8 is not None
        int8 = backend.int8
        scheme = self._scheme(backend)
        cache = self._cache(scheme)
        runtime = backend.measured_in or backend.runtime

        def build(kept: tuple[str, ...], folder: Path) -> Variant:
            return int8(self._config(kept), self.onnx, self.feeds, folder / out.name,
                        transformer=self.transformer, calibration_cache=cache)  # fmt: skip

        def ranking() -> list[LayerScore]:
            ranked = self.ranking(scheme)
            if backend.unranked is not None:  # quantized by this runtime, not by the ranking's Q/DQ
                first = [n for n in backend.unranked(self.onnx) if n not in self.config.exclude]
                ranked = [LayerScore(n, "recurrent", 0.0, UNRANKED) for n in first] + ranked
            if backend.keep_float is not None:
                keepable = set(backend.keep_float(self.onnx, [s.node for s in ranked]))
                ranked = [s for s in ranked if s.node in keepable]
            return ranked

        label = backend.title + (f", run by {backend.measured_in}" if backend.measured_in else "")
        result = fit_budget(
            build,
            lambda variant, kept: self._measure(variant, kept, runtime),
            ranking,
            out.parent,
            scratch=self.scratch / backend.runtime,
            progress=self.ctx.progress,
            label=f"budget search ({label})",
            deadline=self.deadline,
            speed=self._speed(backend),
        )
        self.results[backend.runtime] = result
        if backend.proxy_note:
            result.note = f"{result.note}; {backend.proxy_note}" if result.note else backend.proxy_note
        v = result.variant
        v.notes = [n for n in v.notes if not n.startswith("kept in float (")]
        v.notes.append(budget_note(result, self.config.exclude))
        if result.kept:
            v.precision = "mixed"
        return v

    def record(self) -> None:
        """Write ``ctx.records["budget"]``: the budget, and per runtime the ranking (top 10), the
        layers kept in float, what was reached and the quantize/evaluate rounds."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        rec = self.ctx.records.setdefault("budget", {})
        rec["budget"] = self.budget.describe(self.judge.metric_name)
        rec["ranking_method"] = RANKING_METHOD
        rec["search_minutes"] = self.config.search_minutes
        rec["sensitivity"] = {
            scheme: {
                "layers": len(ranked),
                "seconds": round(self._ranking_seconds[scheme], 2),
                "unit": ONE_PASS_UNIT,
            }
            for scheme, ranked in self._rankings.items()
        }
        runtimes = rec.setdefault("runtimes", {})
        for runtime, result in self.results.items():
            runtimes[runtime] = result.record()
