"""Latency benchmarks of compressed variants against fp32, side by side in one run.

CI runs each benchmark once (``--benchmark-disable`` in pyproject) as a smoke test. To measure:

    .venv/bin/python -m pytest tests/perf --benchmark-enable --benchmark-group-by=group \\
        --benchmark-columns=min,median,max,rounds --benchmark-sort=name

and compare medians within a group (the ratio is the figure; single absolute times on a shared
machine are not). ``edgekit bench BUNDLE --batch 1,32`` measures the same variants interleaved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit import api
from edgekit.benchmarks.latency import cycle, feeds_from
from edgekit.io.data import load_npz
from edgekit.runtimes import get_runtime

pytestmark = pytest.mark.slow


def _bundle(trained, tmp_path_factory, name: str, steps: list[object]) -> Path:
    _, path = trained(name)
    out = tmp_path_factory.mktemp("perf") / f"{name}.bundle"
    api.compress(path, steps=steps, out=out, time_budget_s=0.05, with_memory=False)
    return out


@pytest.fixture(scope="module")
def digits_bundle(trained, tmp_path_factory) -> Path:
    from edgekit.compress.quantize import Int8Config

    return _bundle(trained, tmp_path_factory, "digits-cnn", [Int8Config(runtimes=("onnxruntime", "openvino"))])


@pytest.fixture(scope="module")
def edge_bundle(trained, tmp_path_factory) -> Path:
    from edgekit.compress.prune import PruneConfig

    return _bundle(trained, tmp_path_factory, "edge-cnn", [PruneConfig(kind="structured", amount=0.5)])


@pytest.fixture(scope="module")
def recognizer_bundle(trained, tmp_path_factory) -> Path:
    """text-recognizer's INT8 bundle, plus the OpenVINO INT8 IR as NNCF makes it (LSTM not aligned
    with the CPU kernel) beside the aligned one."""
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_ov import ov_int8

    out = _bundle(trained, tmp_path_factory, "text-recognizer", [Int8Config(runtimes=("onnxruntime", "openvino"))])
    calib = load_npz(out / "data" / "calib.npz")
    widths = calib.lengths["x"]
    feeds = [{"x": calib.inputs["x"][i : i + 1, ..., : int(widths[i])]} for i in range(64)]
    config = Int8Config(runtimes=("openvino",))
    ov_int8(config, out / "model.fp32.onnx", feeds, out / "openvino" / "model.int8-nncf.xml", align_rnn=False)
    return out


def _runner(bundle: Path, artifact: str, runtime: str, batch: int, threads: int = 1):
    from edgekit.benchmarks.harness import extents_for

    rt = get_runtime(runtime, threads=threads).load(bundle / artifact)
    data = load_npz(bundle / "data" / "eval.npz")
    # Variable-length inputs are timed as deployed: real samples cropped to the median length.
    feeds = feeds_from(data.bind([s.name for s in rt.inputs]), batch=batch, n_feeds=8, seed=0,
                       extents=extents_for(rt, data))  # fmt: skip
    return cycle(rt, feeds)


DIGITS = [
    ("model.fp32.onnx", "onnxruntime"),
    ("model.int8-static.onnx", "onnxruntime"),
    ("openvino/model.fp32.xml", "openvino"),
    ("openvino/model.int8.xml", "openvino"),
]


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("artifact,runtime", DIGITS)
def test_digits_int8_vs_fp32(benchmark, digits_bundle: Path, artifact: str, runtime: str, batch: int) -> None:
    benchmark.group = f"digits-cnn {runtime} batch {batch}"
    fn = _runner(digits_bundle, artifact, runtime, batch)
    out = benchmark(fn)
    assert np.asarray(out[0]).shape == (batch, 10)


@pytest.mark.parametrize("artifact", ["model.fp32.onnx", "model.fp32-prune.onnx"])
def test_edge_cnn_structured_pruning_batch32(benchmark, edge_bundle: Path, artifact: str) -> None:
    benchmark.group = "edge-cnn onnxruntime batch 32 (structured pruning 50%)"
    fn = _runner(edge_bundle, artifact, "onnxruntime", 32)
    out = benchmark(fn)
    assert np.asarray(out[0]).shape == (32, 10)


RECOGNIZER = [
    ("model.fp32.onnx", "onnxruntime"),
    ("openvino/model.int8.xml", "openvino"),  # LSTM aligned with the CPU kernel (edgekit's ov-int8)
    ("openvino/model.int8-nncf.xml", "openvino"),  # as NNCF makes it
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("artifact,runtime", RECOGNIZER)
def test_recognizer_int8_lstm_vs_fp32(
    benchmark, recognizer_bundle: Path, artifact: str, runtime: str, threads: int
) -> None:
    """Compare within a group (the aligned LSTM against NNCF's and against ONNX Runtime fp32), and
    one runtime across the two groups (what a second thread buys it)."""
    benchmark.group = f"text-recognizer batch 1, median width, {threads} thread(s)"
    fn = _runner(recognizer_bundle, artifact, runtime, 1, threads)
    out = np.asarray(benchmark(fn)[0])
    assert out.shape[0] == 1 and out.shape[2] == 11 and out.shape[1] > 1, out.shape
