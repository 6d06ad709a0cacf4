"""Atomic writes: a reader sees the old artifact or the complete new one, never a half-written one.

Everything is written beside its target (same filesystem) and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from edgekit.errors import BadInputError, EdgekitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is racy in threads.
_UMASK = _umask()


def _fsync_dir(path: Path) -> None:
    with suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_nonempty(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


@contextmanager
def atomic_dir(target: Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it is renamed to ``target``.

    ``target`` must pass :func:`edgekit.io.outputs.check_output_dir` (it may replace only
    edgekit's own earlier output, never an input; an existing one only with ``overwrite``). On any
    exception, a signal included, the temporary directory is removed and ``target`` is left
    untouched; operating-system write failures become one-line errors naming ``target``'s folder,
    and messages never name the temporary directory. The final rename holds a lock on the parent
    folder, so concurrent runs into one target leave exactly one complete output.
    """
    from edgekit.io.interrupts import deferred
    from edgekit.io.outputs import check_output_dir, sweep_stale, write_error

    target = Path(target)
    check_output_dir(target, inputs=inputs, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise write_error(exc, target.parent) or exc from exc
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; the result should not be
        with deferred(), _locked(target.parent):
            if _is_nonempty(target):
                if not overwrite:  # something appeared there while we were writing
                    raise BadInputError(f"{target} was created by someone else meanwhile; nothing was written")
                check_output_dir(target, inputs=inputs, overwrite=overwrite)
                _replace_existing(tmp, target)
            else:
                if target.is_dir():
                    target.rmdir()  # empty: os.rename over it works on POSIX only
                os.rename(tmp, target)
            _fsync_dir(target.parent)
    except BaseException as exc:
        with deferred():
            _remove(tmp)
        _untemp(exc, tmp, target)
        if isinstance(exc, Exception) and not isinstance(exc, EdgekitError):
            mapped = write_error(exc, target.parent)
            if mapped is not None:
                raise mapped from exc
        raise


def _untemp(exc: BaseException, tmp: Path, target: Path) -> None:
    """Say the user's path in an error message, not the temporary directory's."""
    if isinstance(exc, EdgekitError) and exc.args and isinstance(exc.args[0], str):
        msg = exc.args[0]
        for t in sorted({str(tmp.absolute()), str(tmp)}, key=len, reverse=True):
            msg = msg.replace(t, str(target))
        exc.args = (msg, *exc.args[1:])


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` among edgekit processes (flock on the directory itself:
    no lock file is left behind). Where directories cannot be locked, no lock is taken."""
    fd = None
    with suppress(ImportError, OSError):
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _replace_existing(new: Path, target: Path) -> None:
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    aside = old / "previous"
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        _remove(old)
        raise
    _remove(old)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
