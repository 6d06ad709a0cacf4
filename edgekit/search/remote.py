"""Measuring search candidates on a device: ``edgekit search --host ssh://[user@]host[:port]``.

Candidates are built here (the build machine has the compilers and the training data); each
measurement — the fidelity gate and the interleaved timing — runs on the device, with the same
harness as ``bench``. One measurement is one ``ssh`` call: a tar stream with the candidate files,
the held-out samples and the options goes into ``edgekit measure-stage`` on the device, which
unpacks it into a temporary folder, measures, prints the rows as JSON and removes the folder.
Nothing is left on the device and nothing there is trusted beyond data: no pickle, relative paths
only (tar's ``data`` filter).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from edgekit.artifact import Artifact
from edgekit.benchmarks.gate import Budget
from edgekit.benchmarks.report import VariantRow
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset, load_npz, save_npz

STAGE = "stage.json"
DATA = "data.npz"
STAGE_VERSION = 1
MEASURE_OPTIONS = ("baseline", "batches", "threads", "budget_s", "with_memory")


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_stage(
    stream: IO[bytes], candidates: Sequence[Artifact], data: Dataset, budget: Budget, options: dict[str, Any]
) -> None:
    """Write the tar stream ``edgekit measure-stage`` reads: each candidate's files in a folder of
    its own, ``data.npz`` and ``stage.json``."""
    entries = []
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for i, c in enumerate(candidates):
            folder = f"c{i}"
            for f in (c.path, *c.extra_files):
                tar.add(f, arcname=f"{folder}/{f.name}", recursive=False)
            entries.append({
                "name": c.name, "runtime": c.runtime, "precision": c.precision, "techniques": c.techniques,
                "notes": c.notes, "size_bytes": c.size_bytes, "artifact": c.artifact,
                "path": f"{folder}/{c.path.name}", "extra_files": [f"{folder}/{f.name}" for f in c.extra_files],
            })  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="edgekit-stage-") as tmp:
            save_npz(data, Path(tmp) / DATA)
            _add_bytes(tar, DATA, (Path(tmp) / DATA).read_bytes())
        stage = {
            "version": STAGE_VERSION,
            "candidates": entries,
            "data": {"task": data.task, "name": data.name, "meta": dict(data.meta),
                     "directional_only": data.directional_only},  # fmt: skip
            "budget": dataclasses.asdict(budget),
            "measure": {k: options[k] for k in MEASURE_OPTIONS if k in options},
        }
        _add_bytes(tar, STAGE, json.dumps(stage).encode())


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise BadInputError(f"measure-stage: {rel!r} is not a file of the stage; the stream is damaged")
    return path


def measure_stage(stream: IO[bytes]) -> dict[str, Any]:
    """The device end: unpack a stage from ``stream``, measure it with the harness, and return
    ``{"rows": [...], "machine": {...}}``. The temporary folder is removed whatever happens."""
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import machine_info

    with tempfile.TemporaryDirectory(prefix="edgekit-stage-") as tmp:
        root = Path(tmp)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInputError(f"measure-stage: the stream broke off or is not a tar archive ({exc})") from None
        try:
            stage = json.loads(_inside(root, STAGE).read_text())
        except json.JSONDecodeError as exc:
            raise BadInputError(f"measure-stage: {STAGE} is not JSON ({exc}); the stream is damaged") from None
        if not isinstance(stage, dict) or stage.get("version") != STAGE_VERSION:
            raise BadInputError(
                f"measure-stage: stage version {stage.get('version') if isinstance(stage, dict) else None} but this "
                f"edgekit reads {STAGE_VERSION}; "
                "install the same edgekit version here as on the build machine"
            )
        missing = {"candidates", "data", "budget", "measure"} - set(stage)
        if missing:
            raise BadInputError(f"measure-stage: {STAGE} lacks {', '.join(sorted(missing))}; the stream is damaged")
        d = stage["data"]
        loaded = load_npz(_inside(root, DATA), task=d["task"])
        data = dataclasses.replace(loaded, name=d["name"], meta=d["meta"], directional_only=d["directional_only"])
        candidates = [
            Artifact(
                name=c["name"], runtime=c["runtime"], precision=c["precision"], path=_inside(root, c["path"]),
                techniques=c["techniques"], notes=c["notes"], size_bytes=c["size_bytes"], artifact=c["artifact"],
                extra_files=[_inside(root, f) for f in c["extra_files"]],
            )  # fmt: skip
            for c in stage["candidates"]
        ]
        options = dict(stage["measure"])
        options["batches"] = tuple(options.get("batches", (1,)))
        if options.get("threads") is None:
            from edgekit.benchmarks.latency import default_threads

            options["threads"] = default_threads()[0]
        rows = harness.measure(candidates, data, budget=Budget(**stage["budget"]), **options)
        return {"rows": [dataclasses.asdict(r) for r in rows], "machine": machine_info(int(options["threads"]))}


class RemoteMeasure:
    """An executor whose builds run as ``runner``'s do and whose measurements run on ``host``."""

    def __init__(self, runner: Any, device: Any, *, threads: int | None = None) -> None:
        """``device``: the launcher of the edgekit command there (:func:`edgekit.devices.remote.launcher`,
        already checked by the caller). ``threads`` None: the device's own default (its physical
        cores), as ``bench`` there."""
        self._runner, self._threads, self._lch = runner, threads, device
        self.name = f"{runner.name} builds, measured on {self._lch.where}"
        self.machine: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return self._lch.where

    def builds(self, jobs: Sequence[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        return self._runner.builds(jobs)  # type: ignore[no-any-return]

    def measure(
        self, fn: Callable[..., Any], candidates: Sequence[Artifact], data: Dataset, *, budget: Budget, **options: Any
    ) -> list[VariantRow]:
        """``fn`` is the harness's ``measure``; it runs on the device with the same arguments."""
        options = {**options, "threads": self._threads}
        with tempfile.TemporaryFile() as stream:
            write_stage(stream, candidates, data, budget, options)
            stream.seek(0)
            result = self._lch.run(["measure-stage", "--json"], stdin=stream).json()
        self.machine = result["machine"]
        known = VariantRow.__dataclass_fields__
        return [VariantRow(**{k: v for k, v in r.items() if k in known}) for r in result["rows"]]

    def close(self) -> None:
        self._runner.close()
