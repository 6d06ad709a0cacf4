"""The Pareto front of latency (lower is better) against a quality score (higher is better)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Names of the points ``(name, latency, score)`` that no other point dominates.

    A point dominates another when it is no slower and scores no lower, and is strictly better in
    one of the two. The front is returned fastest first; exact duplicates both stay on it.
    """
    out = []
    for name, lat, score in points:
        dominated = any(
            (o_lat <= lat and o_score >= score) and (o_lat < lat or o_score > score) for _, o_lat, o_score in points
        )
        if not dominated:
            out.append((lat, -score, name))
    return [name for _, _, name in sorted(out)]


def plot(
    points: Sequence[dict[str, Any]], front_names: Sequence[str], path: Path, *, score_label: str, winner: str | None
) -> Path:
    """Scatter of every measured candidate (latency vs score), the front as a step line, the
    winner circled; gate-rejected candidates drawn hollow. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"onnxruntime": "o", "openvino": "s", "torch": "^"}
    for p in points:
        ok = p["deployable"]
        ax.scatter(
            p["latency"],
            p["score"],
            marker=markers.get(p["runtime"], "D"),
            facecolors="tab:blue" if ok and not p["peer"] else "none" if not ok else "tab:orange",
            edgecolors="tab:orange" if p["peer"] else "tab:blue" if ok else "tab:red",
        )
        if p["peer"] or p["name"] in front_names:  # label what matters; the report lists every point
            ax.annotate(p["name"], (p["latency"], p["score"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    by_name = {p["name"]: p for p in points}
    on_front = [by_name[n] for n in front_names if n in by_name]
    if on_front:
        ax.step(
            [p["latency"] for p in on_front],
            [p["score"] for p in on_front],
            where="post",
            color="tab:green",
            label="Pareto front",
        )
    if winner in by_name:
        w = by_name[winner]
        ax.scatter(
            [w["latency"]], [w["score"]], s=250, facecolors="none", edgecolors="black", label=f"winner: {winner}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency p50, batch 1 (ms, log scale)")
    ax.set_ylabel(score_label)
    ax.set_title("search: latency vs quality (hollow red = rejected by the gate, orange = peer pipelines)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
