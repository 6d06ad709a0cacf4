"""``manifest.json``: what a bundle holds, where it came from, and the SHA-256 of every file.

Loading a bundle verifies every listed hash; a mismatch or a missing file is an
:class:`~edgekit.errors.IntegrityError` (exit code 2).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import BadInputError, IntegrityError
from edgekit.io.atomic import sha256_file

SCHEMA = 1
MANIFEST = "manifest.json"
TOOLCHAIN_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy", "torch-pruning", "tensorrt")


def toolchain() -> dict[str, str]:
    """Versions of the packages that produced the artifacts (those installed)."""
    out: dict[str, str] = {"edgekit": __version__}
    for pkg in TOOLCHAIN_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass
class Manifest:
    source: dict[str, str]  # {"path", "sha256"}
    recipe: dict[str, Any]
    calibration: dict[str, Any]  # {"sha256", "n", "seed", "directional_only"}
    target: str
    files: list[FileEntry] = field(default_factory=list)
    report: str = "report.json"
    schema: int = SCHEMA
    edgekit_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    toolchain: dict[str, str] = field(default_factory=toolchain)
    model: dict[str, Any] = field(default_factory=dict)  # task, inputs, metric of the source model
    variants: list[dict[str, Any]] = field(default_factory=list)  # name, runtime, precision, artifact, techniques
    budget: dict[str, Any] = field(default_factory=dict)  # the fidelity gate compress applied

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        files = [FileEntry(**f) for f in d.get("files", [])]
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "files"}
        return cls(files=files, **known)

    def add_files(self, root: Path, paths: list[Path]) -> None:
        for p in sorted(paths):
            rel = p.relative_to(root).as_posix()
            self.files.append(FileEntry(path=rel, sha256=sha256_file(p), size=p.stat().st_size))


def write(root: Path, manifest: Manifest) -> Path:
    path = root / MANIFEST
    path.write_text(manifest.to_json())
    return path


def read(root: str | Path, *, verify: bool = True) -> Manifest:
    """Read a bundle's manifest and (by default) verify every file's size and SHA-256."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BadInputError(f"{root} is not a bundle directory; make one with 'edgekit compress MODEL'")
    if not path.is_file():
        raise BadInputError(f"{root} has no {MANIFEST}; it is not an edgekit bundle (make one with 'edgekit compress')")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{path} is not a valid manifest ({exc}); rebuild the bundle") from exc
    if manifest.schema > SCHEMA:
        raise BadInputError(
            f"{path} has schema {manifest.schema}, newer than this edgekit reads ({SCHEMA}); upgrade edgekit"
        )
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    for entry in manifest.files:
        p = root / entry.path
        if not p.is_file():
            raise IntegrityError(
                f"bundle file {entry.path} is missing; the bundle is incomplete — rebuild or re-ship it"
            )
        if p.stat().st_size != entry.size or sha256_file(p) != entry.sha256:
            raise IntegrityError(
                f"bundle file {entry.path} does not match its SHA-256 in {MANIFEST}; "
                "it was altered or corrupted — rebuild or re-ship the bundle"
            )
