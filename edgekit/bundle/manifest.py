"""``manifest.json``: what a bundle holds, where it came from, and the SHA-256 of every file.

Loading a bundle verifies every listed hash; a mismatch or a missing file is an
:class:`~edgekit.errors.IntegrityError` (exit code 2).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints, ValidationError

from edgekit import __version__
from edgekit.errors import BadInputError, IntegrityError
from edgekit.io.atomic import sha256_file

log = logging.getLogger(__name__)

SCHEMA = 1
MANIFEST = "manifest.json"
TOOLS = ("onnx", "nncf", "numpy", "torch-pruning")  # besides each runtime's own package


def toolchain_packages() -> tuple[str, ...]:
    """The packages whose versions a bundle records: every runtime's (the runtime table) and the tools."""
    from edgekit.runtimes import table

    return (*dict.fromkeys(info.package for info in table.rows()), *TOOLS)


def toolchain() -> dict[str, str]:
    """Versions of the packages that produced the artifacts (those installed)."""
    out: dict[str, str] = {"edgekit": __version__}
    for pkg in toolchain_packages():
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
    extra_files: list[str] = field(default_factory=list, repr=False)  # found on disk, not listed (never written)

    def to_json(self) -> str:
        from edgekit.benchmarks.report import finite

        d = asdict(self)
        d.pop("extra_files")
        return json.dumps(finite(d), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        files = [FileEntry(path=f["path"], sha256=f["sha256"], size=f["size"]) for f in d.get("files", [])]
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("files", "extra_files")}
        return cls(files=files, **known)

    def add_files(self, root: Path, paths: list[Path]) -> None:
        for p in sorted(paths):
            rel = p.relative_to(root).as_posix()
            self.files.append(FileEntry(path=rel, sha256=sha256_file(p), size=p.stat().st_size))


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # keys may be added by newer versions, never renamed


class FileSchema(_Open):
    path: StrictStr
    sha256: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[StrictInt, Field(ge=0)]


class VariantSchema(_Open):
    name: StrictStr
    runtime: StrictStr
    precision: StrictStr
    artifact: StrictStr
    techniques: list[StrictStr] = []


class ManifestSchema(_Open):
    """What ``manifest.json`` must hold; its JSON Schema is written into every bundle."""

    schema_: Annotated[StrictInt, Field(alias="schema", ge=1)]
    edgekit_version: StrictStr
    created: StrictStr
    source: dict[str, Any]
    recipe: dict[str, Any]
    calibration: dict[str, Any]
    target: StrictStr
    toolchain: dict[str, StrictStr]
    files: list[FileSchema]
    report: StrictStr = "report.json"
    model: dict[str, Any] = {}
    variants: list[VariantSchema] = []
    budget: dict[str, Any] = {}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``manifest.json``."""
    return ManifestSchema.model_json_schema(by_alias=True)


def write_schemas(root: Path) -> list[Path]:
    """Write the JSON Schemas of ``manifest.json`` and ``report.json`` into ``root/schema/``."""
    from edgekit.benchmarks.report import json_schema as report_schema

    folder = root / "schema"
    folder.mkdir(exist_ok=True)
    out = []
    for name, schema in (("manifest", json_schema()), ("report", report_schema())):
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, allow_nan=False) + "\n")
        out.append(path)
    return out


def write(root: Path, manifest: Manifest) -> Path:
    path = root / MANIFEST
    path.write_text(manifest.to_json())
    return path


def parse(text: str, where: Path) -> Manifest:
    """Validate ``manifest.json`` text against :class:`ManifestSchema` (one-line error otherwise)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise IntegrityError(f"{where} is not a valid manifest ({exc}); rebuild the bundle") from exc
    if not isinstance(data, dict):
        raise IntegrityError(
            f"{where} is not a valid manifest (a JSON {type(data).__name__}, not an object); rebuild the bundle"
        )
    try:
        ManifestSchema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise IntegrityError(
            f"{where} is not a valid manifest ({loc}: {first['msg']}); rebuild the bundle"
        ) from None
    return Manifest.from_dict(data)


def read(root: str | Path, *, verify: bool = True) -> Manifest:
    """Read a bundle's manifest, check its schema and that every path stays inside the bundle,
    and (by default) verify the closed world: every listed file's size and SHA-256, every file a
    variant loads listed. Files the manifest does not list end up in ``manifest.extra_files``."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BadInputError(f"{root} is not a bundle directory; make one with 'edgekit compress MODEL'")
    if not path.is_file():
        raise BadInputError(f"{root} has no {MANIFEST}; it is not an edgekit bundle (make one with 'edgekit compress')")
    manifest = parse(path.read_text(), path)
    if manifest.schema > SCHEMA:
        raise BadInputError(
            f"{path} has schema {manifest.schema}, newer than this edgekit reads ({SCHEMA}); upgrade edgekit"
        )
    check_paths(root, manifest)
    if verify:
        verify_files(root, manifest)
        from edgekit.io.outputs import unlisted_files

        manifest.extra_files = unlisted_files(root) or []
        for extra in manifest.extra_files:
            log.warning("edgekit: warning: %s/%s is not listed in %s; it is ignored", root, extra, MANIFEST)
    return manifest


def _inside(root: Path, rel: str, what: str) -> Path:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise IntegrityError(
            f"{what} {rel!r} in {MANIFEST} is not a relative path inside the bundle; refusing the bundle"
        )
    real = (root / p).resolve()
    base = root.resolve()
    if real != base and base not in real.parents:
        raise IntegrityError(f"{what} {rel!r} in {MANIFEST} leads outside the bundle (a symlink?); refusing the bundle")
    return real


def loaded_files(artifact: str) -> list[str]:
    """Every file a runtime reads for ``artifact``: the model file and its companions."""
    p = Path(artifact)
    out = [artifact]
    if p.suffix == ".xml":
        out.append(p.with_suffix(".bin").as_posix())
    return out


def check_paths(root: Path, manifest: Manifest) -> None:
    """Every path in the manifest is relative and, symlinks resolved, inside ``root``; every file a
    variant loads is listed."""
    listed = set()
    for entry in manifest.files:
        _inside(root, entry.path, "file")
        if entry.path in listed:
            raise IntegrityError(f"file {entry.path!r} is listed twice in {MANIFEST}; rebuild the bundle")
        listed.add(entry.path)
    for v in manifest.variants:
        _inside(root, v["artifact"], f"variant {v['name']}")
        for f in loaded_files(v["artifact"]):
            if f not in listed:
                raise IntegrityError(
                    f"variant {v['name']} loads {f}, which {MANIFEST} does not list with a hash; "
                    "refusing to run an unverified file — rebuild the bundle"
                )
    if manifest.variants and "data/eval.npz" not in listed:
        raise IntegrityError(f"{MANIFEST} does not list data/eval.npz with a hash; rebuild the bundle")


def verify_files(root: Path, manifest: Manifest) -> None:
    for entry in manifest.files:
        p = root / entry.path
        if not p.is_file():  # check_paths made sure it resolves inside the bundle
            raise IntegrityError(
                f"bundle file {entry.path} is missing; the bundle is incomplete — rebuild or re-ship it"
            )
        if p.stat().st_size != entry.size or sha256_file(p) != entry.sha256:
            raise IntegrityError(
                f"bundle file {entry.path} does not match its SHA-256 in {MANIFEST}; "
                "it was altered or corrupted — rebuild or re-ship the bundle"
            )
