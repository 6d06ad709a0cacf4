from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset, load_npz, random_like, split


def make(n: int = 10) -> Dataset:
    return Dataset(
        inputs={"input": np.arange(n * 2, dtype=np.float32).reshape(n, 2)},
        labels=np.arange(n) % 3,
        task="classification",
    )


def test_split_is_seeded_disjoint_and_complete() -> None:
    a, b = split(make(10), [0.7, 0.3], seed=1)
    a2, _ = split(make(10), [0.7, 0.3], seed=1)
    assert len(a) == 7 and len(b) == 3
    assert np.array_equal(a.inputs["input"], a2.inputs["input"])
    rows = {tuple(r) for r in np.concatenate([a.inputs["input"], b.inputs["input"]])}
    assert len(rows) == 10


def test_bind_maps_single_x_to_model_input_and_rejects_mismatch() -> None:
    ds = Dataset(inputs={"x": np.zeros((4, 3), np.float32)})
    assert list(ds.bind(["pixels"])) == ["pixels"]
    two = Dataset(inputs={"a": np.zeros((4, 3)), "b": np.zeros((4, 3))})
    with pytest.raises(BadInputError, match="model's inputs"):
        two.bind(["input_ids", "attention_mask"])


def test_inconsistent_lengths_are_rejected() -> None:
    with pytest.raises(BadInputError, match="sample counts"):
        Dataset(inputs={"a": np.zeros((4, 3)), "b": np.zeros((5, 3))})
    with pytest.raises(BadInputError, match="labels"):
        Dataset(inputs={"a": np.zeros((4, 3))}, labels=np.zeros(3))


def test_sha256_changes_with_content() -> None:
    ds = make()
    other = Dataset(inputs={"input": ds.inputs["input"] + 1}, labels=ds.labels, task=ds.task)
    assert ds.sha256() == make().sha256()
    assert ds.sha256() != other.sha256()


def test_load_npz_keeps_integer_inputs_and_infers_task(tmp_path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, input_ids=np.ones((6, 8), np.int64), attention_mask=np.ones((6, 8), np.float32), y=np.arange(6) % 2)
    ds = load_npz(p)
    assert ds.inputs["input_ids"].dtype == np.int64
    assert ds.task == "classification" and len(ds) == 6


def test_load_npz_bad_files(tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a readable .npz"):
        load_npz(bad)
    objs = tmp_path / "obj.npz"
    np.savez(objs, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadInputError, match="not a readable .npz"):
        load_npz(objs)


def test_random_like_is_directional_and_typed() -> None:
    ds = random_like({"ids": ((8,), np.dtype(np.int64)), "x": ((3, 4), np.dtype(np.float32))}, 5, seed=0)
    assert ds.directional_only
    assert ds.inputs["ids"].dtype == np.int64 and ds.inputs["x"].shape == (5, 3, 4)
    assert np.std(ds.inputs["x"]) > 0.5
