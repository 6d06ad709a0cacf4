"""Latency at given input shapes (``bench --shapes NAME:MIN/OPT/MAX``).

``bench`` times every variant at the median real shape of the evaluation data; with
``--shapes`` it also times them, interleaved, at each of the MIN, OPT and MAX shapes given. The
feeds are real evaluation samples fitted to the shape: cropped along an axis where they are
longer, right-padded with zeros (the padding convention of the data) where they are shorter,
and as many samples as the batch axis asks (repeated when the data has fewer). Each variant row
gets ``latency_by_shape["NAME:DxDxD"]`` with the usual statistics, the shape and its role
(``min`` / ``opt`` / ``max``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgekit.export.shapes import Profile, profile_from_data

ROLES = ("min", "opt", "max")


def fit(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Real samples of ``array`` (axis 0 = samples) cropped or zero-padded to ``shape``."""
    rows = np.resize(np.arange(len(array)), shape[0])
    src = array[rows]
    out = np.zeros(tuple(shape), dtype=array.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, shape, strict=True))
    out[common] = src[common]
    return np.ascontiguousarray(out)


def label(name: str, shape: Sequence[int]) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"


def time_at_shapes(
    rows: Sequence[Any],
    candidates: Sequence[Any],
    data: Any,
    given: Mapping[str, Profile],
    *,
    threads: int,
    budget_s: float,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[str]:
    """Time the measured ``candidates`` at each shape of ``given`` (checked against the model's
    inputs), interleaved; the stats go into ``row.latency_by_shape`` of the report ``rows`` of
    the same name, each at the thread count its row was fastest with (``threads`` when it has
    none). Inputs ``given`` does not name keep their median real shape. Returns the
    shape labels in the order timed."""
    from edgekit.benchmarks import latency as lat
    from edgekit.runtimes import runtime_for

    by_name = {r.name: r for r in rows}
    loaded = {
        c.name: runtime_for(c.runtime, c.precision, threads=by_name[c.name].threads or threads).load(c.path)
        for c in candidates
        if c.name in by_name and by_name[c.name].measured
    }
    if not loaded:
        return []
    first = next(iter(loaded.values()))
    profiles = profile_from_data(first.inputs, [data], given=given)
    axes = {s.name: list(s.shape) for s in first.inputs}
    labels: list[str] = []
    for i, role in enumerate(ROLES):
        for target, triple in given.items():
            shape = triple[i]
            key = label(target, shape)
            if key in labels:
                continue
            labels.append(key)
            fns, shapes = {}, {}
            for name, rt in loaded.items():
                bound = data.bind([s.name for s in rt.inputs])
                feed = {
                    k: fit(v, shape if k == target else _shape_for(k, v, profiles, axes, (target, shape)))
                    for k, v in bound.items()
                }
                fns[name] = lat.cycle(rt, [feed])
                shapes[name] = {k: list(v.shape) for k, v in feed.items()}
            progress(f"timing {len(loaded)} variants at the {role} shape {key}, interleaved")
            for name, stats in lat.measure(fns, batch=shape[0], budget_s=budget_s).items():
                by_name[name].latency_by_shape[key] = {**stats.as_dict(), "shape": shapes[name], "role": role}
    return labels


def check(candidates: Sequence[Any], data: Any, given: Mapping[str, Profile]) -> None:
    """Check ``given`` against the inputs of the first candidate (unknown input, wrong rank, a
    fixed axis given another size): :class:`BadInputError` before anything is measured."""
    from edgekit.runtimes import get_runtime

    first = get_runtime(candidates[0].runtime, threads=1).load(candidates[0].path)
    profile_from_data(first.inputs, [data], given=given)


def _shape_for(
    name: str,
    array: np.ndarray,
    profiles: Mapping[str, Profile],
    axes: Mapping[str, Sequence[Any]],
    given: tuple[str, Sequence[int]],
) -> tuple[int, ...]:
    """The shape of an input ``--shapes`` does not name: its median real shape at the given
    batch, except along a dynamic axis it shares (by name) with the given input, which follows."""
    target, shape = given
    base = list(profiles[name][1]) if name in profiles else list(array.shape)
    base[0] = shape[0]
    shared = {d: size for d, size in zip(axes[target], shape, strict=True) if isinstance(d, str)}
    for a, d in enumerate(axes.get(name, ())):
        if a > 0 and isinstance(d, str) and d in shared:
            base[a] = shared[d]
    return tuple(base)
