"""Name → "module:attr" registries whose targets are imported only when asked for."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from edgekit.errors import BadInputError

T = TypeVar("T")


def import_object(spec: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(f"{spec!r} is not of the form 'module:attribute'; write e.g. 'mypkg.models:build'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInputError(f"cannot import module {module_name!r} ({exc}); check the name and PYTHONPATH") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise BadInputError(f"module {module_name!r} has no attribute {attr!r}") from exc


class LazyRegistry(Generic[T]):
    """Maps names to ``"module:attr"`` strings; ``get`` imports on first use."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def spec(self, name: str) -> str:
        """The ``"module:attr"`` behind ``name``, without importing it."""
        return self._entries[name]

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise BadInputError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return import_object(self._entries[name])
