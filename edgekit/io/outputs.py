"""The one rule for every path edgekit writes.

An output may replace only what edgekit itself wrote: a bundle (a folder with a valid
``manifest.json`` whose files are all listed, apart from edgekit's own ``bench/`` and ``doctor/``
outputs and on-device TensorRT engines), or an earlier bench output (``report.json`` and its
companions, nothing else). It never replaces or holds an input, the current directory or any of
its parents, or a folder with files edgekit did not write. A file output never replaces an input
and replaces an existing file only with ``--overwrite``.

Write failures of the operating system (permission denied, read-only or full file system, quota)
become :class:`~edgekit.errors.BadInputError` naming the user's folder and the reason.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import BadInputError

STALE_AFTER_S = 3600.0
BENCH_OUTPUT = frozenset({"report.json", "report.md", "latency.png"})
OWN_SUBFOLDERS = ("bench", "doctor")  # what edgekit writes into a bundle after it was made
DEVICE_BUILT = (".engine", ".plan", ".cache")  # TensorRT files 'edgekit build' adds on the device
TEMP_PREFIX = "edgekit-"  # every temporary folder edgekit makes in the system temp dir

WRITE_ERRORS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def _resolve(p: str | Path) -> Path:
    return Path(os.path.abspath(Path(p).expanduser())).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _input_files(inputs: Iterable[str | Path | None]) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        if p is None:
            continue
        q = _resolve(p)
        if q.is_dir():
            out.extend(f.resolve() for f in q.rglob("*") if f.is_file())
            out.append(q)
        elif q.exists():
            out.append(q)
    return out


def unlisted_files(folder: Path) -> list[str] | None:
    """Files of a bundle that its manifest does not list (edgekit's own later outputs aside),
    or None when ``folder`` has no readable manifest."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
        listed = {str(f["path"]) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    extra = []
    for p in sorted(folder.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(folder).as_posix()
        top = rel.split("/", 1)[0]
        if rel in ("manifest.json", "manifest.sig") or rel in listed or top in OWN_SUBFOLDERS:
            continue
        if top.startswith(tuple(f".{s}." for s in OWN_SUBFOLDERS)):  # a bench running right now
            continue
        if top == "tensorrt" and (p.suffix in DEVICE_BUILT or p.name.endswith(".engine.json")):
            continue
        extra.append(rel)
    return extra


def _is_bench_output(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    if "report.json" not in names or not names <= BENCH_OUTPUT:
        return False
    try:
        return "edgekit_version" in json.loads((folder / "report.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def edgekit_wrote(folder: Path) -> bool:
    """True when ``folder`` is a bundle or a bench output that edgekit wrote, and holds nothing else."""
    if (folder / "manifest.json").is_file():
        return unlisted_files(folder) == []
    return _is_bench_output(folder)


def check_output_dir(
    target: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False, flag: str = "-o"
) -> None:
    """Refuse an output folder that would destroy anything but edgekit's own earlier output."""
    target = Path(target)
    real = _resolve(target)
    cwd = _resolve(Path.cwd())
    if _inside(cwd, real):
        raise BadInputError(f"{flag} {target} is the current directory or one of its parents; choose a new folder")
    for f in _input_files(inputs):
        if _inside(f, real):
            raise BadInputError(f"{flag} {target} holds the input {f.name}; writing there would destroy it")
    if real.exists() and not real.is_dir():
        raise BadInputError(f"{flag} {target} exists and is not a folder; choose a new folder")
    if real.is_dir() and any(real.iterdir()):
        if not edgekit_wrote(real):
            raise BadInputError(
                f"{flag} {target} holds files edgekit did not write; choose an empty or new folder"
            )
        if not overwrite:
            raise BadInputError(f"{target} already exists; pass --overwrite to replace it or choose another {flag}")
    ensure_writable(real.parent)


def check_output_file(
    target: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False, flag: str = "-o"
) -> None:
    """Refuse an output file that is an input, a folder, or an existing file without ``--overwrite``."""
    target = Path(target)
    real = _resolve(target)
    for f in _input_files(inputs):
        if f == real:
            raise BadInputError(f"{flag} {target} is an input of this command; writing it would destroy it")
    if real.is_dir():
        raise BadInputError(f"{flag} {target} is a folder; give a file name")
    if real.exists() and not overwrite:
        raise BadInputError(f"{target} already exists; pass --overwrite to replace it or choose another {flag}")
    ensure_writable(real.parent)


def ensure_writable(folder: Path) -> None:
    """Check, by writing a probe file, that ``folder`` (or its nearest existing parent) takes files."""
    probe = Path(folder)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise BadInputError(f"cannot write to {folder}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".edgekit-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise write_error(exc, Path(folder)) or exc from exc


def _oserror(exc: BaseException | None) -> OSError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def write_error(exc: BaseException, folder: Path | None = None) -> BadInputError | None:
    """A one-line :class:`BadInputError` for an operating-system write failure, naming the folder
    (``folder``, else the one of the failing file); None when ``exc`` is not such a failure.

    Native libraries (ONNX, OpenVINO) report a full disk as their own error type; when the folder's
    file system has no space left, that is said instead."""
    os_exc = _oserror(exc)
    if os_exc is None:
        if folder is not None and not isinstance(exc, BadInputError) and _full(folder):
            return BadInputError(f"cannot write to {folder}: no space left on device; free space or choose another -o")
        return None
    where = folder
    if where is None:
        where = Path(os_exc.filename).parent if os_exc.filename else Path(".")
    reason = WRITE_ERRORS[os_exc.errno]  # type: ignore[index]
    fix = "free space or choose another -o" if os_exc.errno in (errno.ENOSPC, errno.EDQUOT) else "choose another -o"
    return BadInputError(f"cannot write to {where}: {reason}; {fix}")


def _full(folder: Path) -> bool:
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


@contextmanager
def private_tempdir() -> Iterator[Path]:
    """Run with a temp dir of this run's own (``edgekit-run-*`` in the system one): every
    temporary file of edgekit, of the libraries and of child processes lands there and is removed
    in one place on the way out, whatever stopped the run. Stale ones of older runs are swept."""
    base = Path(tempfile.gettempdir())
    sweep_stale(base)
    run = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}run-", dir=base))
    saved_dir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(run), str(run)
    try:
        yield run
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(run, ignore_errors=True)


def sweep_stale(parent: Path, name: str | None = None, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove edgekit's own leftovers older than ``older_than_s``: hidden ``.NAME.*.tmp`` / ``.old``
    folders beside an output (``name`` given) or ``edgekit-*`` folders in the system temp dir."""
    now = time.time()
    removed: list[Path] = []
    patterns = [f".{name}.*.tmp", f".{name}.*.old"] if name else [f"{TEMP_PREFIX}*"]
    try:
        candidates = [p for pat in patterns for p in Path(parent).glob(pat)]
    except OSError:
        return removed
    for p in candidates:
        try:
            if not p.is_dir() or p.is_symlink() or now - p.stat().st_mtime < older_than_s:
                continue
        except OSError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
