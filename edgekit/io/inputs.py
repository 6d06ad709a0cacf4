"""What a model's inputs are: names, per-sample shapes and dtypes, read from the model's metadata,
from ``--input-shape`` text or from the signature of its ``forward``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError

META_FILE = "edgekit.json"  # the metadata member of a saved model (a TorchScript archive's extra/ folder)


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, per-sample shape (no batch axis; ``None`` = dynamic), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"  # a numpy dtype name


def inputs_from_meta(meta: Mapping[str, Any], p: Path) -> list[InputSpec]:
    """Inputs recorded in the metadata, either as ``inputs: [{name, shape, dtype}]`` or as
    ``input_name``/``input_shape``/``input_dtype`` (per-sample shapes, batch axis excluded)."""
    entries: list[Mapping[str, Any]]
    if isinstance(meta.get("inputs"), list):
        entries = meta["inputs"]
    elif "input_shape" in meta:
        entries = [
            {
                "name": meta.get("input_name", "input"),
                "shape": meta["input_shape"],
                "dtype": meta.get("input_dtype", "float32"),
            }
        ]
    else:
        return []
    try:
        return [
            InputSpec(
                name=str(e.get("name", "input")),
                shape=tuple(None if d is None or int(d) < 0 else int(d) for d in e["shape"]),
                dtype=str(e.get("dtype", "float32")),
            )
            for e in entries
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadInputError(
            f"{p}: the inputs in its {META_FILE} are malformed ({exc!r}); re-save the model"
        ) from exc


_SHAPE_RE = re.compile(
    r"^(?:(?P<name>[A-Za-z_][\w.\-/]*):)?(?P<dims>[0-9?]+(?:x[0-9?]+)*|scalar)(?::(?P<dtype>\w+))?$"
)


def parse_input_shapes(text: str, *, known_names: list[str] | None = None) -> list[InputSpec]:
    """Parse ``"1x28x28"`` or ``"input:1x28x28,mask:64"`` or ``"input_ids:64:int64"``.

    Shapes are per sample (no batch axis); ``?`` marks a dynamic dimension; dtype defaults to
    float32. An unnamed single shape takes the model's only input name, else ``"input"``.
    """
    import numpy as np

    specs: list[InputSpec] = []
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise BadInputError(
            "--input-shape is empty; write e.g. 1x28x28 or input_ids:64:int64,attention_mask:64"
        )
    for item in items:
        match = _SHAPE_RE.match(item)
        if not match:
            raise BadInputError(
                f"cannot read input shape {item!r}; "
                "write e.g. 1x28x28 or input_ids:64:int64,attention_mask:64"
            )
        name = match["name"]
        if name is None:
            if len(items) > 1:
                raise BadInputError(
                    "name every input when giving several shapes "
                    f"(e.g. input_ids:64:int64), not {item!r}"
                )
            name = known_names[0] if known_names and len(known_names) == 1 else "input"
        dims: tuple[int | None, ...] = ()
        if match["dims"] != "scalar":
            dims = tuple(None if d == "?" else int(d) for d in match["dims"].split("x"))
        dtype = match["dtype"] or "float32"
        try:
            dtype = np.dtype(dtype).name
        except TypeError as exc:
            raise BadInputError(
                f"unknown dtype {dtype!r} in input shape {item!r}; use e.g. float32 or int64"
            ) from exc
        if any(s.name == name for s in specs):
            raise BadInputError(f"input {name!r} is given twice in --input-shape")
        specs.append(InputSpec(name=name, shape=dims, dtype=dtype))
    return specs


def forward_input_names(module: Any) -> list[str]:
    """Names of the positional arguments ``forward`` requires (for TorchScript, from its schema)."""
    if module is None:
        return []
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments[1:] if not a.has_default_value()]
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
