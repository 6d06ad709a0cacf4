"""User-facing failures. Each carries the exit code the CLI returns and a one-line message
that names the problem and the fix."""

from __future__ import annotations

import importlib.util


def error_line(exc: BaseException) -> str:
    """The first line of ``exc`` that says what went wrong, for a one-line message. OpenVINO puts
    the C++ source locations it passed through ("Exception from src/...:") before the message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if not (ln.startswith("Exception from ") and ln.endswith(":"))]
    return (said or lines or [type(exc).__name__])[0]


class EdgekitError(Exception):
    """An internal failure (exit code 1)."""

    exit_code = 1


class BadInputError(EdgekitError):
    """Bad input or usage: a wrong path, format, flag or data file (exit code 2)."""

    exit_code = 2


class MissingDependencyError(BadInputError):
    """An optional package a command needs is not installed (exit code 2)."""


class IntegrityError(BadInputError):
    """An artifact does not match its recorded hash, or fails a parity check (exit code 2)."""


class BudgetError(EdgekitError):
    """A measured budget (for example ``--max-drop``) could not be met (exit code 3)."""

    exit_code = 3


def require(module: str, *, package: str | None = None, extra: str | None = None) -> None:
    """Raise :class:`MissingDependencyError` unless ``module`` can be imported.

    Detects with ``importlib.util.find_spec`` so the heavy package is not imported here.
    """
    if importlib.util.find_spec(module) is not None:
        return
    pkg = package or module
    how = f"pip install 'edgekit[{extra}]'" if extra else f"pip install {pkg}"
    raise MissingDependencyError(f"this needs the {pkg} package, which is not installed; install it with: {how}")
