"""Latency of several variants, measured interleaved on real samples.

The machines edgekit runs on are often shared, and their speed drifts. :func:`measure` therefore
never times one variant after the other: after a warm-up it runs ``rounds`` rounds, and in each
round every variant runs a slice of its iterations (the order rotating from round to round), so
a slow period hits every variant alike. Figures are quoted as medians; compare ratios, not
absolute milliseconds across machines.

What is inside the clock is the inference alone, as the runtimes' own tools time it
(:class:`Cycle` over :meth:`Runtime.bind_for_timing`): inputs bound once per feed, the next feed
made current before the clock starts, outputs copied out after it stops; OpenVINO's sample is its
infer request's own latency, the figure ``benchmark_app`` reports (see
:mod:`edgekit.benchmarks.calibrate`, which checks the agreement).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.extents import Extents
from edgekit.runtimes.base import BoundCall


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one variant in milliseconds per call (one call = one batch)."""

    batch: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    n: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)  # every timed call, in order

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples_ms")
        return d

    @property
    def throughput_ips(self) -> float:
        """Samples per second at the median latency: ``batch * 1000 / p50``. The median, not the
        mean, so a few calls slowed by another job on the machine do not move it."""
        return self.batch * 1000.0 / self.p50 if self.p50 > 0 else math.inf


def summarize(samples_ms: Sequence[float], batch: int) -> LatencyStats:
    """Percentiles (numpy's linear interpolation), mean, sample standard deviation (n - 1) and
    minimum of per-call latencies in milliseconds."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BadInputError(f"batch must be a positive integer, got {batch!r}")
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise BadInputError("no latency samples to summarize; measure at least one call")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return LatencyStats(
        batch=batch,
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min=float(arr.min()),
        n=int(arr.size),
        samples_ms=tuple(float(x) for x in arr),
    )


def measure(
    fns: Mapping[str, Callable[[], object]],
    *,
    batch: int = 1,
    warmup: int = 10,
    budget_s: float = 2.0,
    min_iters: int = 20,
    max_iters: int = 100_000,
    rounds: int = 10,
    wall_clock: bool = False,
) -> dict[str, LatencyStats]:
    """Time each callable of ``fns`` (one inference each), interleaved; returns stats per name.

    Each function is warmed up ``warmup`` times; its per-call cost (median of the warm-up) sets
    how many calls fit in ``budget_s`` seconds, clamped to ``[min_iters, max_iters]``. Those calls
    are spread over ``rounds`` rounds; each round runs a slice of every function in turn, the
    starting function rotating each round. Total time is about ``budget_s`` times the number of
    functions. Every call is timed alone with ``perf_counter_ns``; the garbage collector is
    paused during a round, as ``timeit`` does. A :class:`Cycle` (from :func:`cycle`) is timed
    like the runtimes' own tools time a request: inputs bound beforehand, the inference alone
    inside the clock, output conversion outside it; where the runtime times its own requests
    (OpenVINO), that clock gives the sample, unless ``wall_clock`` asks for ``perf_counter_ns``
    around the Python call.
    """
    if not fns:
        raise BadInputError("nothing to measure: pass at least one function")
    settings = (("warmup", warmup, 0), ("min_iters", min_iters, 1), ("rounds", rounds, 1))
    for label, value, low in settings:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BadInputError(f"{label} must be an integer >= {low}, got {value!r}")
    if max_iters < min_iters:
        raise BadInputError(f"max_iters ({max_iters}) must be >= min_iters ({min_iters})")
    if budget_s < 0:
        raise BadInputError(f"budget_s must be >= 0, got {budget_s}")
    names = list(fns)

    per_call_ns = {name: _warm_up(fns[name], warmup) for name in names}
    per_round: dict[str, int] = {}
    for name in names:
        fitting = int(budget_s * 1e9 / max(per_call_ns[name], 1))
        total = min(max(fitting, min_iters), max_iters)
        per_round[name] = max(1, math.ceil(total / rounds))

    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _timed(fns[name], per_round[name], samples[name], wall_clock)
    return {name: summarize([ns / 1e6 for ns in samples[name]], batch) for name in names}


def _warm_up(fn: Callable[[], object], calls: int) -> float:
    """Run ``fn`` ``calls`` times (at least once) and return the median time of a whole call in ns
    (for a :class:`Cycle` with its untimed steps, which the time budget must cover too)."""
    clock = time.perf_counter_ns
    times: list[int] = []
    for _ in range(max(calls, 1)):
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times))


def _timed(fn: Callable[[], object], calls: int, out: list[float], wall_clock: bool = False) -> None:
    """Time ``calls`` calls of ``fn`` in ns. For a :class:`Cycle`, the inference alone: the next
    feed is made current before the clock starts, and a runtime that times its own requests is
    read by its clock (unless ``wall_clock``)."""
    clock = time.perf_counter_ns
    advance = fn.next if isinstance(fn, Cycle) else None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(calls):
            if advance is None:
                start = clock()
                fn()
                out.append(clock() - start)
                continue
            call = advance()
            infer = call.infer
            start = clock()
            infer()
            wall = clock() - start
            out.append(wall if wall_clock or call.elapsed_ns is None else call.elapsed_ns())
    finally:
        if was_enabled:
            gc.enable()


def feeds_from(
    dataset_arrays: Mapping[str, np.ndarray],
    batch: int,
    n_feeds: int,
    seed: int,
    extents: Extents | None = None,
) -> list[dict[str, np.ndarray]]:
    """``n_feeds`` feeds of ``batch`` real samples each, drawn without replacement within a
    feed (seeded), as contiguous arrays keyed like ``dataset_arrays`` (the model's input names:
    use ``Dataset.bind(runtime input names)``).

    With variable-length samples (``extents``) the feeds are measured as deployed: samples at
    least as long as the median real extent, cropped to it, so no padding is timed."""
    if not dataset_arrays:
        raise BadInputError("no input arrays to take latency samples from")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BadInputError(f"batch must be a positive integer, got {batch!r}")
    if n_feeds < 1:
        raise BadInputError(f"n_feeds must be at least 1, got {n_feeds}")
    lengths = {k: len(v) for k, v in dataset_arrays.items()}
    if len(set(lengths.values())) != 1:
        raise BadInputError(f"input arrays have different sample counts {lengths}")
    n = next(iter(lengths.values()))
    if n < batch:
        raise BadInputError(
            f"the data has {n} samples, fewer than the batch size {batch}; "
            "use more data or a smaller batch"
        )
    pool = np.arange(n)
    if extents is not None:
        median = extents.median()
        pool = np.nonzero(extents.lengths >= median)[0]
        if len(pool) < batch:
            pool = np.argsort(-extents.lengths, kind="stable")[:batch]
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n_feeds):
        idx = np.sort(rng.choice(pool, size=batch, replace=False))
        feed = {k: v[idx] for k, v in dataset_arrays.items()}
        if extents is not None:
            feed = extents.crop_to(feed, extents.median())
        feeds.append({k: np.ascontiguousarray(v) for k, v in feed.items()})
    return feeds


def physical_cores() -> int:
    """Physical CPU cores this process may use (SMT siblings counted once)."""
    import os

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    try:
        block: dict[str, str] = {}
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in [*f, ""]:
                if not line.strip():
                    if "core id" in block:
                        cores.add((block.get("physical id", "0"), block["core id"]))
                    block = {}
                    continue
                key, _, value = line.partition(":")
                block[key.strip()] = value.strip()
    except OSError:
        pass
    return max(1, min(len(cores) or logical, logical))


def default_threads() -> tuple[int, str]:
    """Threads a runtime uses unless ``--threads`` says otherwise, and where that number comes
    from: ``EDGEKIT_THREADS`` or ``OMP_NUM_THREADS`` when set, else the physical cores."""
    import os

    for var in ("EDGEKIT_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), var
    return physical_cores(), "physical cores"


def thread_choices(threads: int, source: str) -> tuple[int, ...]:
    """Thread counts every variant is timed at: ``threads`` alone when the user set it
    (``--threads``, ``EDGEKIT_THREADS``/``OMP_NUM_THREADS``); with the default (the physical
    cores) also one thread and half the cores. More threads are not always faster: a batch-1
    recurrent layer synchronises its threads at every time step, and on a shared machine that
    costs more than the second core gives (OpenVINO's INT8 LSTM of ``text-recognizer``)."""
    if source != "physical cores" or threads <= 1:
        return (threads,)
    return tuple(sorted({1, threads // 2, threads}))


class Cycle:
    """Round robin over the feeds of one runtime, each bound once (:meth:`Runtime.bind_for_timing`).

    :func:`measure` times only the inference: :meth:`next` makes the next feed current (untimed) and
    returns the call to time, as OpenVINO's ``benchmark_app`` times ``infer()`` alone on inputs set
    beforehand. Calling the object runs one whole inference on the next feed and returns its
    outputs, like :meth:`Runtime.run` (for callers that time or meter whole calls themselves);
    :meth:`outputs` reads again what the last inference produced."""

    def __init__(self, calls: Sequence[BoundCall]) -> None:
        self._calls = list(calls)
        self._i = -1

    def next(self) -> BoundCall:
        """Make the next feed current (untimed) and return its bound call."""
        self._i = (self._i + 1) % len(self._calls)
        call = self._calls[self._i]
        call.prepare()
        return call

    def __call__(self) -> list[np.ndarray]:
        call = self.next()
        call.infer()
        return call.read()

    def outputs(self) -> list[np.ndarray]:
        """The outputs of the last inference (copied out; never inside a timed call)."""
        if self._i < 0:
            raise BadInputError("no inference has run yet; call the cycle first")
        return self._calls[self._i].read()


def cycle(runtime: Any, feeds: Sequence[Mapping[str, np.ndarray]]) -> Cycle:
    """The feeds of ``runtime`` in round robin, validated and bound once here, so the timed call
    measures the runtime's inference, not the checks, the binding or the output copy."""
    if not feeds:
        raise BadInputError("cycle needs at least one feed")
    checked = [runtime.validate(feed) for feed in feeds]
    return Cycle([runtime.bind_for_timing(feed) for feed in checked])
