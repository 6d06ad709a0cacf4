"""The accuracy-budget search for one variant: quantize, judge as the gate does, and keep the most
sensitive layers in float — k = 1, 2, 4, … then bisection to the smallest k within budget."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.compress.base import Variant
from edgekit.compress.sensitivity import LayerScore

SPEED_MARGIN = 0.95  # a variant is "faster" than fp32 when its p50 is below 95 % of fp32's


@dataclass
class Trial:
    """One quantize/evaluate round: the layers kept in float and what the gate saw."""

    kept: tuple[str, ...]
    reason: str | None  # the gate's rejection, None when within budget
    metric: dict[str, Any] | None
    metric_drop: float | None
    fidelity: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.reason is None

    def closeness(self) -> tuple[Any, ...]:
        """Sort key, larger = closer to the budget: pass, then metric drop, then fidelity."""
        fid = self.fidelity
        return (
            self.passed,
            -(self.metric_drop or 0.0),
            fid.get("top1_agreement") or 0.0,
            fid.get("cosine") or 0.0,
            fid.get("sqnr_db") or 0.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept_in_float": list(self.kept),
            "verdict": self.reason or "within budget",
            "metric": self.metric,
            "metric_drop": None if self.metric_drop is None else round(self.metric_drop, 4),
            "fidelity": self.fidelity,
        }



@dataclass
class FitResult:
    """What :func:`fit_budget` found for one runtime."""

    variant: Variant
    kept: tuple[str, ...]  # nodes the search kept in float (beyond the user's own exclusions)
    within_budget: bool
    trials: list[Trial]
    ranking: list[LayerScore]
    seconds: float
    note: str = ""

    @property
    def reached(self) -> Trial:
        return next(t for t in self.trials if t.kept == self.kept)

    def record(self, top: int = 10) -> dict[str, Any]:
        reached = self.reached.as_dict()
        return {
            "variant": self.variant.name,
            "kept_in_float": list(self.kept),
            "within_budget": self.within_budget,
            "reached": {k: reached[k] for k in ("verdict", "metric", "metric_drop", "fidelity")},
            "rounds": len(self.trials),
            "trials": [t.as_dict() for t in self.trials],
            "ranking": [s.as_dict() for s in self.ranking[:top]],
            "ranked_layers": len(self.ranking),
            "seconds": round(self.seconds, 2),
            "note": self.note,
        }


def _move(variant: Variant, folder: Path) -> Variant:
    """Move a variant's files (same names) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [variant.path, *variant.extra_files]
    for f in files:
        dest = folder / f.name
        if dest.exists():
            dest.unlink()
        shutil.move(str(f), dest)
    variant.path = folder / variant.path.name
    variant.extra_files = [folder / f.name for f in variant.extra_files]
    return variant


def fit_budget(
    build: Callable[[tuple[str, ...], Path], Variant],
    measure: Callable[[Variant, tuple[str, ...]], Trial],
    ranking: Callable[[], Sequence[LayerScore]],
    out_dir: Path,
    *,
    scratch: Path,
    progress: Callable[[str], None] = lambda _m: None,
    label: str = "INT8",
    deadline: float | None = None,
    speed: Callable[[Variant], float | None] | None = None,
) -> FitResult:
    """Quantize within the budget by keeping the most sensitive layers in float.

    ``build(kept, folder)`` quantizes with the nodes ``kept`` in float and writes the variant
    into ``folder``; ``measure(variant, kept)`` runs it on the held-out data and judges it;
    ``ranking()`` (called once, only when plain INT8 fails) gives the candidates, most sensitive
    first. Tries k = 0, then 1, 2, 4, … (at most all layers but one), then bisects to the
    smallest k that passes. The chosen variant's files end up in ``out_dir``; when no k passes,
    the closest variant is returned with ``within_budget=False``.

    The search also stops at ``deadline`` (a ``time.perf_counter()`` value; plain INT8 is always
    tried) and, when ``speed(variant)`` (p50 latency / fp32's) says a variant with layers in float
    is no faster than fp32, before keeping more layers in float: that cannot make it faster.
    """
    start = time.perf_counter()
    trials: list[Trial] = []
    made: list[Variant] = []
    stops: list[str] = []

    def best() -> str:
        passing = [t for t in trials if t.passed]
        if passing:
            return f"best so far: {min(len(t.kept) for t in passing)} layer(s) in float, within budget"
        closest = max(trials, key=lambda t: t.closeness())
        return f"best so far: {len(closest.kept)} layer(s) in float ({closest.reason})"

    def attempt(kept: tuple[str, ...]) -> Trial:
        variant = build(kept, scratch / f"round-{len(trials)}")
        trial = measure(variant, kept)
        trials.append(trial)
        made.append(variant)
        verdict = "within budget" if trial.passed else trial.reason
        ratio = speed(variant) if speed is not None and kept else None
        timing = "" if ratio is None else f", {ratio:.2f}× fp32 latency"
        progress(f"{label}: {len(kept)} layer(s) kept in float → {verdict}{timing}; {best()}; "
                 f"{time.perf_counter() - start:.0f} s")  # fmt: skip
        if ratio is not None and ratio >= SPEED_MARGIN:
            stops.append(
                f"stopped: with {len(kept)} layer(s) in float the variant is no faster than fp32 "
                f"({ratio:.2f}× its latency), so keeping more layers in float cannot pay"
            )
        return trial

    def may_continue() -> bool:
        if stops:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            stops.append("stopped at the search time limit (--search-minutes)")
            return False
        return True

    ranked: list[LayerScore] = []
    note = ""
    if not attempt(()).passed and may_continue():
        ranked = list(ranking())
        names = tuple(s.node for s in ranked)
        max_k = len(names) - 1
        failed, k = 0, 1
        passed_k: int | None = None
        while k <= max_k and may_continue():
            if attempt(names[:k]).passed:
                passed_k = k
                break
            failed = k
            k = max_k if k < max_k < 2 * k else 2 * k
        if passed_k is not None:
            while passed_k - failed > 1 and (deadline is None or time.perf_counter() < deadline):
                mid = (failed + passed_k) // 2
                if attempt(names[:mid]).passed:
                    passed_k = mid
                else:
                    failed = mid
        elif stops:
            pass
        elif max_k < 1:
            note = f"{len(names)} quantizable layer(s): none can stay float in an INT8 variant"
        else:
            note = (
                f"not within budget even with {max_k} of {len(names)} layers in float (one must "
                "stay INT8); kept the closest variant, which the gate rejects"
            )
    passing = [i for i, t in enumerate(trials) if t.passed]
    if passing:
        chosen = min(passing, key=lambda i: len(trials[i].kept))
    else:
        chosen = max(range(len(trials)), key=lambda i: trials[i].closeness())
    note = "; ".join(x for x in [*stops, note] if x)
    variant = _move(made[chosen], out_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    kept = trials[chosen].kept
    progress(f"{label}: kept in float: {list(kept)} ({len(trials)} round(s), "
             f"{time.perf_counter() - start:.0f} s)")  # fmt: skip
    return FitResult(
        variant=variant,
        kept=kept,
        within_budget=trials[chosen].passed,
        trials=trials,
        ranking=ranked,
        seconds=time.perf_counter() - start,
        note=note,
    )


def _reached_text(trial: Trial) -> str:
    fid = trial.fidelity
    parts = []
    if trial.metric is not None and trial.metric_drop is not None:
        parts.append(f"{trial.metric['name']} drop {trial.metric_drop:.2f}")
    if fid.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {fid['top1_agreement']:.4f}")
    parts.append(f"SQNR {fid['sqnr_db']:.1f} dB")
    return ", ".join(parts)


def budget_note(result: FitResult, user_excluded: Sequence[str] = ()) -> str:
    """The variant note: ``kept in float: [...]`` and how the search got there."""
    kept = [*user_excluded, *result.kept]
    reached = _reached_text(result.reached)
    how = f"{len(result.trials)} quantize/evaluate round(s), reached {reached}"
    if result.ranking:
        how = f"{len(result.kept)} most sensitive of {len(result.ranking)} ranked layers; {how}"
    verdict = (
        "within budget" if result.within_budget else f"NOT within budget ({result.reached.reason})"
    )
    text = f"kept in float: {kept} (accuracy-budget search: {how}; {verdict})"
    return text + (f"; {result.note}" if result.note else "")
