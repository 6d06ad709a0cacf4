"""One model file on its way from a technique to the report and the manifest.

A technique makes an :class:`Artifact` (name, runtime, precision, file); compress places it in the
bundle (``artifact`` = its path there, ``size_bytes``), the harness measures it into a report row
(:meth:`edgekit.benchmarks.report.VariantRow.of`) and the manifest lists it (:meth:`Artifact.manifest_entry`). Those two
conversions live here and nowhere else.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Artifact:
    """A deployable model file (``.onnx``, or ``.xml`` with its ``.bin``) and what is known of it."""

    name: str  # unique in a bundle, e.g. "ort-int8-static"
    runtime: str  # onnxruntime | openvino | tensorrt
    precision: str  # fp32 | fp16 | bf16 | int8 | mixed
    path: Path  # the model file
    techniques: list[str] = field(default_factory=list)  # e.g. ["prune:structured:0.5", "quantize:int8-static"]
    notes: list[str] = field(default_factory=list)  # facts the report must show (e.g. layers kept in float)
    extra_files: list[Path] = field(default_factory=list)  # files belonging to it (e.g. the IR's .bin)
    size_bytes: int | None = None
    params: int | None = None
    sparsity: float | None = None
    artifact: str | None = None  # its path relative to the bundle, once placed
    unavailable: str | None = None  # why this machine cannot run it, when the file itself says so

    def measure_size(self) -> int:
        """Bytes of the model file and its extra files (recorded in ``size_bytes``)."""
        self.size_bytes = int(self.path.stat().st_size + sum(p.stat().st_size for p in self.extra_files))
        return self.size_bytes

    def place(self, root: Path, sub: str) -> Path:
        """Move the files into the bundle layout (``<folder>/model.<short name><suffix>``), set
        ``path``, ``artifact`` and ``size_bytes``, and return the new path."""
        short = self.name.split("-", 1)[1] if "-" in self.name else self.name
        folder = root / sub if sub else root
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"model.{short}{self.path.suffix}"
        shutil.move(str(self.path), dest)
        for extra in self.extra_files:
            shutil.move(str(extra), dest.with_suffix(extra.suffix))
        self.extra_files = [dest.with_suffix(e.suffix) for e in self.extra_files]
        self.path = dest
        self.artifact = dest.relative_to(root).as_posix()
        self.measure_size()
        return dest

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's ``variants[]`` entry of this artifact."""
        return {
            "name": self.name,
            "runtime": self.runtime,
            "precision": self.precision,
            "artifact": self.artifact,
            "techniques": self.techniques,
            "notes": self.notes,
            "params": self.params,
            "sparsity": self.sparsity,
        }


class PartialBuild(Exception):  # noqa: N818 - a result that carries its failures, not only an error
    """Raised by a graph technique that built some runtimes' artifacts and not others: ``made``
    are delivered as they are and each of ``failed`` (runtime → error) becomes a "not built" row,
    so no runtime's work is redone."""

    def __init__(self, made: list[Artifact], failed: dict[str, BaseException]) -> None:
        super().__init__("; ".join(f"{rt}: {exc}" for rt, exc in failed.items()))
        self.made, self.failed = made, failed
