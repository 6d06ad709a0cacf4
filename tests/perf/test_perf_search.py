"""The search's winner against the peer pipelines (stock tools' defaults), side by side.

    .venv/bin/python -m pytest tests/perf/test_perf_search.py --benchmark-enable --benchmark-group-by=group

One group, "search vs peers (digits-cnn, batch 1)": compare the winner's median with each peer's.
``edgekit search MODEL --peers`` measures the same, interleaved, and writes the ratios to its report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.benchmarks.latency import cycle, feeds_from
from edgekit.runtimes import get_runtime

pytestmark = pytest.mark.slow

ROLES = [
    "winner",
    "peer:ort-quantize_static",
    "peer:ort-quantize_dynamic",
    "peer:nncf-quantize-openvino",
    "peer:torch-eager-fp32",
]


@pytest.fixture(scope="module")
def searched(trained, tmp_path_factory):
    from edgekit.search import search

    _, model = trained("digits-cnn")
    out = tmp_path_factory.mktemp("perf-search") / "digits.search"
    return search(
        model,
        out=out,
        graphs=("int8-static",),
        prune_ratios=(0.3,),  # pruned gently (fine-tuned at lr 1e-3): on digits-cnn it kept the accuracy
        prune_lrs=(1e-3,),
        distill_widths=(),
        peers=True,
        time_budget_s=0.05,
        bundle=False,
    )


@pytest.mark.parametrize("role", ROLES)
def test_search_winner_vs_peers(benchmark, searched, role: str) -> None:
    benchmark.group = "search vs peers (digits-cnn, batch 1)"
    name = searched.winner if role == "winner" else role
    row = next(c for c in searched.report["candidates"] if c["name"] == name)
    assert row["status"] in ("measured", "rejected"), row
    benchmark.extra_info["candidate"] = name
    rt = get_runtime(row["runtime"], threads=1).load(Path(searched.out) / row["artifact"])
    from edgekit import zoo

    data = zoo.load_data("digits-cnn", seed=0).test
    feeds = feeds_from(data.bind([s.name for s in rt.inputs]), batch=1, n_feeds=8, seed=0)
    out = benchmark(cycle(rt, feeds))
    assert np.asarray(out[0]).shape == (1, 10)
