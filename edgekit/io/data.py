"""Data sets as named numpy arrays: what calibration, evaluation and latency runs consume.

A :class:`Dataset` holds one array per model input (first axis = samples) and optional labels.
``.npz`` files carry ``x`` (and optional ``y``) for a single-input model, or one array per input
named after the model's inputs; integer inputs stay integer. An optional int array
``<input>_length`` gives each sample's valid extent along that input's last (dynamic, right-padded)
axis; a 2-D integer ``y`` holds label sequences padded with -1 (task ``sequence``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError

TASKS = ("classification", "binary", "regression", "embedding", "sequence", "unknown")
LENGTH_SUFFIX = "_length"


@dataclass(frozen=True)
class Dataset:
    """Samples for a model: ``inputs`` maps input name → array with the sample axis first."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    task: str = "unknown"
    name: str = "data"
    directional_only: bool = False  # True for generated (random) data: figures are indicative
    meta: dict[str, str] = field(default_factory=dict)
    # input name -> valid extent of each sample along that input's last axis (right padding)
    lengths: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise BadInputError(f"data set {self.name!r} has no input arrays")
        lengths = {k: len(v) for k, v in self.inputs.items()}
        if len(set(lengths.values())) != 1:
            raise BadInputError(f"data set {self.name!r}: inputs have different sample counts {lengths}")
        if self.labels is not None and len(self.labels) != len(self):
            raise BadInputError(f"data set {self.name!r}: {len(self.labels)} labels for {len(self)} samples")
        if set(self.lengths) - set(self.inputs):
            # Inputs re-bound to the model's names (``replace(ds, inputs=ds.bind(names))``): a lone
            # input keeps its lengths under its new name; lengths of dropped inputs go with them.
            lone = len(self.inputs) == 1 and len(self.lengths) == 1
            kept = (
                {next(iter(self.inputs)): next(iter(self.lengths.values()))}
                if lone
                else {k: v for k, v in self.lengths.items() if k in self.inputs}
            )
            object.__setattr__(self, "lengths", kept)
        for key, arr in self.lengths.items():
            if arr.ndim != 1 or len(arr) != len(self):
                raise BadInputError(
                    f"data set {self.name!r}: '{key}{LENGTH_SUFFIX}' must be one integer per sample of an input "
                    f"array named {key!r}"
                )
        if self.task not in TASKS:
            raise BadInputError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def names(self) -> list[str]:
        return list(self.inputs)

    def subset(self, index: Sequence[int] | np.ndarray | slice) -> Dataset:
        idx = index if isinstance(index, slice) else np.asarray(index)
        return Dataset(
            inputs={k: v[idx] for k, v in self.inputs.items()},
            labels=None if self.labels is None else self.labels[idx],
            task=self.task,
            name=self.name,
            directional_only=self.directional_only,
            meta=dict(self.meta),
            lengths={k: v[idx] for k, v in self.lengths.items()},
        )

    def head(self, n: int) -> Dataset:
        return self.subset(slice(0, min(n, len(self))))

    def batches(self, batch_size: int) -> list[dict[str, np.ndarray]]:
        """Feeds of ``batch_size`` consecutive samples (the last one may be smaller)."""
        return [{k: v[i : i + batch_size] for k, v in self.inputs.items()} for i in range(0, len(self), batch_size)]

    def feed_for(self, input_names: Sequence[str], index: slice | np.ndarray) -> dict[str, np.ndarray]:
        """A feed keyed by the model's own input names (a single unnamed ``x`` maps to the only input)."""
        arrays = self.bind(input_names)
        return {k: v[index] for k, v in arrays.items()}

    def bind(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Arrays keyed by the model's input names; raises a clear error when they do not fit."""
        names = list(input_names)
        if set(names) <= set(self.inputs):
            return {n: self.inputs[n] for n in names}
        if len(names) == 1 and len(self.inputs) == 1:
            return {names[0]: next(iter(self.inputs.values()))}
        raise BadInputError(
            f"data set {self.name!r} has arrays {sorted(self.inputs)} but the model's inputs are {names}; "
            "name one array per model input in the .npz"
        )

    def bind_lengths(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """:attr:`lengths` keyed like :meth:`bind` keys the inputs."""
        names = list(input_names)
        if set(names) <= set(self.inputs):
            return {n: self.lengths[n] for n in names if n in self.lengths}
        if len(names) == 1 and len(self.inputs) == 1 and self.lengths:
            return {names[0]: next(iter(self.lengths.values()))}
        return {}

    def sha256(self) -> str:
        """Content hash of inputs and labels, stable across processes."""
        h = hashlib.sha256()
        for key in sorted(self.inputs):
            arr = np.ascontiguousarray(self.inputs[key])
            h.update(key.encode())
            h.update(str(arr.dtype).encode())
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        for key in sorted(self.lengths):
            h.update(f"{key}{LENGTH_SUFFIX}".encode())
            h.update(np.ascontiguousarray(self.lengths[key], dtype=np.int64).tobytes())
        return h.hexdigest()


def split(data: Dataset, fractions: Sequence[float], seed: int) -> list[Dataset]:
    """Shuffle with ``seed`` and cut into consecutive parts of the given fractions (they sum ≤ 1)."""
    if sum(fractions) > 1.0 + 1e-9:
        raise ValueError(f"fractions {fractions} add up to more than 1")
    order = np.random.default_rng(seed).permutation(len(data))
    parts, start = [], 0
    for frac in fractions:
        stop = start + int(round(frac * len(data)))
        parts.append(data.subset(order[start:stop]))
        start = stop
    return parts


def load_npz(path: str | Path, *, task: str = "unknown") -> Dataset:
    """Load ``x``/``y`` or per-input arrays from an ``.npz`` (never with pickle)."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"data file {p} does not exist; pass an .npz with an 'x' array (and optional 'y')")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # ValueError (pickled objects), zipfile.BadZipFile, OSError
        raise BadInputError(f"{p} is not a readable .npz of numeric arrays ({exc}); save it with numpy.savez") from exc
    for key, arr in arrays.items():
        _check_array(p, key, arr)
    labels = arrays.pop("y", None)
    lengths = {
        k.removesuffix(LENGTH_SUFFIX): arrays.pop(k)
        for k in list(arrays)
        if k.endswith(LENGTH_SUFFIX) and k.removesuffix(LENGTH_SUFFIX) in arrays
    }
    if not arrays:
        raise BadInputError(f"{p} has no input arrays; store the inputs as 'x' (or one array per model input)")
    for key, arr in lengths.items():
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise BadInputError(
                f"{p}: '{key}{LENGTH_SUFFIX}' must be a 1-D integer array (one valid length per sample), "
                f"not {arr.dtype} {arr.shape}"
            )
    if labels is not None and labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels is not None and task == "unknown":
        if np.issubdtype(labels.dtype, np.integer):
            task = "sequence" if labels.ndim == 2 else "classification"
        else:
            task = "regression"
    return Dataset(inputs=arrays, labels=labels, task=task, name=p.name, lengths=lengths)


def _check_array(p: Path, key: str, arr: np.ndarray) -> None:
    """Numbers only (bool, integers, floats), at least one sample, and every float finite."""
    if arr.dtype.kind not in "biuf":
        raise BadInputError(
            f"{p}: array {key!r} holds {arr.dtype} values; inputs and labels must be numeric arrays "
            "(convert text to token ids first)"
        )
    if arr.ndim == 0 or len(arr) == 0:
        raise BadInputError(f"{p}: array {key!r} has no samples (shape {arr.shape}); the first axis is the sample axis")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise BadInputError(f"{p}: array {key!r} has {bad} NaN or infinite value(s); clean or drop those samples")


def check_labels(data: Dataset, task: str, width: int, *, source: str = "--data") -> None:
    """Classification labels must be whole numbers naming one of the model's ``width`` outputs
    (0/1 for a single-output binary model). Their shape is checked by
    :func:`edgekit.io.splits.infer_task`, once the model's output is known."""
    y = data.labels
    if y is None or task not in ("classification", "binary"):
        return
    classes = 2 if task == "binary" or width == 1 else width
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise BadInputError(f"{source}: labels 'y' of a classifier must be whole class numbers, not fractions")
    lo, hi = (int(y.min()), int(y.max())) if len(y) else (0, 0)
    if lo < 0 or hi >= classes:
        raise BadInputError(
            f"{source}: label(s) outside 0..{classes - 1} in 'y' (found {lo}..{hi}); the model has {classes} classes"
        )


def bundle_samples(root: Path, model: dict[str, Any], rel: str = "data/eval.npz") -> Dataset:
    """Samples a bundle keeps (``data/eval.npz``, or ``data/calib.npz``: what compress calibrated
    on), bound to the model's inputs; ``model`` is the manifest's ``model`` entry."""
    task = model.get("task", "unknown")
    ds = load_npz(Path(root) / rel, task=task)
    bound = model.get("inputs") or ds.names
    return Dataset(
        inputs=ds.bind(bound), labels=ds.labels, task=task, name=Path(rel).stem, lengths=ds.bind_lengths(bound)
    )


def random_like(shapes: dict[str, tuple[tuple[int, ...], np.dtype]], n: int, seed: int) -> Dataset:
    """Generated samples for ``--calib random``: standard normal floats, small non-negative ints.

    Figures measured on it are directional only, and the report says so.
    """
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in shapes.items():
        if np.issubdtype(dtype, np.integer):
            inputs[name] = rng.integers(0, 100, size=(n, *shape)).astype(dtype)
        else:
            inputs[name] = rng.standard_normal((n, *shape)).astype(dtype)
    return Dataset(inputs=inputs, name="random", directional_only=True)


def save_npz(data: Dataset, path: str | Path) -> None:
    """Write ``data`` as the ``.npz`` that :func:`load_npz` reads: one array per input, each
    ``<input>_length``, and ``y`` (when labelled); atomically, never with pickle."""
    import io

    from edgekit.io.atomic import atomic_write_bytes

    arrays = dict(data.inputs)
    arrays.update({f"{k}{LENGTH_SUFFIX}": v.astype(np.int64) for k, v in data.lengths.items()})
    if data.labels is not None:
        arrays["y"] = data.labels
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())
