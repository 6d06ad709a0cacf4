"""Calibrate edgekit's timer against the runtimes' own benchmark tools on the same model file and
thread count: OpenVINO's ``benchmark_app`` (ships with the openvino package) and ONNX Runtime's
``onnxruntime_perf_test`` (only in source builds of ONNX Runtime; reported as not available when
missing). Runs alternate (edgekit, tool, edgekit, tool, …) so a slow period hits both; the ratio of
the medians is the figure (1.0 = agreement)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.io.data import Dataset

_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s*(us|ms)")
_ORT_P50 = re.compile(r"P50 Latency:\s+([\d.eE+-]+)\s*s")


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def _shape(dims: Sequence[int], dynamic_batch: bool) -> str:
    return "[" + ",".join(["?" if dynamic_batch else str(dims[0]), *map(str, dims[1:])]) + "]"


def benchmark_app(
    xml: Path, feeds: dict[str, np.ndarray], *, threads: int, seconds: float, dynamic_batch: bool
) -> float:
    """Median latency in ms that ``benchmark_app`` reports (sync API, one stream, no hint, batch 1)."""
    exe = _tool("benchmark_app")
    if exe is None:
        raise RuntimeError("benchmark_app not found (it ships with the openvino package)")
    shape = ",".join(f"{k}{_shape(v.shape, dynamic_batch)}" for k, v in feeds.items())
    data_shape = ",".join(f"{k}{_shape(v.shape, False)}" for k, v in feeds.items())
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-api", "sync", "-nstreams", "1", "-nthreads", str(threads)]
    cmd += ["-hint", "none", "-t", f"{max(1, round(seconds))}", "-shape", shape]
    if dynamic_batch:
        cmd += ["-data_shape", data_shape]
    else:
        cmd += ["-b", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=120 + seconds)
    m = _MEDIAN.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark_app failed: {tail[0]}")
    value = float(m.group(1))
    return value / 1000.0 if m.group(2) == "us" else value


def ort_perf_test(onnx: Path, *, threads: int, seconds: float) -> float:
    exe = _tool("onnxruntime_perf_test")
    if exe is None:
        raise FileNotFoundError("onnxruntime_perf_test")
    cmd = [exe, "-e", "cpu", "-m", "duration", "-t", str(max(1, round(seconds))), "-x", str(threads), "-y", "1"]
    proc = subprocess.run([*cmd, str(onnx)], capture_output=True, text=True, timeout=120 + seconds)
    m = _ORT_P50.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        raise RuntimeError("onnxruntime_perf_test gave no P50 latency")
    return float(m.group(1)) * 1000.0


def calibrate(
    variants: Sequence[dict[str, Any]],
    root: Path,
    data: Dataset,
    *,
    threads: int = 1,
    seconds: float = 3.0,
    rounds: int = 3,
) -> dict[str, Any]:
    """For every OpenVINO IR and ONNX Runtime model among ``variants`` (manifest rows), edgekit's p50
    against the runtime's own tool, alternating ``rounds`` times; returns the figures and ratios."""
    from edgekit.benchmarks import latency as lat
    from edgekit.runtimes import get_runtime

    out: dict[str, Any] = {"threads": threads, "seconds_per_run": seconds, "rounds": rounds, "variants": {}}
    for v in variants:
        path = (root / v["artifact"]).resolve()
        if v["runtime"] == "openvino" and path.suffix == ".xml":
            tool = "benchmark_app"
        elif v["runtime"] == "onnxruntime" and path.suffix == ".onnx":
            tool = "onnxruntime_perf_test"
            if _tool(tool) is None:
                out["variants"][v["name"]] = {
                    "tool": tool,
                    "status": "not available",
                    "reason": "onnxruntime_perf_test is not in the onnxruntime pip wheel (it comes with source builds)",
                }
                continue
        else:
            continue
        rt = get_runtime(v["runtime"], threads=threads).load(path)
        feeds = lat.feeds_from(data.bind([s.name for s in rt.inputs]), batch=1, n_feeds=8, seed=0)
        fn = lat.cycle(rt, feeds)
        ours: list[float] = []
        theirs: list[float] = []
        row: dict[str, Any] = {"tool": tool}
        try:
            for _ in range(rounds):
                ours.append(lat.measure({"v": fn}, budget_s=seconds)["v"].p50)
                if tool == "benchmark_app":
                    theirs.append(benchmark_app(path, feeds[0], threads=threads, seconds=seconds, dynamic_batch=True))
                else:
                    theirs.append(ort_perf_test(path, threads=threads, seconds=seconds))
            if tool == "benchmark_app":
                static = benchmark_app(path, feeds[0], threads=threads, seconds=seconds, dynamic_batch=False)
                row["tool_p50_ms_static_shape"] = static
                row["note"] = (
                    "edgekit compiles the IR with a dynamic batch axis; the ratio compares benchmark_app on the "
                    "same dynamic-batch model (-shape [?,…] -data_shape [1,…]); the static-shape figure shows "
                    "what fixing the batch would gain"
                )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            out["variants"][v["name"]] = {"tool": tool, "status": "failed", "reason": str(exc)}
            continue
        p50, ref = float(np.median(ours)), float(np.median(theirs))
        row.update(
            status="measured",
            edgekit_p50_ms=p50,
            tool_p50_ms=ref,
            ratio=round(p50 / ref, 4),
            edgekit_runs_ms=ours,
            tool_runs_ms=theirs,
        )
        out["variants"][v["name"]] = row
    return out
