"""Measure a set of model variants side by side: outputs on real held-out data (metric and
fidelity vs the fp32 baseline), interleaved latency per batch size, and peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmarks.accuracy import PRIMARY, fidelity, metric_drop, task_metrics
from edgekit.benchmarks.gate import Budget, judge
from edgekit.benchmarks.report import Report, VariantRow
from edgekit.io.data import Dataset

EVAL_BATCH = 64
# Medians within ±5 % of fp32 are reported as "same speed": closer than this machine's run-to-run noise.
SAME_SPEED = 0.05
MAX_SAMPLES = 5000  # raw latency samples kept per variant in the report


@dataclass
class Candidate:
    """A variant file to measure."""

    name: str
    runtime: str
    precision: str
    path: Path
    techniques: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    size_bytes: int | None = None
    params: int | None = None
    sparsity: float | None = None
    artifact: str | None = None  # path relative to the bundle
    unavailable: str | None = None  # why this machine cannot run it, when the file itself says so


def cannot_run(runtime: str) -> str | None:
    """Why this machine cannot run ``runtime``, or None when it can."""
    from edgekit.runtimes import available

    if runtime == "tensorrt":
        from edgekit.runtimes.tensorrt import gpu_available

        ok, _detail = gpu_available()
        if not ok:
            return "needs an NVIDIA GPU; build it on the device (tensorrt/build.sh)"
    status = available().get(runtime)
    return None if status is True else str(status)


def _outputs(runtime: Any, data: Dataset) -> np.ndarray:
    names = [s.name for s in runtime.inputs]
    arrays = data.bind(names)
    parts = []
    for i in range(0, len(data), EVAL_BATCH):
        feed = {k: v[i : i + EVAL_BATCH] for k, v in arrays.items()}
        parts.append(np.asarray(runtime.run(feed)[0]))
    return np.concatenate(parts, axis=0)


def measure(
    candidates: Sequence[Candidate],
    data: Dataset,
    *,
    baseline: str,
    budget: Budget,
    batches: Sequence[int] = (1,),
    threads: int = 1,
    budget_s: float = 1.0,
    with_memory: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[VariantRow]:
    """Measure every candidate; ``baseline`` names the fp32 reference among them."""
    from edgekit.benchmarks import latency as lat
    from edgekit.runtimes import get_runtime

    rows: dict[str, VariantRow] = {}
    loaded: dict[str, Any] = {}
    outputs: dict[str, np.ndarray] = {}
    for c in candidates:
        rows[c.name] = VariantRow(
            name=c.name,
            runtime=c.runtime,
            precision=c.precision,
            techniques=list(c.techniques),
            artifact=c.artifact,
            size_bytes=c.size_bytes,
            params=c.params,
            sparsity=c.sparsity,
            notes=list(c.notes),
        )
        reason = c.unavailable or cannot_run(c.runtime)
        if reason:
            rows[c.name].measured = False
            rows[c.name].not_measured_reason = reason
            continue
        progress(f"running {c.name} on {len(data)} held-out samples")
        start = time.perf_counter()
        rt = get_runtime(c.runtime, threads=threads).load(c.path)
        rows[c.name].load_ms = (time.perf_counter() - start) * 1e3
        first = data.feed_for([s.name for s in rt.inputs], slice(0, 1))
        start = time.perf_counter()
        rt.run(first)
        rows[c.name].first_inference_ms = (time.perf_counter() - start) * 1e3
        loaded[c.name] = rt
        outputs[c.name] = _outputs(rt, data)
        rows[c.name].describe = rt.describe()

    if baseline not in outputs:
        raise RuntimeError(f"the baseline {baseline} could not be run here")
    ref = outputs[baseline]
    metric_name = PRIMARY.get(data.task) if data.labels is not None else None
    base_metrics = task_metrics(data.task, ref, data.labels) if metric_name else {}
    for name, out in outputs.items():
        row = rows[name]
        row.fidelity = fidelity(data.task, ref, out).as_dict()
        if metric_name and data.labels is not None:
            row.metrics = task_metrics(data.task, out, data.labels)
            row.metric = {"name": metric_name, "value": row.metrics[metric_name]}
            row.metric_drop = metric_drop(metric_name, base_metrics[metric_name], row.metrics[metric_name])
        if name != baseline:
            reason = judge(budget, metric=metric_name, metric_drop=row.metric_drop, fidelity=row.fidelity)
            row.deployable = reason is None
            row.rejected_reason = reason
    for row in rows.values():
        if not row.measured:
            row.deployable = False
            row.rejected_reason = f"not verified on this machine: {row.not_measured_reason}"

    for b in batches:
        progress(f"timing {len(loaded)} variants at batch {b} (interleaved)")
        fns = {}
        for name, rt in loaded.items():
            feeds = lat.feeds_from(data.bind([s.name for s in rt.inputs]), batch=b, n_feeds=8, seed=0)
            fns[name] = lat.cycle(rt, feeds)
        stats = lat.measure(fns, batch=b, budget_s=budget_s)
        for name, s in stats.items():
            rows[name].latency_by_batch[str(b)] = s.as_dict()
            if rows[name].latency_ms is None:
                rows[name].latency_ms = s.as_dict()
                rows[name].latency_samples_ms = _kept(s.samples_ms)
                rows[name].throughput_ips = s.throughput_ips
    _speedups(rows, baseline)

    if with_memory:
        from edgekit.benchmarks.memory import peak_rss

        for c in candidates:
            if c.name in loaded:
                progress(f"peak memory of {c.name}")
                rt = loaded[c.name]
                feed = data.feed_for([s.name for s in rt.inputs], slice(0, 1))
                rows[c.name].peak_rss_mb = peak_rss(c.runtime, c.path, feed, threads=threads)["peak_rss_mb"]
    return [rows[c.name] for c in candidates]


def _kept(samples: Sequence[float]) -> list[float]:
    """The raw per-call latencies (ms, 0.1 µs resolution); beyond MAX_SAMPLES an evenly strided subset."""
    step = max(1, -(-len(samples) // MAX_SAMPLES))
    return [round(x, 4) for x in samples[::step]]


def _speedups(rows: dict[str, VariantRow], baseline: str) -> None:
    base = rows[baseline].latency_ms
    fp32_by_runtime = {
        r.runtime: r.latency_ms for r in rows.values() if r.precision == "fp32" and r.latency_ms and not r.techniques
    }
    for r in rows.values():
        if not r.latency_ms:
            continue
        if base:
            r.speedup_vs_baseline = base["p50"] / r.latency_ms["p50"]
        same = fp32_by_runtime.get(r.runtime)
        if same:
            r.speedup_vs_fp32_same_runtime = same["p50"] / r.latency_ms["p50"]
            if r.precision != "fp32" or r.techniques:
                ratio = r.speedup_vs_fp32_same_runtime
                r.slower_than_fp32 = ratio < 1.0 - SAME_SPEED
                r.speed_verdict = "slower" if r.slower_than_fp32 else "faster" if ratio > 1.0 + SAME_SPEED else "same"


def recommend(rows: Sequence[VariantRow], runtime: str | None) -> tuple[str | None, str]:
    """The fastest deployable, measured variant on the target's runtime (smaller file on a tie)."""
    pool = [
        r for r in rows if r.deployable and r.measured and r.latency_ms and (runtime is None or r.runtime == runtime)
    ]
    if not pool:
        pool_any = [r for r in rows if r.deployable and r.measured and r.latency_ms]
        if not pool_any:
            return None, "no variant passed the fidelity gate"
        pool = pool_any
    best = min(pool, key=lambda r: (round(r.latency_ms["p50"], 3), r.size_bytes or 0))  # type: ignore[index]
    reason = f"fastest variant that passed the gate on {best.runtime}: p50 {best.latency_ms['p50']:.3f} ms"  # type: ignore[index]
    if best.speedup_vs_fp32_same_runtime is not None and best.precision != "fp32":
        reason += f", {best.speedup_vs_fp32_same_runtime:.2f}× fp32 on the same runtime"
    if best.precision == "fp32" and not best.techniques:
        reason += "; no compressed variant was both faithful and faster here"
    return best.name, reason


def fill(
    report: Report,
    candidates: Sequence[Candidate],
    data: Dataset,
    *,
    target_runtime: str | None,
    budget: Budget,
    **measure_options: Any,
) -> None:
    """Measure ``candidates`` (the first is the fp32 baseline) into ``report``: rows, the
    recommendation for ``target_runtime``, and a warning for every variant slower than fp32."""
    rows = measure(candidates, data, baseline=candidates[0].name, budget=budget, **measure_options)
    report.baseline, report.variants = rows[0], rows[1:]
    report.recommended, report.recommendation_reason = recommend(report.variants, target_runtime)
    for r in report.variants:
        if r.slower_than_fp32:
            report.warnings.append(
                f"{r.name} is slower than fp32 on {r.runtime} on this machine (×{r.speedup_vs_fp32_same_runtime:.2f})"
            )
