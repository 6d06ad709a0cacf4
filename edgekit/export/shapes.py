"""Input shapes for dynamic axes: parsing ``--shapes`` and deriving min/opt/max from real data.

A graph input whose axes are symbolic (a dynamic batch, a sequence length, an image width) needs
concrete ranges wherever an engine is built ahead of time (TensorRT optimization profiles) and
wherever latency is timed. The data decide: for every dynamic axis, the smallest, median and
largest real extent seen in calibration and evaluation (:mod:`edgekit.io.extents`: an attention
mask, or an ``<input>_length`` array); otherwise the array's own size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgekit.errors import BadInputError

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]  # (min, opt, max)
ProfileShapes = dict[str, Profile]

SHAPES_HELP = "NAME:MIN/OPT/MAX with shapes like 1x3x48x64, e.g. x:1x3x48x64/1x3x48x320/1x3x48x960"


def parse_shapes(specs: str | Iterable[str] | None) -> ProfileShapes:
    """``--shapes`` values → ``{input: (min, opt, max)}``. Several inputs are given by repeating
    the option or separating them with commas."""
    if specs is None:
        return {}
    items = [specs] if isinstance(specs, str) else list(specs)
    out: ProfileShapes = {}
    for item in (part.strip() for raw in items for part in raw.split(",")):
        if not item:
            continue
        name, sep, triple = item.rpartition(":")
        if not sep or not name:
            raise BadInputError(f"--shapes {item!r} names no input; write {SHAPES_HELP}")
        parts = triple.split("/")
        if len(parts) != 3:
            raise BadInputError(f"--shapes {item!r} needs three shapes MIN/OPT/MAX; write {SHAPES_HELP}")
        shapes = tuple(_parse_shape(p, item) for p in parts)
        lo, opt, hi = shapes
        if not len(lo) == len(opt) == len(hi):
            raise BadInputError(f"--shapes {item!r}: MIN, OPT and MAX must have the same rank")
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
            raise BadInputError(f"--shapes {item!r}: each axis needs MIN <= OPT <= MAX")
        if name in out:
            raise BadInputError(f"--shapes gives {name!r} twice; give each input once")
        out[name] = (lo, opt, hi)
    return out


def _parse_shape(text: str, item: str) -> Shape:
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError:
        raise BadInputError(f"--shapes {item!r}: {text!r} is not a shape like 1x3x48x64") from None
    if not dims or min(dims) < 1:
        raise BadInputError(f"--shapes {item!r}: every dimension must be a positive integer")
    return dims


def profile_from_data(
    inputs: Sequence[Any],
    data: Sequence[Any],
    *,
    batches: Sequence[int] = (1,),
    given: Mapping[str, Profile] | None = None,
) -> ProfileShapes:
    """Min/opt/max for every input with a dynamic axis.

    ``inputs`` are the graph's input specs (``name``, ``shape`` with ints for static axes),
    ``data`` the data sets the model will see (calibration and evaluation, bound to the inputs). A dynamic axis 0 is the
    batch: 1 / the smallest measured batch / at least 32. Other dynamic axes take the smallest,
    median and largest real extent in the data. ``given`` (``--shapes``) wins for its inputs.
    """
    given = dict(given or {})
    names = {s.name for s in inputs}
    unknown = sorted(set(given) - names)
    if unknown:
        raise BadInputError(f"--shapes names {unknown}, which are not model inputs; its inputs are {sorted(names)}")
    opt_batch, max_batch = min(batches), max(32, *batches)
    axes = {s.name: [a for a, d in enumerate(s.shape) if not isinstance(d, int)] for s in inputs}
    out: ProfileShapes = {}
    for spec in inputs:
        dims = list(spec.shape)
        if spec.name in given:
            out[spec.name] = _checked(spec.name, dims, given[spec.name])
            continue
        dynamic = [a for a, d in enumerate(dims) if not isinstance(d, int)]
        if not dynamic:
            continue
        extents = {a: _extents(spec.name, a, data, axes) for a in dynamic if a != 0}
        per_axis: list[tuple[int, int, int]] = []
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                per_axis.append((d, d, d))
            elif axis == 0:
                per_axis.append((1, opt_batch, max_batch))
            elif extents[axis] is None:
                raise BadInputError(
                    f"input {spec.name!r} has a dynamic axis {axis} ({d or '?'}) and no data to size it; "
                    f"give --shapes {SHAPES_HELP}"
                )
            else:
                per_axis.append(extents[axis])  # type: ignore[arg-type]
        lo, opt, hi = (tuple(t[i] for t in per_axis) for i in range(3))
        out[spec.name] = (lo, opt, hi)
    return out


def _extents(
    name: str, axis: int, data: Sequence[Any], axes: Mapping[str, Sequence[int]]
) -> tuple[int, int, int] | None:
    from edgekit.io.extents import find_extents

    seen: list[np.ndarray] = []
    for ds in data:
        arr = ds.inputs.get(name)
        if arr is None or arr.ndim <= axis or len(arr) == 0:
            continue
        ext = find_extents(ds.inputs, ds.lengths, axes)
        crop = ext.crops.get(name) if ext is not None else None
        if crop is not None and crop[0] == axis:
            seen.append(np.clip(crop[1], 1, arr.shape[axis]))
        else:
            seen.append(np.full(len(arr), arr.shape[axis], dtype=np.int64))
    if not seen:
        return None
    ext_all = np.concatenate(seen)
    return int(ext_all.min()), int(math.ceil(float(np.median(ext_all)))), int(ext_all.max())


def _checked(name: str, dims: list[Any], profile: Profile) -> Profile:
    for shape in profile:
        if len(shape) != len(dims):
            raise BadInputError(
                f"--shapes for {name!r}: {_fmt(shape)} has rank {len(shape)}, the input has {len(dims)}"
            )
        for axis, (got, want) in enumerate(zip(shape, dims, strict=True)):
            if isinstance(want, int) and got != want:
                raise BadInputError(
                    f"--shapes for {name!r}: axis {axis} of {_fmt(shape)} is fixed at {want} in the model"
                )
    return profile


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def describe(profiles: Mapping[str, Profile]) -> dict[str, str]:
    """``{input: "MIN/OPT/MAX"}`` as ``--shapes`` spells it (for reports and manifests)."""
    return {name: "/".join(_fmt(s) for s in triple) for name, triple in profiles.items()}


def from_described(described: Mapping[str, str] | None) -> ProfileShapes:
    """The inverse of :func:`describe` (a manifest's shapes back to profiles)."""
    if not described:
        return {}
    return parse_shapes([f"{name}:{spec}" for name, spec in described.items()])
