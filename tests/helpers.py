"""Small models and builders shared by several test files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.compress.base import Context


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextNet(nn.Module):
    """Two inputs: int64 token ids and a float mask (a masked mean over embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        return self.fc(h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1.0))


def reference_context(splits: Any, workdir: Path, *, seed: int = 0, **overrides: Any) -> Context:
    """A technique context over a reference model's splits (train, calibration, held-out test)."""
    args: dict[str, Any] = dict(
        workdir=workdir, calib=splits.calib, eval=splits.test, train=splits.train, seed=seed, task="classification"
    )
    args.update(overrides)
    return Context(**args)


def check_thread_counts(bundle: Path) -> list[int]:
    """The report and the manifest say which thread count each variant's figures (and its
    deployment) are from: the fastest of those tried, whose p50 at each is kept."""
    from edgekit.benchmarks.latency import thread_choices

    r = json.loads((bundle / "report.json").read_text())
    tried = r["machine"]["threads_tried"]
    assert tried == list(thread_choices(r["machine"]["threads_used"], r["machine"]["threads_source"]))
    m = json.loads((bundle / "manifest.json").read_text())
    deployed = {v["name"]: v.get("threads") for v in m["variants"]}
    for row in [r["baseline"], *r["variants"]]:
        if not row["latency_ms"]:
            assert row["name"] not in deployed or deployed[row["name"]] is None  # not timed: no count claimed
            continue
        assert row["threads"] in tried and deployed[row["name"]] == row["threads"]
        if len(tried) > 1:
            by_threads = row["latency_ms"]["p50_by_threads"]
            assert sorted(map(int, by_threads)) == tried
            assert row["latency_ms"]["p50"] == min(by_threads.values()) == by_threads[str(row["threads"])]
    md = (bundle / "report.md").read_text()
    assert ("| thr |" in md) == (len(tried) > 1)
    return tried
