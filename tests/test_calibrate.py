"""The timing loop (inputs bound once, the inference alone inside the clock) on every CPU runtime,
and ``bench --calibrate-timer``'s comparison with the runtimes' own tools.

No assertion here depends on how fast the machine is: ratios are written, never judged."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekit.benchmarks import calibrate as cal
from edgekit.benchmarks.latency import Cycle, cycle, feeds_from, measure
from edgekit.io.data import Dataset
from edgekit.runtimes import get_runtime
from edgekit.runtimes.base import BoundCall, Runtime, TensorSpec
from edgekit.runtimes.torch_eager import TorchRuntime

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 32)).astype(np.float32) / 8
W2 = RNG.standard_normal((32, 10)).astype(np.float32) / 4


def _onnx(path: Path, *, two_inputs: bool) -> Path:
    """y = relu(x @ W1) @ W2 (+ z with two inputs), a dynamic batch axis."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["o" if two_inputs else "y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])]
    if two_inputs:
        nodes.append(helper.make_node("Add", ["o", "z"], ["y"]))
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 10]))
    graph = helper.make_graph(
        nodes, "mlp", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


class _Net(torch.nn.Module):
    def __init__(self, two_inputs: bool) -> None:
        super().__init__()
        self.w1, self.w2, self.two = torch.from_numpy(W1), torch.from_numpy(W2), two_inputs

    def forward(self, x: torch.Tensor, *z: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x @ self.w1) @ self.w2
        return y + z[0] if self.two else y


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    x = (load_digits().data[:200] / 16.0).astype(np.float32)
    return {"x": x, "z": RNG.standard_normal((200, 10)).astype(np.float32)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("calibrate")
    return {two: _onnx(root / f"mlp{int(two)}.onnx", two_inputs=two) for two in (False, True)}


def _runtime(name: str, models: dict[bool, Path], two: bool) -> Runtime:
    if name == "torch":
        specs = [TensorSpec("x", (None, 64), "float32")] + ([TensorSpec("z", (None, 10), "float32")] if two else [])
        return TorchRuntime.from_module(_Net(two), specs, output_names=["y"])
    return get_runtime(name, threads=1).load(models[two])


RUNTIMES = ["onnxruntime", "openvino", "torch"]


# ------------------------------------------------------------------------------- bound calls
@pytest.mark.parametrize("two", [False, True], ids=["one-input", "two-inputs"])
@pytest.mark.parametrize("name", RUNTIMES)
def test_bound_calls_give_the_outputs_of_run(name: str, two: bool, models, data) -> None:
    rt = _runtime(name, models, two)
    feeds = feeds_from({s.name: data[s.name] for s in rt.inputs}, batch=3, n_feeds=3, seed=0)
    expected = [rt.run(f)[0] for f in feeds]
    assert not np.array_equal(expected[0], expected[1])  # distinct feeds, so a stale binding shows
    bound = [rt.bind_for_timing(rt.validate(f)) for f in feeds]
    kept: list[np.ndarray] = []
    for i in (2, 0, 1, 1, 2):  # out of order: each prepare must switch the inputs
        bound[i].prepare()
        bound[i].infer()
        out = bound[i].read()
        assert len(out) == 1
        np.testing.assert_array_equal(out[0], expected[i])
        kept.append(out[0])
    np.testing.assert_array_equal(kept[0], expected[2])  # read() returned a copy the next run left alone
    reference = np.maximum(feeds[0]["x"] @ W1, 0) @ W2 + (feeds[0]["z"] if two else 0)
    np.testing.assert_allclose(expected[0], reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_bound_call_keeps_its_inputs_alive(name: str, models, data) -> None:
    import gc

    rt = _runtime(name, models, True)
    feed = {k: data[k][5:7].copy() for k in ("x", "z")}  # arrays only this test holds
    expected = rt.run(feed)[0]
    call = rt.bind_for_timing(rt.validate(feed))
    del feed
    gc.collect()
    litter = [np.full((2, 64), 1e6, np.float32) for _ in range(64)]  # reuse freed memory, if any
    call.prepare()
    call.infer()
    np.testing.assert_array_equal(call.read()[0], expected)
    assert len(litter) == 64


@pytest.mark.parametrize("name", RUNTIMES)
def test_timing_loop_gives_per_call_samples(name: str, models, data) -> None:
    rt = _runtime(name, models, True)
    feeds = feeds_from({s.name: data[s.name] for s in rt.inputs}, batch=2, n_feeds=4, seed=1)
    timer = cycle(rt, feeds)
    assert isinstance(timer, Cycle)
    for wall in (False, True):
        counts = {"min_iters": 9, "max_iters": 9, "rounds": 3}
        stats = measure({name: timer}, batch=2, warmup=2, budget_s=0.0, wall_clock=wall, **counts)
        s = stats[name]
        assert s.n == 9 and len(s.samples_ms) == 9 and s.batch == 2
        assert all(math.isfinite(v) and v > 0 for v in s.samples_ms)
    out = timer()  # a whole call returns the outputs, as run() does
    np.testing.assert_array_equal(out[0], rt.run(feeds[timer._i])[0])
    np.testing.assert_array_equal(timer.outputs()[0], out[0])
    own_clock = rt.bind_for_timing(rt.validate(feeds[0])).elapsed_ns
    assert (own_clock is not None) == (name == "openvino")  # only OpenVINO times its own requests


def test_openvino_samples_are_the_requests_own_latency(models, data) -> None:
    rt = get_runtime("openvino", threads=1).load(models[False])
    call = rt.bind_for_timing(rt.validate({"x": data["x"][:1]}))
    assert call.elapsed_ns is not None
    seen: list[float] = []

    def recorded() -> float:
        seen.append(call.elapsed_ns())  # type: ignore[misc]
        return seen[-1]

    timer = Cycle([call._replace(elapsed_ns=recorded)])
    stats = measure({"ov": timer}, warmup=1, budget_s=0.0, min_iters=5, max_iters=5, rounds=1)
    assert [v / 1e6 for v in seen] == list(stats["ov"].samples_ms)
    assert all(v > 0 for v in seen)


def test_only_the_inference_is_inside_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0]
    monkeypatch.setattr(time, "perf_counter_ns", lambda: now[0])

    def advance(ns: int):
        def step() -> None:
            now[0] += ns

        return step

    log: list[str] = []
    calls = [
        BoundCall(lambda k=k: (log.append(f"prepare{k}"), advance(1_000_000)()), advance(7_000), lambda: [])
        for k in range(2)
    ]
    stats = measure({"fake": Cycle(calls)}, warmup=0, budget_s=0.0, min_iters=4, max_iters=4, rounds=2)
    assert list(stats["fake"].samples_ms) == [0.007] * 4  # the 1 ms prepare never counts
    assert log == ["prepare0", "prepare1"] * 2 + ["prepare0"]  # one warm-up call, then feeds in turn
    own = [BoundCall(lambda: None, advance(7_000), lambda: [], lambda: 3_000.0)]
    by_own_clock = measure({"own": Cycle(own)}, warmup=0, budget_s=0.0, min_iters=2, max_iters=2, rounds=1)
    assert list(by_own_clock["own"].samples_ms) == [0.003] * 2
    walled = measure({"own": Cycle(own)}, warmup=0, budget_s=0.0, min_iters=2, max_iters=2, rounds=1, wall_clock=True)
    assert list(walled["own"].samples_ms) == [0.007] * 2


def test_cycle_outputs_need_a_call_first(models, data) -> None:
    from edgekit.errors import BadInputError

    rt = get_runtime("onnxruntime", threads=1).load(models[False])
    with pytest.raises(BadInputError, match="no inference has run"):
        cycle(rt, [{"x": data["x"][:1]}]).outputs()


# ------------------------------------------------------------------------------- calibrate
def test_calibrate_writes_ratios_commands_and_spread(models, data, tmp_path: Path) -> None:
    import openvino as ov

    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(models[False].read_bytes())
    ov.save_model(ov.convert_model(str(onnx_path)), str(tmp_path / "model.xml"))
    variants = [
        {"name": "ov-fp32", "runtime": "openvino", "artifact": "model.xml"},
        {"name": "ort-fp32", "runtime": "onnxruntime", "artifact": "model.onnx"},
        {"name": "torch", "runtime": "torch", "artifact": "model.pt2"},  # no tool for it: left out
    ]
    result = cal.calibrate(variants, tmp_path, Dataset(inputs={"x": data["x"]}), threads=1, seconds=1.0, rounds=2)
    assert result["threads"] == 1 and result["rounds"] == 2 and set(result["variants"]) == {"ov-fp32", "ort-fp32"}
    for name, row in result["variants"].items():
        assert row["status"] == "measured", (name, row)
        assert len(row["edgekit_runs_ms"]) == len(row["tool_runs_ms"]) == len(row["round_ratios"]) == 2
        assert row["ratio"] == pytest.approx(float(np.median(row["round_ratios"])), rel=1e-3)  # paired rounds
        assert row["ratio_of_medians"] == pytest.approx(row["edgekit_p50_ms"] / row["tool_p50_ms"], rel=1e-3)
        assert row["ratio_spread"] == [min(row["round_ratios"]), max(row["round_ratios"])]
        assert row["edgekit_spread_max_over_min"] >= 1.0 and "wall_ratio" in row and row["command"]
    ov_row = result["variants"]["ov-fp32"]
    assert ov_row["tool"] == "benchmark_app" and "-load_config" in ov_row["command"]
    assert ov_row["config_json"]["CPU"]["INFERENCE_NUM_THREADS"] == "1"
    assert ov_row["config_json"]["CPU"]["NUM_STREAMS"] == "1"
    assert ov_row["config_json"]["CPU"]["ENABLE_CPU_PINNING"] == "NO"
    # benchmark_app printed the properties it compiled with; edgekit's compiled model has the same
    assert {"NUM_STREAMS", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"} <= set(ov_row["compiled_properties"])
    assert ov_row["property_mismatches"] == {}
    assert ov_row["tool_p50_ms_static_shape"] > 0 and "-b" in ov_row["static_shape_command"]
    ort_row = result["variants"]["ort-fp32"]
    assert ort_row["tool"] == "onnxruntime_perf_test"
    if cal._tool("onnxruntime_perf_test") is None:
        assert ort_row["tool_status"] == "not available" and "pip wheel" in ort_row["reason"]
        assert "ratio_vs_session_run" in ort_row and len(ort_row["session_run_runs_ms"]) == 2
    md = "\n".join(cal.markdown(result))
    assert "## Timer calibration" in md and "| ov-fp32 | benchmark_app |" in md and "-load_config" in md
    assert "| ort-fp32 |" in md


def test_a_failing_tool_is_a_row_not_a_crash(models, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import openvino as ov

    ov.save_model(ov.convert_model(str(models[False])), str(tmp_path / "model.xml"))
    monkeypatch.setattr(cal, "_tool", lambda name: shutil.which("false"))  # exits 1, prints nothing
    variants = [{"name": "ov-fp32", "runtime": "openvino", "artifact": "model.xml"}]
    result = cal.calibrate(variants, tmp_path, Dataset(inputs={"x": data["x"]}), seconds=0.2, rounds=1)
    row = result["variants"]["ov-fp32"]
    assert row == {"tool": "benchmark_app", "status": "failed", "reason": "benchmark_app failed: no output"}
    assert "| ov-fp32 | benchmark_app | — |" in "\n".join(cal.markdown(result))
    assert cal.markdown({"variants": {}}) == []
