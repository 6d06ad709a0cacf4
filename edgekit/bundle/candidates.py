"""A bundle's variants as measurement candidates, wherever the bundle is (build host or device).

Variants of a runtime that builds on the device (``device_build`` in the runtime table: TensorRT)
ship as ONNX; the engine that runs is built on the device (``edgekit build``)
beside it as ``model.<variant>.engine``, with ``model.<variant>.engine.json`` recording the GPU and
TensorRT version it was built with. An engine built for another GPU or TensorRT version is
refused with the reason, never run.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from edgekit.benchmarks.harness import Candidate
from edgekit.runtimes.table import find


def engine_meta_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_engine_meta(engine: Path, identity: dict[str, str]) -> Path:
    """Record beside ``engine`` the GPU and TensorRT version that built it."""
    from edgekit.io.atomic import atomic_write_text

    path = engine_meta_path(engine)
    atomic_write_text(path, json.dumps(identity, indent=2) + "\n")
    return path


def engine_for(onnx_path: Path, identity: dict[str, str] | None) -> tuple[Path, str | None]:
    """The engine to run for a TensorRT variant and, when it cannot run here, why not.
    ``identity`` is this device's {"gpu", "tensorrt"} (None when it has no usable GPU)."""
    engine = onnx_path.with_suffix(".engine")
    if not engine.is_file():
        return onnx_path, "no TensorRT engine built on this device yet; run 'edgekit build BUNDLE' here"
    if identity is None:
        return engine, None  # the runtime check says why this machine cannot run it
    meta_path = engine_meta_path(engine)
    try:
        built = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return engine, f"{engine.name} has no readable {meta_path.name} (GPU and TensorRT version); rebuild it here"
    for key in ("gpu", "tensorrt"):
        if built.get(key) != identity.get(key):
            return engine, (
                f"{engine.name} was built for {built.get('gpu')} with TensorRT {built.get('tensorrt')}, "
                f"this device has {identity.get('gpu')} with TensorRT {identity.get('tensorrt')}; "
                "rebuild it here with 'edgekit build BUNDLE'"
            )
    return engine, None


def artifact_size(path: Path) -> int | None:
    if not path.exists():
        return None
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").exists():
        size += path.with_suffix(".bin").stat().st_size
    return size


def candidates(root: Path, manifest: Any, runtimes: Collection[str] | None = None) -> list[Candidate]:
    """The manifest's variants as candidates (the fp32 baseline always, first); ``runtimes``
    keeps only those runtimes' variants."""
    identity = None
    out: list[Candidate] = []
    for v in manifest.variants:
        if v["name"] != "ort-fp32" and runtimes and v["runtime"] not in runtimes:
            continue
        path = root / v["artifact"]
        unavailable = None
        info = find(v["runtime"])
        if info is not None and info.device_build:
            if identity is None:
                from edgekit.runtimes.tensorrt import device_identity

                identity = device_identity() or {}
            path, unavailable = engine_for(path, identity or None)
        out.append(
            Candidate(
                name=v["name"],
                runtime=v["runtime"],
                precision=v["precision"],
                path=path,
                techniques=v.get("techniques", []),
                notes=v.get("notes", []),
                params=v.get("params"),
                sparsity=v.get("sparsity"),
                size_bytes=artifact_size(path),
                artifact=v["artifact"],
                unavailable=unavailable,
            )
        )
    out.sort(key=lambda c: c.name != "ort-fp32")
    return out
