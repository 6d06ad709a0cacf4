"""Scores, the winner rule and the comparison with the peer pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekit.search.outcome import Outcome
from edgekit.search.space import PEERS


def score(row: Any, metric_name: str | None) -> float | None:
    if metric_name and row.metric:
        return float(row.metric["value"])
    fid = row.fidelity or {}
    for key in ("top1_agreement", "cosine", "sqnr_db"):
        if fid.get(key) is not None:
            return float(fid[key])
    return None


def score_label(metric_name: str | None) -> str:
    return f"{metric_name} on held-out data" if metric_name else "fidelity to fp32 (top-1 agreement or cosine)"


def points_of(outcomes: dict[str, Outcome], metric_name: str | None) -> list[dict[str, Any]]:
    points = []
    for o in outcomes.values():
        r = o.row
        if r is None or not r.latency_ms:
            continue
        value = score(r, metric_name)
        if value is None:
            continue
        points.append(
            {
                "name": o.spec.name,
                "runtime": o.spec.runtime,
                "latency": float(r.latency_ms["p50"]),
                "score": value,
                "deployable": bool(r.deployable),
                "peer": o.spec.peer,
            }
        )
    return points


def _p50(o: Outcome) -> float:
    return float(o.row.latency_ms["p50"])


EPS = 1e-9  # scores are compared with this tolerance


def _timed_peers(outcomes: dict[str, Outcome], metric_name: str | None) -> list[Outcome]:
    return [
        o
        for o in outcomes.values()
        if o.spec.peer and o.row is not None and o.row.latency_ms and score(o.row, metric_name) is not None
    ]


def _unbeaten_by(o: Outcome, peer: Outcome, metric_name: str | None) -> bool:
    """``o`` is at least as fast as ``peer`` and scores at least as well (the must-show condition)."""
    return (
        _p50(o) <= _p50(peer)
        and (score(o.row, metric_name) or -np.inf) >= (score(peer.row, metric_name) or np.inf) - EPS
    )


def choose(
    outcomes: dict[str, Outcome], runtimes: Sequence[str], metric_name: str | None = None
) -> tuple[str | None, list[str], str]:
    """The winner, the ranking, and a sentence saying why the winner won.

    The rule: among the candidates that passed the gate on the target's runtimes, those that are at
    least as fast as every peer pipeline measured in the same run *and* score at least as well as
    each come first (fastest first); then the rest, fastest first (smaller file on a tie). Without
    peers this is simply the fastest candidate within the budget.
    """
    pool = [
        o
        for o in outcomes.values()
        if o.status == "measured" and not o.spec.peer and o.spec.runtime in runtimes and o.row.latency_ms
    ]
    if not pool:
        return None, [], "no candidate passed the fidelity gate"
    pool.sort(key=lambda o: (round(_p50(o), 4), o.row.size_bytes or 0))
    peers = _timed_peers(outcomes, metric_name)
    unbeaten = [o for o in pool if all(_unbeaten_by(o, p, metric_name) for p in peers)]
    ranked = unbeaten + [o for o in pool if o not in unbeaten]
    best = ranked[0]
    p50 = _p50(best)
    if not peers:
        why = f"{best.spec.name} won: the fastest candidate that passed the fidelity gate (p50 {p50:.3f} ms at batch 1"
    elif unbeaten:
        why = (
            f"{best.spec.name} won: the fastest candidate within the budget that is at least as fast as every "
            f"peer pipeline and scores at least as well as each ({len(peers)} peers; p50 {p50:.3f} ms at batch 1"
        )
    else:
        names = ", ".join(p.spec.name for p in peers if not _unbeaten_by(best, p, metric_name))
        why = (
            f"{best.spec.name} won: the fastest candidate that passed the fidelity gate (p50 {p50:.3f} ms at batch 1"
            f"; no candidate was both as fast as and as accurate as every peer — it does not match {names}"
        )
    if len(ranked) > 1:
        nxt = ranked[1]
        why += f", {_p50(nxt) / p50:.2f}× the latency of the runner-up {nxt.spec.name}"
    why += ")."
    if unbeaten and peers and pool[0] is not best:
        fast = pool[0]
        short = [p.spec.name for p in peers if not _unbeaten_by(fast, p, metric_name)]
        why += (
            f" Faster and within the budget, but scoring below {', '.join(short)}: {fast.spec.name} "
            f"({_p50(fast):.3f} ms, {score(fast.row, metric_name):.4g} vs {score(best.row, metric_name):.4g})."
        )
    faster_rejected = [
        o.spec.name
        for o in outcomes.values()
        if o.status == "rejected" and not o.spec.peer and o.row.latency_ms and _p50(o) < p50
    ]
    if faster_rejected:
        why += f" Faster but rejected by the gate: {', '.join(faster_rejected)}."
    if best.spec.precision == "fp32":
        int8 = [
            o
            for o in outcomes.values()
            if o.status in ("measured", "rejected")
            and o.spec.precision in ("int8", "mixed")
            and not o.spec.peer
            and (o.spec.runtime, o.spec.stem) == (best.spec.runtime, best.spec.stem)
            and _p50(o) >= p50
        ]
        if int8:
            o = min(int8, key=_p50)
            why += (
                f" INT8 was slower than fp32 on this machine ({o.spec.name}: {_p50(o):.3f} ms vs {p50:.3f} ms), "
                "so the search keeps fp32."
            )
    return best.spec.name, [o.spec.name for o in ranked], why


def peer_rows(outcomes: dict[str, Outcome], winner: str | None, metric_name: str | None) -> list[dict[str, Any]]:
    w = outcomes.get(winner) if winner else None
    rows = []
    for name in PEERS:
        o = outcomes.get(name)
        if o is None:
            continue
        d: dict[str, Any] = {"peer": name, "status": o.status, "reason": o.reason}
        if w is not None and o.row is not None and o.row.latency_ms:
            d["peer_p50_ms"] = _p50(o)
            d["winner_p50_ms"] = _p50(w)
            d["latency_ratio"] = round(_p50(w) / _p50(o), 4)  # < 1: the winner is faster
            ws, ps = score(w.row, metric_name), score(o.row, metric_name)
            if ws is not None and ps is not None:
                d["metric_difference"] = round(ws - ps, 6)  # > 0: the winner scores higher
            d["metric"] = metric_name or "fidelity"
            d["peer_deployable"] = o.row.deployable
            if ps is not None:
                same = _fastest_at_least(outcomes, ps, metric_name)
                if same is not None:  # edgekit's fastest candidate that scores no lower than this peer
                    ratio = round(_p50(same) / _p50(o), 4)
                    d["at_equal_or_better_metric"] = {"candidate": same.spec.name, "latency_ratio": ratio}
        rows.append(d)
    return rows


def _fastest_at_least(outcomes: dict[str, Outcome], target: float, metric_name: str | None) -> Outcome | None:
    pool = [
        o
        for o in outcomes.values()
        if o.status == "measured"
        and not o.spec.peer
        and o.row.latency_ms
        and (score(o.row, metric_name) or -np.inf) >= target - EPS
    ]
    return min(pool, key=_p50) if pool else None
