"""Measure a set of model variants side by side: outputs on real held-out data (metric and
fidelity vs the fp32 baseline), interleaved latency per batch size, and peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.benchmarks.accuracy import Outputs, OutputSpec, detect
from edgekit.benchmarks.gate import Budget, OutputJudge, Verdict, decide
from edgekit.benchmarks.report import Report, VariantRow
from edgekit.errors import BadInputError, error_line
from edgekit.io.data import Dataset
from edgekit.io.extents import Extents, find_extents

EVAL_BATCH = 64
# Medians within ±5 % of fp32 are reported as "same speed": closer than this machine's run-to-run noise.
SAME_SPEED = 0.05
MAX_SAMPLES = 5000  # raw latency samples kept per variant in the report


Candidate = Artifact  # the name callers used before the one artifact type
__all__ = ["Artifact", "Candidate", "OutputJudge", "Verdict", "measure", "fill", "recommend", "run_outputs"]


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


def dynamic_axes(runtime: Any) -> dict[str, list[int]]:
    """The axes of each model input that are not fixed numbers (the batch axis included)."""
    return {s.name: [i for i, d in enumerate(s.shape) if not isinstance(d, int)] for s in runtime.inputs}


def extents_for(runtime: Any, data: Dataset) -> Extents | None:
    """Each sample's real extent for ``runtime``'s inputs (attention mask or ``<input>_length``)."""
    names = [s.name for s in runtime.inputs]
    return find_extents(data.bind(names), data.bind_lengths(names), dynamic_axes(runtime))


def _valid_positions(out: np.ndarray, feed: dict[str, np.ndarray], ext: Extents, rows: np.ndarray) -> np.ndarray:
    """Real positions along axis 1 of a batch's output ``(B, T, …)``: the attention mask when the
    output keeps the input's positions, else each sample's extent scaled to the output's T."""
    t_out = out.shape[1]
    width = ext.width(feed) or max(int(ext.lengths[rows].max(initial=1)), 1)
    if ext.mask is not None and feed[ext.mask].shape[1] == t_out:
        return feed[ext.mask] != 0
    count = np.ceil(ext.lengths[rows] * t_out / width - 1e-9).astype(np.int64)
    return np.arange(t_out)[None, :] < np.clip(count, 1, t_out)[:, None]


def run_outputs(runtime: Any, data: Dataset, *, batch: int = EVAL_BATCH) -> Outputs:
    """The first output of ``runtime`` on every sample of ``data``, in the data's order.

    With variable-length samples (an attention mask or ``<input>_length``) the samples are sorted
    by length and each batch is cropped to its longest real sample, so padding is not computed;
    the outputs keep which of their positions are real (:class:`Outputs`; the others hold 0)."""
    names = [s.name for s in runtime.inputs]
    arrays = data.bind(names)
    ext = extents_for(runtime, data)
    if ext is None:
        parts = [
            np.asarray(runtime.run({k: v[i : i + batch] for k, v in arrays.items()})[0])
            for i in range(0, len(data), batch)
        ]
        return Outputs(np.concatenate(parts, axis=0))
    order = np.argsort(ext.lengths, kind="stable")
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for i in range(0, len(order), batch):
        rows = order[i : i + batch]
        feed = ext.crop({k: v[rows] for k, v in arrays.items()}, rows)
        out = np.asarray(runtime.run(feed)[0])
        if out.ndim >= 3 and out.shape[0] != len(rows) and out.shape[1] == len(rows):
            out = np.swapaxes(out, 0, 1)  # time-major (T, B, C) → (B, T, C)
        valid = _valid_positions(out, feed, ext, rows) if out.ndim >= 3 else None
        chunks.append((rows, out, valid))
    first = chunks[0][1]
    if first.ndim < 3:
        values = np.empty((len(data), *first.shape[1:]), dtype=first.dtype)
        for rows, out, _ in chunks:
            values[rows] = out
        return Outputs(values)
    t_max = max(out.shape[1] for _, out, _ in chunks)
    values = np.zeros((len(data), t_max, *first.shape[2:]), dtype=first.dtype)
    valid_all = np.zeros((len(data), t_max), dtype=bool)
    for rows, out, valid in chunks:
        assert valid is not None  # every chunk of a 3-D output has its valid positions
        values[rows, : out.shape[1]] = np.where(valid.reshape(*valid.shape, *[1] * (out.ndim - 2)), out, 0)
        valid_all[rows, : out.shape[1]] = valid
    return Outputs(values, valid_all)


def _shape_of(feed: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in feed.items()}


def measure(
    candidates: Sequence[Artifact],
    data: Dataset,
    *,
    baseline: str,
    budget: Budget,
    batches: Sequence[int] = (1,),
    threads: int = 1,
    thread_choices: Sequence[int] = (),
    budget_s: float = 1.0,
    with_memory: bool = True,
    output: OutputSpec | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[VariantRow]:
    """Measure every artifact on ``data`` and time it: the one measuring path of compress, bench,
    search and the device check. ``baseline`` names the fp32 reference among them; ``output``
    says how the output is used (detected from the baseline's output and the data when None);
    ``batches=()`` skips timing (the gate only). Each variant is timed at every count of
    ``thread_choices`` (default: ``threads`` alone), side by side; its row keeps the fastest
    (``row.threads``) and the p50 at each. The gate (:mod:`edgekit.benchmarks.gate`) decides
    each row's ``deployable``; the rows come back in the order of ``candidates``."""
    rows = {c.name: VariantRow.of(c) for c in candidates}
    loaded, outputs = _run_all(candidates, rows, data, threads, baseline, progress)
    if baseline not in outputs:
        raise RuntimeError(f"the baseline {baseline} could not be run here")
    ref = outputs[baseline]
    spec = output or detect_output(loaded[baseline], data, ref)
    gate = OutputJudge(spec, ref, data, budget)
    decide(rows, {name: gate(out) for name, out in outputs.items()}, baseline)
    timing = _Timing(loaded, {c.name: c for c in candidates}, threads, tuple(thread_choices) or (threads,))
    for b in batches:
        _time(timing, rows, data, b, baseline, budget_s, progress)
    _speedups(rows, baseline)
    if with_memory:
        _memory(candidates, loaded, rows, data, threads, progress)
    return [rows[c.name] for c in candidates]


def _run_all(
    candidates: Sequence[Artifact], rows: dict[str, VariantRow], data: Dataset, threads: int, baseline: str,
    progress: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Outputs]]:  # fmt: skip
    """Load every artifact this machine can run and run it on ``data`` (load and first-call times
    into its row); the others are marked not measured, with the reason. A variant that fails to
    load or run is one of those; the baseline failing is an error."""
    loaded: dict[str, Any] = {}
    outputs: dict[str, Outputs] = {}
    for c in candidates:
        reason = c.unavailable or cannot_run(c.runtime)
        if reason:
            rows[c.name].measured = False
            rows[c.name].not_measured_reason = reason
            continue
        progress(f"running {c.name} on {len(data)} held-out samples")
        try:
            loaded[c.name], outputs[c.name] = _run_one(c, rows[c.name], data, threads)
        except (BadInputError, RuntimeError) as exc:
            if c.name == baseline:
                raise
            # A variant this machine's runtime cannot load or run (e.g. a precision its CPU
            # plugin refuses) is a row that says why; the others are still measured and delivered.
            rows[c.name].measured = False
            # Named as in the bundle: the file is measured in the bundle's temporary directory.
            where = error_line(exc).replace(str(c.path), c.artifact or c.path.name)
            rows[c.name].not_measured_reason = "could not run here: " + where
    return loaded, outputs


def _run_one(c: Artifact, row: VariantRow, data: Dataset, threads: int) -> tuple[Any, Outputs]:
    """Load ``c`` and run it on ``data``; its load and first-call times go into ``row``."""
    from edgekit.runtimes import runtime_for

    start = time.perf_counter()
    rt = runtime_for(c.runtime, c.precision, threads=threads).load(c.path)
    row.load_ms = (time.perf_counter() - start) * 1e3
    first = data.feed_for([s.name for s in rt.inputs], slice(0, 1))
    start = time.perf_counter()
    rt.run(first)
    row.first_inference_ms = (time.perf_counter() - start) * 1e3
    outputs = run_outputs(rt, data)
    row.describe = rt.describe()
    return rt, outputs


class _Timing:
    """The loaded variants at each thread count they are timed at: the runtime the gate ran (at
    ``threads``) and, loaded once on first use, one per other count of ``choices``."""

    def __init__(self, loaded: dict[str, Any], artifacts: dict[str, Artifact], threads: int, choices: tuple[int, ...]):
        self.loaded, self.artifacts, self.threads = loaded, artifacts, threads
        self.choices = tuple(sorted(set(choices)))
        self._more: dict[tuple[str, int], Any] = {}

    def runtime(self, name: str, threads: int) -> Any:
        if threads == self.threads:
            return self.loaded[name]
        if (name, threads) not in self._more:
            from edgekit.runtimes import runtime_for

            c = self.artifacts[name]
            self._more[name, threads] = runtime_for(c.runtime, c.precision, threads=threads).load(c.path)
        return self._more[name, threads]


def _time(
    timing: _Timing, rows: dict[str, VariantRow], data: Dataset, b: int, baseline: str, budget_s: float,
    progress: Callable[[str], None],
) -> None:  # fmt: skip
    """Time every loaded variant at batch ``b`` and every thread count, interleaved, into its row
    (the fastest count's figures)."""
    from edgekit.benchmarks import latency as lat

    fns, shapes, key = {}, {}, {}
    for name, rt in timing.loaded.items():
        bound = data.bind([s.name for s in rt.inputs])
        feeds = lat.feeds_from(bound, batch=b, n_feeds=8, seed=0, extents=extents_for(rt, data))
        shapes[name] = _shape_of(feeds[0])
        for t in timing.choices:
            key[name, t] = f"{name}@{t}"
            fns[key[name, t]] = lat.cycle(timing.runtime(name, t), feeds)
    ext = extents_for(timing.loaded[baseline], data)
    at = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes[baseline].items())
    how = f"real samples cropped to the median length: {at}" if ext is not None else at
    counts = "" if len(timing.choices) == 1 else f" at {'/'.join(map(str, timing.choices))} threads"
    progress(f"timing {len(timing.loaded)} variants{counts} at batch {b}, interleaved ({how})")
    stats = lat.measure(fns, batch=b, budget_s=budget_s)
    for name in timing.loaded:
        p50 = {t: stats[key[name, t]].p50 for t in timing.choices}
        best = min(timing.choices, key=lambda t: (p50[t], t != timing.threads))
        s = stats[key[name, best]]
        entry = {**s.as_dict(), "shape": shapes[name], "threads": best}
        if len(timing.choices) > 1:
            entry["p50_by_threads"] = {str(t): v for t, v in p50.items()}
        rows[name].latency_by_batch[str(b)] = entry
        if rows[name].latency_ms is None:
            rows[name].latency_ms = entry
            rows[name].latency_samples_ms = _kept(s.samples_ms)
            rows[name].throughput_ips = s.throughput_ips
            rows[name].threads = best
            if best != timing.threads:  # what the runtime says it ran, as timed
                rows[name].describe = timing.runtime(name, best).describe()


def _memory(
    candidates: Sequence[Artifact], loaded: dict[str, Any], rows: dict[str, VariantRow], data: Dataset, threads: int,
    progress: Callable[[str], None],
) -> None:  # fmt: skip
    """Peak memory of every loaded variant, each in a child process, into its row."""
    from edgekit.benchmarks.memory import peak_rss

    for c in candidates:
        if c.name in loaded:
            progress(f"peak memory of {c.name}")
            rt = loaded[c.name]
            feed = data.feed_for([s.name for s in rt.inputs], slice(0, 1))
            ext = extents_for(rt, data.head(1))
            if ext is not None:
                feed = ext.crop(feed, slice(0, 1))
            at = rows[c.name].threads or threads
            peak = peak_rss(c.runtime, c.path, feed, threads=at, precision=c.precision)
            rows[c.name].peak_rss_mb = peak["peak_rss_mb"]


def detect_output(
    runtime: Any, data: Dataset, ref: Outputs | None = None, meta: dict[str, Any] | None = None
) -> OutputSpec:
    """The output kind of the model ``runtime`` runs, from its output on ``data`` (a few samples
    suffice) and its metadata."""
    ref = ref if ref is not None else run_outputs(runtime, data)
    names = [s.name for s in runtime.inputs]
    ext = extents_for(runtime, data)
    out_spec = runtime.outputs[0] if runtime.outputs else None
    return detect(
        ref,
        has_mask=ext is not None and ext.mask is not None,
        labels=data.labels,
        meta=meta,
        data_meta=dict(data.meta),
        output_dtype=out_spec.dtype if out_spec is not None and names else None,
    )


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


def recommend(
    rows: Sequence[VariantRow], runtime: str | None, baseline: VariantRow | None = None
) -> tuple[str | None, str]:
    """The fastest deployable, measured variant on the target's runtime (smaller file on a tie).

    fp32 is always a candidate: the ``baseline`` row competes too, so the answer is never empty
    when the baseline was timed; when no compressed variant is both faithful and faster, the
    fastest deployable fp32 row is recommended and the reason says why."""
    timed = [r for r in rows if r.deployable and r.measured and r.latency_ms]
    if baseline is not None and baseline.latency_ms and all(r is not baseline for r in timed):
        timed.append(baseline)
    pool = [r for r in timed if runtime is None or r.runtime == runtime] or timed
    if not pool:
        return None, "no variant could be timed on this machine"
    best = min(pool, key=lambda r: (round(r.latency_ms["p50"], 3), r.size_bytes or 0))  # type: ignore[index]
    reason = f"fastest variant that passed the gate on {best.runtime}: p50 {best.latency_ms['p50']:.3f} ms"  # type: ignore[index]
    if best.speedup_vs_fp32_same_runtime is not None and best.precision != "fp32":
        reason += f", {best.speedup_vs_fp32_same_runtime:.2f}× fp32 on the same runtime"
    if best.precision == "fp32" and not best.techniques:
        compressed = [r for r in rows if r.measured and (r.techniques or r.precision != "fp32")]
        passed = [r for r in compressed if r.deployable]
        if not compressed:
            reason += "; fp32 is the baseline candidate (no compressed variant could be measured here)"
        elif not passed:
            reason += "; fp32 recommended: no compressed variant passed the fidelity gate"
        else:
            reason += "; fp32 recommended: no compressed variant was both faithful and faster here"
    return best.name, reason


def fill(
    report: Report,
    candidates: Sequence[Candidate],
    data: Dataset,
    *,
    target_runtime: str | None,
    budget: Budget,
    output: OutputSpec | None = None,
    **measure_options: Any,
) -> None:
    """Measure ``candidates`` (the first is the fp32 baseline) into ``report``: rows, the
    output kind and the rules that judged them, the recommendation for ``target_runtime``, and a
    warning for every variant slower than fp32."""
    from edgekit.runtimes import get_runtime

    probe = get_runtime(candidates[0].runtime, threads=1).load(candidates[0].path)
    if output is None:
        output = detect_output(probe, data.head(EVAL_BATCH))
        measure_options.get("progress", lambda _m: None)(f"output kind: {output.summary()}")
    rows = measure(candidates, data, baseline=candidates[0].name, budget=budget, output=output, **measure_options)
    report.baseline, report.variants = rows[0], rows[1:]
    base_metric = rows[0].metric["name"] if rows[0].metric else None
    report.model["output_kind"] = output.kind
    report.model["output"] = output.as_dict()
    report.budget = budget.describe(base_metric, output.kind, output.metric)
    ext = extents_for(probe, data)  # along the axes the model declares dynamic, as timed
    if ext is not None:
        report.data["extents"] = ext.describe()  # real lengths: min / median (timed) / max
    report.recommended, report.recommendation_reason = recommend(report.variants, target_runtime, report.baseline)
    for r in report.variants:
        if r.slower_than_fp32:
            report.warnings.append(
                f"{r.name} is slower than fp32 on {r.runtime} on this machine (×{r.speedup_vs_fp32_same_runtime:.2f})"
            )
