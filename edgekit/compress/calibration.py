"""Calibration feeds: the first samples of the calibration data, keyed by the model's inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset


def model_inputs(onnx_path: Path) -> dict[str, tuple[list[int | str], np.dtype]]:
    """The graph inputs (initializers excluded): name → (shape, symbolic dims as str; dtype)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    specs: dict[str, tuple[list[int | str], np.dtype]] = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        ttype = inp.type.tensor_type
        dims: list[int | str] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in ttype.shape.dim
        ]
        specs[inp.name] = (dims, np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)))
    return specs


def calibration_feeds(
    data: Dataset, onnx_path: Path, calib_size: int
) -> list[dict[str, np.ndarray]]:
    """The first ``calib_size`` samples of ``data`` as feeds keyed by the model's input names.

    One sample per feed (batch 1) unless the model has a fixed batch size, in which case feeds
    hold that many samples and an incomplete last group is dropped. Arrays are cast to the
    model's input types.
    """
    specs = model_inputs(onnx_path)
    if len(data) == 0:
        raise BadInputError(
            "the calibration data set is empty; pass --data with at least a few samples"
        )
    arrays = data.head(calib_size).bind(list(specs))
    batch = 1
    for dims, _ in specs.values():
        if dims and isinstance(dims[0], int) and dims[0] > 0:
            batch = dims[0]
    n = len(next(iter(arrays.values())))
    if n < batch:
        raise BadInputError(
            f"the model has a fixed batch size of {batch} but only {n} calibration samples "
            "were given; pass more samples or export the model with a dynamic batch axis"
        )
    return [
        {k: np.ascontiguousarray(arrays[k][i : i + batch], dtype=specs[k][1]) for k in specs}
        for i in range(0, n - batch + 1, batch)
    ]


def calibration_facts(feeds: list[dict[str, np.ndarray]]) -> tuple[dict[str, object], list[str]]:
    h = hashlib.sha256()
    identical = True
    for name in sorted(feeds[0]):
        stacked = np.concatenate([f[name] for f in feeds])
        h.update(name.encode())
        h.update(stacked.tobytes())
        identical = identical and bool(np.all(stacked == stacked[:1]))
    n = sum(len(next(iter(f.values()))) for f in feeds)
    notes = []
    if identical and n > 1:
        notes.append(
            f"all {n} calibration samples are identical: activation ranges cannot be estimated; "
            "calibrate on real, varied samples"
        )
    return {"n": n, "sha256": h.hexdigest()}, notes


