"""The reference-model zoo: data sets, architectures, training to the floors, save and reload."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
import edgekit.zoo as zoo
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.zoo import datasets
from edgekit.zoo.models import TextClassifier

NAMES = ["digits-cnn", "edge-cnn", "house-regressor", "tabular-mlp", "text-classifier"]
SOURCE_SIZES = {"digits-cnn": 1797, "edge-cnn": 1797, "tabular-mlp": 569, "house-regressor": 442}


# ``trained(name) -> (TrainResult, saved path)`` comes from conftest.py: each reference model is
# trained once per session (seed 0, one thread) and shared with the other test modules.
Trained = Callable[[str], tuple[zoo.TrainResult, Path]]


def _rows(data: Dataset) -> set[bytes]:
    return {row.tobytes() for row in next(iter(data.inputs.values()))}


def _example(name: str, n: int = 2) -> torch.Tensor:
    ref = zoo.spec(name)
    if ref.input_dtype == "int64":
        return torch.randint(
            0, 50, (n, *ref.input_shape), generator=torch.Generator().manual_seed(0)
        )
    return torch.rand((n, *ref.input_shape), generator=torch.Generator().manual_seed(0))


# --- registry and architectures ----------------------------------------------------------------


def test_names_and_unknown_name() -> None:
    assert zoo.names() == sorted([*NAMES, "text-encoder", "text-recognizer"])
    with pytest.raises(BadInputError, match="digits-cnn.*edge-cnn"):
        zoo.spec("resnet-9000")
    with pytest.raises(BadInputError, match="choose one of"):
        zoo.load_data("resnet-9000")


def test_import_does_not_load_torch() -> None:
    code = "import sys, edgekit.zoo as z; z.spec('edge-cnn'); assert 'torch' not in sys.modules"
    root = str(Path(edgekit.__file__).resolve().parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", NAMES)
def test_build_output_matches_task(name: str) -> None:
    ref = zoo.spec(name)
    module = zoo.build(name).eval()
    with torch.no_grad():
        out = module(_example(name))
    if ref.task == "classification":
        expected = len(datasets.TEXT_CLASSES) if name == "text-classifier" else 10
        assert out.shape == (2, expected)
    else:
        assert out.shape == (2, 1)
    if ref.task == "binary":
        assert bool(((out >= 0) & (out <= 1)).all())
    assert ref.metric == ("r2" if ref.task == "regression" else "accuracy")


def test_edge_cnn_runs_at_224() -> None:
    module = zoo.build("edge-cnn").eval()
    assert any(
        isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in module.modules()
    )  # depthwise
    with torch.no_grad():
        small = module(torch.rand(2, 1, 32, 32))
        large = module(torch.rand(1, 1, 224, 224))
    assert small.shape == (2, 10) and large.shape == (1, 10)
    assert bool(torch.isfinite(large).all())


# --- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_data_shapes_dtypes_and_splits(name: str) -> None:
    ref = zoo.spec(name)
    splits = zoo.load_data(name, seed=0)
    for part in (splits.train, splits.calib, splits.test):
        arr = part.inputs[ref.input_name]
        assert list(part.inputs) == [ref.input_name]
        assert arr.shape[1:] == ref.input_shape and str(arr.dtype) == ref.input_dtype
        assert part.task == ref.task and part.labels is not None and len(part.labels) == len(part)
    total = len(splits.train) + len(splits.test)
    assert 0.18 <= len(splits.test) / total <= 0.26
    assert len(splits.calib) == min(256, len(splits.train))
    # The calibration set is drawn from the training split, never from the held-out one.
    assert _rows(splits.calib) <= _rows(splits.train)
    if name != "text-classifier":  # these sources have no duplicate rows: any shared row is a leak
        assert total == SOURCE_SIZES[name]
        assert not _rows(splits.train) & _rows(splits.test)
    # Deterministic for a seed, different for another seed.
    assert zoo.load_data(name, seed=0).test.sha256() == splits.test.sha256()
    assert zoo.load_data(name, seed=1).test.sha256() != splits.test.sha256()


def test_data_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a data set tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in NAMES:
        assert len(zoo.load_data(name).train) > 100


def test_image_and_table_values() -> None:
    x = zoo.load_data("digits-cnn").train.inputs["input"]
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    tab = zoo.load_data("tabular-mlp")
    train_x = tab.train.inputs["input"]
    np.testing.assert_allclose(train_x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(axis=0), 1.0, atol=1e-4)
    assert len(json.loads(tab.train.meta["feature_mean"])) == 30
    assert set(np.unique(tab.test.labels)) == {0, 1}
    house = zoo.load_data("house-regressor")
    assert (
        house.train.labels is not None and 20 < float(np.mean(house.train.labels)) < 350
    )  # original units


def test_text_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels = datasets.stdlib_docstrings()
    assert len(texts) == len(labels) == len(set(texts)) > 1000
    counts = np.bincount(labels, minlength=len(datasets.TEXT_CLASSES))
    assert len(datasets.TEXT_CLASSES) >= 5 and (counts >= 50).all()

    def patched() -> None:
        """A replacement installed by the host process, long enough to enter the corpus."""

    # Rebuilt identically, even when this process has patched a standard-library module.
    monkeypatch.setattr("shutil.copyfile", patched)
    datasets.stdlib_docstrings.cache_clear()
    assert datasets.stdlib_docstrings() == (texts, labels)

    splits = zoo.load_data("text-classifier", seed=0)
    train_idx, test_idx = datasets.split_index(len(texts), 0)
    assert not {texts[i] for i in train_idx} & {texts[i] for i in test_idx}
    # The vocabulary comes from the training split only.
    vocab = datasets.text_vocab(0)
    train_words = {w for i in train_idx for w in datasets.tokenize(texts[i])}
    assert set(vocab) <= train_words and len(vocab) + 2 <= datasets.TEXT_VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(2, len(vocab) + 2))
    expected = datasets.encode([texts[i] for i in test_idx], vocab)
    np.testing.assert_array_equal(splits.test.inputs["input_ids"], expected)
    np.testing.assert_array_equal(splits.test.labels, [labels[i] for i in test_idx])
    ids = splits.train.inputs["input_ids"]
    assert (ids == datasets.PAD_ID).any() and ids.max() < datasets.TEXT_VOCAB_SIZE
    assert (splits.test.inputs["input_ids"] == datasets.UNK_ID).any()  # words unseen in training
    assert datasets.encode(["open the file"], {"open": 2, "file": 3}, length=5).tolist() == [
        [2, 1, 3, 0, 0]
    ]


# --- training ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_trains_to_floor_on_held_out(name: str, trained: Trained) -> None:
    ref = zoo.spec(name)
    result, _ = trained(name)
    print(f"{name}: {result.metrics} in {result.seconds:.1f} s")
    assert result.metric == ref.metric and result.value == result.metrics[ref.metric]
    assert result.value >= ref.floor
    assert not result.module.training
    assert zoo.evaluate(result.module, zoo.load_data(name).test) == result.metrics
    if ref.task == "regression":
        assert "mae" in result.metrics and result.metrics["mae"] > 0


def test_same_seed_same_model() -> None:
    a = zoo.train("tabular-mlp", seed=0)
    b = zoo.train("tabular-mlp", seed=0)
    c = zoo.train("tabular-mlp", seed=1)
    assert a.value == b.value and a.metrics == b.metrics
    for key, tensor in a.module.state_dict().items():
        assert torch.equal(tensor, b.module.state_dict()[key]), key
    assert not torch.equal(
        a.module.state_dict()["net.0.weight"], c.module.state_dict()["net.0.weight"]
    )


def test_same_seed_same_model_with_dropout() -> None:
    steps: list[tuple[int, int]] = []
    a = zoo.train(
        "text-classifier",
        seed=3,
        epochs=2,
        progress=lambda done, total: steps.append((done, total)),
    )
    b = zoo.train("text-classifier", seed=3, epochs=2)
    assert steps == [(1, 2), (2, 2)]
    for key, tensor in a.module.state_dict().items():
        assert torch.equal(tensor, b.module.state_dict()[key]), key


def test_fit_leaves_global_state_alone() -> None:
    module, data = zoo.build("tabular-mlp"), zoo.load_data("tabular-mlp").calib
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.fit(module, data, "binary", epochs=1, lr=1e-3, batch_size=64, seed=0, threads=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()


def test_fit_rejects_bad_input() -> None:
    data = zoo.load_data("tabular-mlp").calib
    unlabelled = Dataset(inputs=data.inputs, task="binary")
    with pytest.raises(BadInputError, match="no labels"):
        zoo.fit(
            zoo.build("tabular-mlp"), unlabelled, "binary", epochs=1, lr=1e-3, batch_size=32, seed=0
        )
    with pytest.raises(BadInputError, match="threads"):
        zoo.fit(
            zoo.build("tabular-mlp"),
            data,
            "binary",
            epochs=1,
            lr=1e-3,
            batch_size=32,
            seed=0,
            threads=0,
        )


@pytest.mark.slow
def test_distillation_without_labels(trained: Trained) -> None:
    teacher = trained("text-classifier")[0].module
    splits = zoo.load_data("text-classifier")
    unlabelled = Dataset(inputs=splits.train.inputs, task="classification")
    torch.manual_seed(0)
    student = TextClassifier(embed_dim=16, hidden=16)
    zoo.fit(
        student,
        unlabelled,
        "classification",
        epochs=8,
        lr=1e-2,
        batch_size=32,
        seed=0,
        teacher=teacher,
        alpha=1.0,
        temperature=2.0,
    )
    accuracy = zoo.evaluate(student, splits.test)["accuracy"]
    agreement = np.mean(
        zoo.predict(student, splits.test).argmax(1) == zoo.predict(teacher, splits.test).argmax(1)
    )
    # Labels were never seen: everything the student knows came through the KD loss.
    assert accuracy > 3 * 100 / len(datasets.TEXT_CLASSES)
    assert agreement > 0.5


def test_regression_distillation_follows_teacher() -> None:
    teacher = zoo.train("house-regressor").module
    splits = zoo.load_data("house-regressor")
    student = zoo.build("house-regressor")
    student.load_state_dict(
        {k: v for k, v in teacher.state_dict().items() if k.startswith("target_")}, strict=False
    )
    before = np.abs(zoo.predict(student, splits.test) - zoo.predict(teacher, splits.test)).mean()
    zoo.fit(
        student,
        splits.train,
        "regression",
        epochs=60,
        lr=3e-3,
        batch_size=32,
        seed=0,
        teacher=teacher,
        alpha=0.5,
    )
    after = np.abs(zoo.predict(student, splits.test) - zoo.predict(teacher, splits.test)).mean()
    assert after < 0.5 * before
    assert zoo.evaluate(student, splits.test)["r2"] > 0.3


# --- saving and reloading ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_save_read_meta_and_rebuild(name: str, trained: Trained, tmp_path: Path) -> None:
    result, _ = trained(name)
    ref = zoo.spec(name)
    path = tmp_path / "models" / f"{name}.pt"
    zoo.save(result, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        path.name
    ]  # no temporary file left behind

    meta = zoo.read_meta(path)
    assert meta is not None
    assert meta["zoo"] == name and meta["seed"] == 0 and meta["task"] == ref.task
    assert (
        meta["metric"] == {"name": ref.metric, "value": result.value}
        and meta["metrics"] == result.metrics
    )
    assert meta["input_name"] == ref.input_name and tuple(meta["input_shape"]) == ref.input_shape
    assert meta["input_dtype"] == ref.input_dtype and meta["factory"] == ref.factory
    assert meta["edgekit_version"]

    test = zoo.load_data(name).test
    eager = zoo.predict(result.module, test)
    scripted = torch.jit.load(str(path))
    np.testing.assert_array_equal(zoo.predict(scripted, test), eager)
    rebuilt = zoo.build(name)
    rebuilt.load_state_dict(scripted.state_dict())
    np.testing.assert_array_equal(zoo.predict(rebuilt, test), eager)
    assert zoo.evaluate(rebuilt, test) == result.metrics


def test_read_meta_without_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    assert zoo.read_meta(plain) is None
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x07not a zip")
    assert zoo.read_meta(onnx_like) is None
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr(f"broken/extra/{zoo.META_FILE}", "{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        zoo.read_meta(broken)
    with pytest.raises(BadInputError, match="does not exist"):
        zoo.read_meta(tmp_path / "missing.pt")


def test_model_files_may_name_exactly_the_zoo_factories() -> None:
    from edgekit.io.models import SHIPPED_FACTORIES

    assert {zoo.spec(n).factory for n in zoo.names()} == SHIPPED_FACTORIES
