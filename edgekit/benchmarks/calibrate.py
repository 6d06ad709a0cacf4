"""Calibrate edgekit's timer against the runtimes' own benchmark tools on the same model file,
compiled the same way.

- OpenVINO: ``benchmark_app`` (ships with the openvino package), sync API, one infer request, given
  edgekit's own compile properties with ``-load_config`` (latency hint, threads, one stream,
  inference precision). Its figure is the median of ``InferRequest.latency`` over the run: the
  request's inference alone, inputs set beforehand, nothing of Python's result handling.
- ONNX Runtime: ``onnxruntime_perf_test`` where it exists (source builds only; the pip wheel does
  not ship it). Without it, the closest reference is a bare loop written here against ONNX
  Runtime's public API on a session of its own: ``run_with_iobinding`` on inputs bound once (what
  ``perf_test`` times in C++), and plain ``InferenceSession.run`` for what a user's loop costs.

The runs alternate (edgekit, tool, edgekit, tool, …) for ``rounds`` rounds, so a slow period on a
shared machine hits both runs of a round; the figure is the median of the per-round ratios (1.0 =
agreement), shown with their spread; the ratio of the two medians is kept too. On a shared 2-core
machine whose speed drifted 2× within a minute, three rounds gave 0.96–1.24 on the same IR from one
run to the next: hence five rounds by default. edgekit's own repeated p50s give the spread of its
timer alone.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.data import Dataset

_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s*(us|ms)")
_ORT_P50 = re.compile(r"P50 Latency:\s+([\d.eE+-]+)\s*s")
_PROPERTY = re.compile(r"^\[ INFO \]\s+([A-Z][A-Z_]+): (.*)$", re.MULTILINE)
# Compiled-model properties benchmark_app prints that decide speed; edgekit's must be the same.
COMPARED = (
    "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
    "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "CPU_DENORMALS_OPTIMIZATION",
)
PERF_TEST_MISSING = (
    "onnxruntime_perf_test is neither beside this Python nor on PATH: the onnxruntime pip wheel does not "
    "ship it (it comes with ONNX Runtime built from source); compared instead with a bare "
    "run_with_iobinding loop on a session of its own"
)


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def _shape(dims: Sequence[int], dynamic_batch: bool) -> str:
    return "[" + ",".join(["?" if dynamic_batch else str(dims[0]), *map(str, dims[1:])]) + "]"


def benchmark_app_command(
    exe: str, xml: Path, feed: dict[str, np.ndarray], config: Path, *, seconds: float, dynamic_batch: bool
) -> list[str]:
    """The ``benchmark_app`` command for ``xml`` at the shapes of ``feed``: sync API (one request,
    ``infer()`` per iteration), the compile properties in ``config``; a dynamic batch axis as
    edgekit compiles it (``-shape [?,…] -data_shape [1,…]``) or the batch fixed (``-b``)."""
    shape = ",".join(f"{k}{_shape(v.shape, dynamic_batch)}" for k, v in feed.items())
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-api", "sync", "-load_config", str(config)]
    cmd += ["-t", f"{max(1, round(seconds))}", "-shape", shape]
    if dynamic_batch:
        cmd += ["-data_shape", ",".join(f"{k}{_shape(v.shape, False)}" for k, v in feed.items())]
    else:
        cmd += ["-b", str(next(iter(feed.values())).shape[0])]
    return cmd


def run_benchmark_app(cmd: Sequence[str], seconds: float) -> tuple[float, dict[str, str]]:
    """Run ``cmd``; returns the median latency in ms it reports and the compiled-model properties
    it prints."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=tmp, timeout=120 + seconds)
    m = _MEDIAN.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark_app failed: {tail[0]}")
    value = float(m.group(1))
    properties = {k: v.strip() for k, v in _PROPERTY.findall(proc.stdout) if k in COMPARED}
    return (value / 1000.0 if m.group(2) == "us" else value), properties


def ort_perf_test_command(exe: str, onnx: Path, *, threads: int, seconds: float) -> list[str]:
    return [exe, "-e", "cpu", "-m", "duration", "-t", str(max(1, round(seconds))), "-x", str(threads),
            "-y", "1", str(onnx)]


def run_ort_perf_test(cmd: Sequence[str], seconds: float) -> float:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120 + seconds)
    m = _ORT_P50.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        raise RuntimeError("onnxruntime_perf_test gave no P50 latency")
    return float(m.group(1)) * 1000.0


def ort_reference(onnx: Path, feed: dict[str, np.ndarray], *, threads: int, seconds: float) -> dict[str, float]:
    """Median ms per call of a bare loop on a session of its own (``threads`` intra-op threads, one
    inter-op thread, sequential, all graph optimizations): ``run_with_iobinding`` on inputs bound
    once (outputs allocated by ONNX Runtime, as ``perf_test`` does) and plain ``session.run``,
    alternating in slices of 50 calls; ``seconds`` split between the two."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feed.items()}
    for k, v in values.items():
        binding.bind_ortvalue_input(k, v)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")
    calls = {
        "iobinding": lambda: session.run_with_iobinding(binding),
        "session_run": lambda: session.run(None, feed),
    }
    times: dict[str, list[int]] = {k: [] for k in calls}
    clock = time.perf_counter_ns
    for fn in calls.values():  # warm-up
        for _ in range(20):
            fn()
    deadline = clock() + int(seconds * 1e9)
    while clock() < deadline:
        for name, fn in calls.items():
            out = times[name]
            for _ in range(50):
                start = clock()
                fn()
                out.append(clock() - start)
    return {f"{k}_p50_ms": float(np.median(v)) / 1e6 for k, v in times.items()}


def _shown(cmd: Sequence[str], config: Path) -> list[str]:
    """``cmd`` as recorded: the temporary config file named ``config.json`` (its content is
    recorded beside it as ``config_json``)."""
    return [config.name if arg == str(config) else arg for arg in cmd]


def _spread(values: Sequence[float]) -> float:
    return round(max(values) / min(values), 4) if values and min(values) > 0 else float("nan")


def calibrate(
    variants: Sequence[dict[str, Any]],
    root: Path,
    data: Dataset,
    *,
    threads: int = 1,
    seconds: float = 3.0,
    rounds: int = 5,
) -> dict[str, Any]:
    """For every OpenVINO IR and ONNX Runtime model among ``variants`` (manifest rows), edgekit's p50
    at batch 1 against the runtime's own tool (or the closest reference), alternating ``rounds``
    times; returns the figures, the ratios and their spread, and the exact commands."""
    from edgekit.benchmarks import latency as lat
    from edgekit.runtimes import runtime_for

    out: dict[str, Any] = {
        "threads": threads,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "batch": 1,
        "edgekit_timer": (
            "inputs bound once per feed, 8 real feeds in turn; the inference alone is timed "
            "(OpenVINO: InferRequest.latency of one sync request, the clock benchmark_app reads; "
            "ONNX Runtime: perf_counter_ns around run_with_iobinding); output copies outside the clock"
        ),
        "variants": {},
    }
    for v in variants:
        path = (root / v["artifact"]).resolve()
        if v["runtime"] == "openvino" and path.suffix == ".xml":
            tool = "benchmark_app"
        elif v["runtime"] == "onnxruntime" and path.suffix == ".onnx":
            tool = "onnxruntime_perf_test"
        else:
            continue
        rt = runtime_for(v["runtime"], v.get("precision"), threads=threads).load(path)
        feeds = lat.feeds_from(data.bind([s.name for s in rt.inputs]), batch=1, n_feeds=8, seed=0)
        timer = lat.cycle(rt, feeds)
        try:
            out["variants"][v["name"]] = _compare(tool, rt, path, timer, feeds[0], threads, seconds, rounds)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            out["variants"][v["name"]] = {"tool": tool, "status": "failed", "reason": str(exc)}
    return out


def _compare(
    tool: str, rt: Any, path: Path, timer: Any, feed: dict[str, np.ndarray], threads: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """One variant: alternate edgekit's timer with the tool (or reference) ``rounds`` times."""
    from edgekit.benchmarks import latency as lat

    exe = _tool(tool)
    row: dict[str, Any] = {"tool": tool}
    ours: list[float] = []
    wall: list[float] = []
    theirs: list[float] = []
    session_run: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-calibrate-") as tmp:
        if tool == "benchmark_app":
            if exe is None:
                raise RuntimeError("benchmark_app not found (it ships with the openvino package)")
            config = Path(tmp) / "config.json"
            config.write_text(json.dumps({"CPU": rt.compile_config()}, indent=1))
            cmd = benchmark_app_command(exe, path, feed, config, seconds=seconds, dynamic_batch=True)
            row.update(command=_shown(cmd, config), config_json={"CPU": rt.compile_config()})
        elif exe is not None:
            cmd = ort_perf_test_command(exe, path, threads=threads, seconds=seconds)
            row["command"] = cmd
        else:
            row.update(
                tool_status="not available",
                reason=PERF_TEST_MISSING,
                reference="bare run_with_iobinding loop (ort_reference)",
                command=[f"ort_reference({path.name}, threads={threads}, seconds={seconds:g})"],
            )
        tool_properties: dict[str, str] = {}
        for _ in range(rounds):
            ours.append(lat.measure({"v": timer}, budget_s=seconds)["v"].p50)
            wall.append(lat.measure({"v": timer}, budget_s=seconds / 3, wall_clock=True)["v"].p50)
            if tool == "benchmark_app":
                p50, tool_properties = run_benchmark_app(cmd, seconds)
                theirs.append(p50)
            elif exe is not None:
                theirs.append(run_ort_perf_test(cmd, seconds))
            else:
                ref = ort_reference(path, feed, threads=threads, seconds=seconds)
                theirs.append(ref["iobinding_p50_ms"])
                session_run.append(ref["session_run_p50_ms"])
        if tool == "benchmark_app":
            static_cmd = benchmark_app_command(exe or tool, path, feed, config, seconds=seconds, dynamic_batch=False)
            row["tool_p50_ms_static_shape"], _ = run_benchmark_app(static_cmd, seconds)
            row["static_shape_command"] = _shown(static_cmd, config)
            row["note"] = (
                "edgekit compiles the IR with a dynamic batch axis; the ratio compares benchmark_app on the "
                "same dynamic-batch model (-shape [?,…] -data_shape [1,…]); the static-shape figure shows "
                "what fixing the batch would gain"
            )
            mine = {k: rt.compiled_property(k) for k in tool_properties}
            row["compiled_properties"] = mine
            row["property_mismatches"] = {
                k: {"edgekit": mine[k], "benchmark_app": t} for k, t in tool_properties.items() if mine[k] != t
            }
    p50, ref_p50 = float(np.median(ours)), float(np.median(theirs))
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    row.update(
        status="measured",
        edgekit_p50_ms=p50,
        tool_p50_ms=ref_p50,
        ratio=round(float(np.median(ratios)), 4),
        ratio_of_medians=round(p50 / ref_p50, 4),
        round_ratios=[round(r, 4) for r in ratios],
        ratio_spread=[round(min(ratios), 4), round(max(ratios), 4)],
        edgekit_runs_ms=ours,
        tool_runs_ms=theirs,
        edgekit_spread_max_over_min=_spread(ours),
        edgekit_wall_runs_ms=wall,
        wall_ratio=round(float(np.median(wall)) / ref_p50, 4),
        wall_note="perf_counter_ns around the Python call, the runtime's Python binding included",
    )
    if session_run:
        row["session_run_runs_ms"] = session_run
        row["ratio_vs_session_run"] = round(p50 / float(np.median(session_run)), 4)
    return row


def markdown(cal: dict[str, Any]) -> list[str]:
    """The calibration as report.md lines: one table row per variant, then the commands."""
    if not cal.get("variants"):
        return []
    lines = [
        "\n## Timer calibration\n",
        f"{cal['rounds']} alternating rounds of {cal['seconds_per_run']:g} s, batch 1, "
        f"{cal['threads']} thread(s). edgekit's timer: {cal['edgekit_timer']}.\n",
        "| variant | reference | edgekit p50 ms | reference p50 ms | ratio | per-round ratios | "
        "edgekit runs max/min | wall-clock ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in cal["variants"].items():
        if row.get("status") != "measured":
            lines.append(f"| {name} | {row['tool']} | — | — | — | {row.get('reason', row.get('status'))} | — | — |")
            continue
        ref = row.get("reference", row["tool"])
        per_round = ", ".join(f"{r:.3f}" for r in row["round_ratios"])
        lines.append(
            f"| {name} | {ref} | {row['edgekit_p50_ms']:.4f} | {row['tool_p50_ms']:.4f} | {row['ratio']:.3f} | "
            f"{per_round} | {row['edgekit_spread_max_over_min']:.3f} | {row['wall_ratio']:.3f} |"
        )
    lines.append("")
    for name, row in cal["variants"].items():
        if "tool_status" in row:
            lines.append(f"- `{name}`: {row['tool']} {row['tool_status']}: {row['reason']}")
        if "command" in row:
            lines.append(f"- `{name}`: `{shlex.join(map(str, row['command']))}`")
        if "config_json" in row:
            lines.append(f"  with config.json = `{json.dumps(row['config_json'])}`")
        if row.get("property_mismatches"):
            lines.append(f"- `{name}`: compiled differently from benchmark_app: {row['property_mismatches']}")
    return lines
