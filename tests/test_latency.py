"""Latency statistics, interleaved measurement, real-sample feeds and the peak-memory probe.

No assertion here depends on how fast the machine is."""

from __future__ import annotations

import resource
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.benchmarks.latency import LatencyStats, cycle, feeds_from, measure, summarize
from edgekit.benchmarks.memory import peak_rss
from edgekit.errors import BadInputError
from edgekit.runtimes import get_runtime


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)  # 1797 real samples, 64 features


def mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def export(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export pytree notices
        torch.onnx.export(
            model, (torch.zeros(2, 64),), str(path), input_names=["x"], output_names=["y"],
            dynamo=True, external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = mlp([64, 1024, 1024, 10])  # 1.1 M parameters
    return export(model, tmp_path_factory.mktemp("lat") / "small.onnx")


# ------------------------------------------------------------------------------- summarize
def test_summarize_known_samples() -> None:
    samples = [float(v) for v in range(1, 102)]  # 1 .. 101 ms
    s = summarize(samples, batch=4)
    assert (s.p50, s.p90, s.p99, s.mean, s.min, s.n) == (51.0, 91.0, 100.0, 51.0, 1.0, 101)
    assert s.std == pytest.approx(statistics.stdev(samples))
    assert s.throughput_ips == pytest.approx(4 * 1000 / 51.0)


def test_summarize_interpolates_between_samples() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0], batch=1)  # order does not matter
    assert (s.p50, s.p90, s.p99) == pytest.approx((2.5, 3.7, 3.97))
    assert s.min == 1.0 and s.mean == 2.5


def test_as_dict_has_the_report_keys() -> None:
    d = summarize([2.0, 2.0, 2.0], batch=8).as_dict()
    assert {"batch", "p50", "p90", "p99", "mean", "n"} <= set(d)
    assert d["batch"] == 8 and d["std"] == 0.0
    assert LatencyStats(**d) == summarize([2.0, 2.0, 2.0], batch=8)


@pytest.mark.parametrize("samples,batch", [([], 1), ([1.0], 0), ([1.0], True)])
def test_summarize_rejects(samples: list[float], batch: int) -> None:
    with pytest.raises(BadInputError):
        summarize(samples, batch)


# ------------------------------------------------------------------------------- measure
def recorder(log: list[str], name: str):  # noqa: ANN201
    return lambda: log.append(name)


def test_measure_interleaves_variants_and_rotates_the_order() -> None:
    log: list[str] = []
    fns = {n: recorder(log, n) for n in "abc"}
    # budget 0: every variant gets exactly min_iters calls, 2 per round
    stats = measure(fns, batch=1, warmup=2, budget_s=0.0, min_iters=6, max_iters=6, rounds=3)
    warm = list("aabbcc")
    rounds = list("aabbcc") + list("bbccaa") + list("ccaabb")
    assert log == warm + rounds
    assert {n: s.n for n, s in stats.items()} == {"a": 6, "b": 6, "c": 6}
    assert all(s.min >= 0 and s.p50 <= s.p99 for s in stats.values())


def test_measure_gives_each_variant_the_same_share_of_rounds() -> None:
    log: list[str] = []
    stats = measure({"fast": recorder(log, "fast"), "slow": recorder(log, "slow")},
                    warmup=1, budget_s=0.0, min_iters=10, max_iters=10, rounds=5)
    timed = log[2:]
    blocks = [timed[i : i + 2] for i in range(0, len(timed), 2)]
    assert all(len(set(b)) == 1 for b in blocks)  # slices of 2 calls
    assert [b[0] for b in blocks] == ["fast", "slow", "slow", "fast"] * 2 + ["fast", "slow"]
    assert stats["fast"].n == stats["slow"].n == 10


def test_measure_clamps_iterations() -> None:
    log: list[str] = []
    # a huge budget is capped by max_iters ...
    fns = {"a": recorder(log, "a")}
    assert measure(fns, warmup=0, budget_s=1e6, min_iters=5, max_iters=30, rounds=3)["a"].n == 30
    # ... and no budget still gives min_iters, rounded up to whole rounds (3 rounds of 3)
    assert measure(fns, warmup=0, budget_s=0.0, min_iters=7, max_iters=100, rounds=3)["a"].n == 9


@pytest.mark.parametrize(
    "kwargs",
    [{"rounds": 0}, {"warmup": -1}, {"min_iters": 0}, {"min_iters": 10, "max_iters": 5},
     {"budget_s": -1.0}],
)
def test_measure_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(BadInputError):
        measure({"a": lambda: None}, **kwargs)
    with pytest.raises(BadInputError):
        measure({})


# ------------------------------------------------------------------------------- feeds
def test_feeds_are_real_samples(digits: np.ndarray) -> None:
    feeds = feeds_from({"x": digits}, batch=4, n_feeds=6, seed=1)
    assert len(feeds) == 6
    rows = {r.tobytes() for r in digits}
    for feed in feeds:
        x = feed["x"]
        assert x.shape == (4, 64) and x.dtype == np.float32 and x.flags.c_contiguous
        assert all(r.tobytes() in rows for r in feed["x"])
        assert np.abs(feed["x"]).sum() > 0
    again = feeds_from({"x": digits}, batch=4, n_feeds=6, seed=1)
    assert all((a["x"] == b["x"]).all() for a, b in zip(feeds, again, strict=True))
    other = feeds_from({"x": digits}, batch=4, n_feeds=6, seed=2)
    assert any((a["x"] != b["x"]).any() for a, b in zip(feeds, other, strict=True))


def test_feeds_keep_multi_input_rows_aligned() -> None:
    ids = np.arange(50, dtype=np.int64)[:, None].repeat(3, axis=1)
    mask = (ids % 2).astype(np.int64)
    for feed in feeds_from({"input_ids": ids, "attention_mask": mask}, batch=5, n_feeds=3, seed=0):
        assert feed["input_ids"].dtype == np.int64
        np.testing.assert_array_equal(feed["attention_mask"], feed["input_ids"] % 2)


def test_feeds_reject_bad_input(digits: np.ndarray) -> None:
    with pytest.raises(BadInputError, match="fewer than the batch"):
        feeds_from({"x": digits[:3]}, batch=4, n_feeds=1, seed=0)
    with pytest.raises(BadInputError, match="different sample counts"):
        feeds_from({"a": digits[:10], "b": digits[:9]}, batch=2, n_feeds=1, seed=0)
    with pytest.raises(BadInputError):
        feeds_from({}, batch=1, n_feeds=1, seed=0)


def test_cycle_rotates_feeds_on_a_real_runtime(small_onnx: Path, digits: np.ndarray) -> None:
    rt = get_runtime("onnxruntime").load(small_onnx)
    feeds = feeds_from({"x": digits}, batch=2, n_feeds=3, seed=0)
    call = cycle(rt, feeds)
    expected = [rt.run(f)[0] for f in feeds]
    for i in range(6):
        call()
        np.testing.assert_array_equal(call.outputs()[0], expected[i % 3])
    stats = measure(
        {"mlp": call}, batch=2, warmup=1, budget_s=0.0, min_iters=4, max_iters=4, rounds=2
    )
    assert stats["mlp"].n == 4 and stats["mlp"].batch == 2 and stats["mlp"].p50 > 0


def test_cycle_validates_feeds_up_front(small_onnx: Path, digits: np.ndarray) -> None:
    rt = get_runtime("onnxruntime").load(small_onnx)
    with pytest.raises(BadInputError, match="float64"):
        cycle(rt, [{"x": digits[:1]}, {"x": digits[:1].astype(np.float64)}])


# ------------------------------------------------------------------------------- memory
@pytest.mark.slow
def test_peak_rss_grows_with_the_model(
    small_onnx: Path, digits: np.ndarray, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    big_model = mlp([64, 4096, 4096, 3072, 10])
    params = sum(p.numel() for p in big_model.parameters())
    assert params > 29_000_000
    big_onnx = export(big_model, tmp_path / "big.onnx")
    feed = {"x": digits[:2]}
    small = peak_rss("onnxruntime", small_onnx, feed)
    big = peak_rss("onnxruntime", big_onnx, feed)
    for r in (small, big):
        assert r["peak_rss_mb"] > r["model_rss_mb"] > 0
        assert r["baseline_rss_mb"] > 0 and r["batch"] == 2
    assert big["model_rss_mb"] > small["model_rss_mb"]
    assert big["model_rss_mb"] > 0.8 * params * 4 / 2**20  # the fp32 weights are resident


@pytest.mark.skipif(sys.platform != "linux", reason="the inherited ru_maxrss is a Linux behaviour")
def test_peak_rss_is_measured_in_a_fresh_process(small_onnx: Path, digits: np.ndarray) -> None:
    ballast = np.ones(256 * 2**20, dtype=np.uint8)  # 256 MiB resident in this (parent) process
    parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = peak_rss("onnxruntime", small_onnx, {"x": digits[:1]})
    assert ballast.sum() == ballast.size
    # Linux carries ru_maxrss over fork and exec: a naive child would report the parent's peak.
    assert result["peak_rss_mb"] < parent_peak_mb - 128


def test_peak_rss_reports_child_errors(
    small_onnx: Path, digits: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(BadInputError, match="missing"):
        peak_rss("onnxruntime", small_onnx, {"image": digits[:1]})
    with pytest.raises(BadInputError, match="does not exist"):
        peak_rss("onnxruntime", tmp_path / "none.onnx", {"x": digits[:1]})
    with pytest.raises(BadInputError, match="between 1 and"):
        peak_rss("onnxruntime", small_onnx, {"x": digits[:1]}, batch=2)
