"""Which samples calibrate a model and which evaluate it.

Reference models use their own data set (train / calibration / held-out test). A user model
needs ``--data`` (an .npz, split here into calibration and held-out parts with a seed) or
``--calib random`` (generated samples: figures are then directional only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

CALIB_SIZE = 300  # calibration samples when no step configures calib_size
EVAL_FRACTION = 0.3
RANDOM_SAMPLES = 256


@dataclass
class Splits:
    train: Dataset | None
    calib: Dataset
    eval: Dataset
    info: dict[str, Any] = field(default_factory=dict)

    def map(self, fn: Callable[[Dataset], Dataset]) -> Splits:
        """The same splits with ``fn`` applied to each data set."""
        train = None if self.train is None else fn(self.train)
        return Splits(train=train, calib=fn(self.calib), eval=fn(self.eval), info=self.info)


def _input_names(loaded: Any) -> list[str]:
    return [s.name for s in loaded.inputs]


def resolve_data(
    loaded: Any,
    data: str | Path | None,
    calib: str,
    seed: int,
    calib_data: str | Path | None = None,
    calib_size: int = CALIB_SIZE,
) -> Splits:
    """Calibration and held-out evaluation data for ``loaded``.

    Reference models use their own data set. A user model needs ``--data`` (an .npz) or
    ``--calib random`` (generated samples: figures are then directional only). ``calib_data``
    replaces the calibration samples only (evaluation stays on the held-out split). The
    calibration set is the first ``calib_size`` samples of its pool: the only cap, and it comes
    from the configuration (the steps' ``calib_size``).
    """
    splits = _resolve(loaded, data, calib, seed)
    info = dict(splits.info)
    cal = splits.calib
    if calib_data is not None:
        from edgekit.io.data import load_npz

        pool = load_npz(calib_data)
        cal = Dataset(inputs=pool.bind(splits.calib.names), name=pool.name)
        info["calib_source"] = str(calib_data)
    cal = cal.head(calib_size)
    info["calib_n"] = len(cal)
    return Splits(train=splits.train, calib=cal, eval=splits.eval, info=info)


def _resolve(loaded: Any, data: str | Path | None, calib: str, seed: int) -> Splits:
    from edgekit.io.data import load_npz, random_like, split

    if calib not in ("data", "random"):
        raise BadInputError(f"--calib must be 'data' or 'random' (got {calib!r})")
    meta = loaded.meta or {}
    if data is None and calib == "data" and meta.get("zoo"):
        from edgekit.registry import import_object

        # The zoo sits above io (its data sets are io Datasets): it is named here, not imported.
        load_reference = import_object("edgekit.zoo.datasets:load_data")
        s = load_reference(meta["zoo"], seed=int(meta.get("seed", 0)))
        info = {"source": f"reference data set of {meta['zoo']}", "calib_n": len(s.calib), "eval_n": len(s.test)}
        return Splits(train=s.train, calib=s.calib, eval=s.test, info=info)
    if data is not None:
        ds = load_npz(data)
        names = _input_names(loaded) or (["input"] if len(ds.inputs) == 1 else list(ds.inputs))
        ds = Dataset(
            inputs=ds.bind(names), labels=ds.labels, task=ds.task, name=ds.name, lengths=ds.bind_lengths(names)
        )
        if len(ds) < 4:
            raise BadInputError(f"{data} has {len(ds)} samples; calibration and evaluation need at least 4")
        train_part, eval_part = split(ds, [1 - EVAL_FRACTION, EVAL_FRACTION], seed)
        calib_part = train_part  # the calibration pool; compress takes the configured calib_size of it
        info = {
            "source": str(data),
            "calib_n": len(calib_part),
            "eval_n": len(eval_part),
            "labels": ds.labels is not None,
        }
        return Splits(train=train_part if ds.labels is not None else None, calib=calib_part, eval=eval_part, info=info)
    if calib == "random":
        specs = loaded.inputs
        if not specs or any(d is None for s in specs for d in s.shape):
            raise BadInputError(
                "--calib random needs fixed input shapes; pass --input-shape (e.g. 3x32x32) or use --data calib.npz"
            )
        shapes = {s.name: (tuple(int(d) for d in s.shape), np.dtype(s.dtype)) for s in specs}
        cal = random_like(shapes, RANDOM_SAMPLES, seed)
        ev = random_like(shapes, RANDOM_SAMPLES // 2, seed + 1)
        info = {
            "source": "random (directional only: figures do not predict real accuracy)",
            "calib_n": len(cal),
            "eval_n": len(ev),
        }
        return Splits(train=None, calib=cal, eval=ev, info=info)
    raise BadInputError(
        f"{loaded.path.name} is not a reference model: pass --data calib.npz (an 'x' array, optional 'y') "
        "or --calib random (directional figures only)"
    )


def infer_task(splits: Splits, outputs: np.ndarray, meta_task: str | None) -> str:
    """The task of the model whose first output on a few samples is ``outputs``; the labels' shape
    is checked here (and only here): one value per sample, or integer sequences for per-position
    outputs. Their values are checked against the model by :func:`edgekit.io.data.check_labels`."""
    task = _infer_task(splits.eval.labels, outputs, meta_task)
    labels = splits.eval.labels
    if labels is not None and labels.ndim != 1 and not (labels.ndim == 2 and task == "sequence"):
        raise BadInputError(
            f"--data: array 'y' has shape {tuple(labels.shape)}; labels are one value per sample (a 1-D array), "
            "or integer label sequences padded with -1 for a model with per-position outputs [B, T, C]"
        )
    return task


def _infer_task(labels: np.ndarray | None, outputs: np.ndarray, meta_task: str | None) -> str:
    if meta_task:
        return meta_task
    if labels is None:
        return "unknown"
    width = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    if np.issubdtype(labels.dtype, np.integer):
        if labels.ndim == 2 and outputs.ndim == 3:
            return "sequence"  # label sequences (padded with -1) for per-position class scores
        return "binary" if width == 1 else "classification"
    return "regression"
