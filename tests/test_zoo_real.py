"""The reference models that look like what users bring: a transformer sentence encoder and a
CTC text-line recogniser, with dynamic axes besides the batch, their data files and ONNX export."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgekit.zoo as zoo
from edgekit import api
from edgekit.errors import BadInputError
from edgekit.export.onnx import declared_axes
from edgekit.export.parity import ort_session as _session
from edgekit.io.data import Dataset, load_npz, save_npz
from edgekit.io.models import load_model
from edgekit.io.splits import resolve_data
from edgekit.zoo import datasets, evaluation, training
from edgekit.zoo.models import mean_pool

Trained = Callable[[str], tuple[zoo.TrainResult, Path]]
NEW = ["text-encoder", "text-recognizer"]


def _weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- architectures and data --------------------------------------------------------------------


def test_architectures_take_any_length() -> None:
    encoder = zoo.build("text-encoder").eval()
    assert len(encoder.blocks) >= 4 and encoder.norm.normalized_shape == (256,)
    assert any(isinstance(m, torch.nn.GELU) for m in encoder.modules())
    recognizer = zoo.build("text-recognizer").eval()
    with torch.no_grad():
        for t in (7, 40):
            ids = torch.randint(2, 100, (3, t))
            mask = torch.ones(3, t, dtype=torch.long)
            mask[0, t // 2 :] = 0
            assert encoder(ids, mask).shape == (3, t, 256)
        # Right padding does not change the states of real tokens.
        ids, mask = torch.randint(2, 100, (1, 9)), torch.ones(1, 9, dtype=torch.long)
        padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
        pmask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.long)], 1)
        torch.testing.assert_close(encoder(padded, pmask)[:, :9], encoder(ids, mask), atol=1e-4, rtol=0)
        for w in (48, 130):
            assert recognizer(torch.rand(2, 1, 32, w)).shape == (2, w // 4, 11)


def test_data_follow_the_file_convention() -> None:
    text = zoo.load_data("text-encoder", seed=0)
    ids, mask = text.test.inputs["input_ids"], text.test.inputs["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
    assert text.test.task == "embedding" and text.test.labels is not None
    np.testing.assert_array_equal(mask, ids != datasets.PAD_ID)
    assert (np.diff(mask, axis=1) <= 0).all()  # right padding: ones, then zeros
    # The same split and vocabulary as the text classifier.
    np.testing.assert_array_equal(ids, zoo.load_data("text-classifier").test.inputs["input_ids"])

    lines = zoo.load_data("text-recognizer", seed=0)
    for part in (lines.train, lines.calib, lines.test):
        x, widths, y = part.inputs["x"], part.lengths["x"], part.labels
        assert x.dtype == np.float32 and x.shape[1:3] == (1, 32) and part.task == "sequence"
        assert widths.max() <= x.shape[3] and widths.dtype == np.int64
        assert part is lines.calib or widths.max() == x.shape[3]  # padded to the longest line
        assert y is not None and y.shape == (len(x), 8) and y.dtype == np.int64
        count = (y >= 0).sum(1)
        assert count.min() == 3 and count.max() == 8
        assert all((row[n:] == -1).all() for row, n in zip(y, count, strict=True))
        beyond = np.arange(x.shape[3])[None, :] >= widths[:, None]
        assert (x[:, 0].transpose(1, 0, 2)[:, beyond] == datasets.LINE_BACKGROUND).all()
    assert lines.calib.sha256() == lines.train.head(len(lines.calib)).sha256()
    assert zoo.load_data("text-recognizer", seed=0).test.sha256() == lines.test.sha256()
    assert zoo.load_data("text-recognizer", seed=1).test.sha256() != lines.test.sha256()


def test_ctc_decode_sequence_metrics_and_centroids() -> None:
    blank = 10
    path = [blank, 3, 3, blank, 3, 5, 5, blank, blank]
    scores = np.eye(11)[path][None]
    assert evaluation.ctc_greedy_decode(scores, blank) == [[3, 3, 5]]
    assert evaluation.ctc_greedy_decode(scores, blank, np.array([5])) == [[3, 3]]
    labels = np.array([[3, 3, 5, -1], [3, 5, -1, -1]])
    m = evaluation.sequence_metrics(np.concatenate([scores, scores]), labels, blank)
    assert m["sequence_accuracy"] == 0.5 and m["cer"] == pytest.approx(1 / 5)
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    y = np.array([0, 0, 1, 1])
    assert evaluation.centroid_accuracy(emb, y, emb, y) == 100.0
    assert evaluation.centroid_accuracy(emb, y, emb, 1 - y) == 0.0


@pytest.mark.parametrize("name", NEW)
def test_same_seed_same_weights(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real training path, on a small slice of the training split to stay cheap.
    real = training.load_data

    def small(n: str, seed: int = 0) -> datasets.Splits:
        s = real(n, seed)
        return datasets.Splits(train=s.train.head(96), calib=s.calib.head(32), test=s.test.head(64))

    monkeypatch.setattr(training, "load_data", small)
    a = zoo.train(name, seed=0, epochs=1)
    b = zoo.train(name, seed=0, epochs=1)
    c = zoo.train(name, seed=1, epochs=1)
    assert _weights_hash(a.module) == _weights_hash(b.module) and a.metrics == b.metrics
    assert _weights_hash(a.module) != _weights_hash(c.module)


# --- the trained models --------------------------------------------------------------------------


@pytest.mark.slow
def test_text_encoder_held_out(trained: Trained) -> None:
    result, path = trained("text-encoder")
    print(f"text-encoder: {result.metrics} in {result.seconds:.1f} s")
    chance = 100.0 / len(datasets.TEXT_CLASSES)
    assert result.metric == "centroid_accuracy" and result.value >= 3 * chance
    splits = zoo.load_data("text-encoder")
    # The figure is nearest-centroid on mask-pooled, L2-normalised token states.
    test = splits.test.head(64)
    states = torch.from_numpy(zoo.predict(result.module, test))
    pooled = mean_pool(states, torch.from_numpy(test.inputs["attention_mask"]))
    np.testing.assert_allclose(
        evaluation.sentence_embeddings(result.module, test),
        torch.nn.functional.normalize(pooled, dim=-1).numpy(),
        atol=1e-5,
    )
    meta = zoo.read_meta(path)
    assert meta is not None and meta["task"] == "embedding" and meta["mask_input"] == "attention_mask"
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    assert declared_axes(meta["dynamic_axes"])["input_ids"] == {1: "sequence"}


@pytest.mark.slow
def test_text_recognizer_held_out(trained: Trained) -> None:
    result, path = trained("text-recognizer")
    print(f"text-recognizer: {result.metrics} in {result.seconds:.1f} s")
    assert result.metric == "sequence_accuracy" and result.value >= 0.90
    assert 0.0 <= result.metrics["cer"] < 0.05
    meta = zoo.read_meta(path)
    assert meta is not None and meta["task"] == "sequence" and meta["decode"] == "ctc"
    assert meta["blank"] == datasets.LINE_BLANK and meta["stride"] == 4


def _ort_vs_torch(onnx_path: Path, module: torch.nn.Module, feeds: list[dict[str, np.ndarray]]) -> None:
    session = _session(onnx_path)
    for feed in feeds:
        got = session.run(None, feed)[0]
        with torch.no_grad():
            ref = module(*(torch.from_numpy(v) for v in feed.values())).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, float(np.abs(ref).max())), rtol=0)


@pytest.mark.slow
def test_export_keeps_sequence_axis(trained: Trained, tmp_path: Path) -> None:
    result, path = trained("text-encoder")
    out = tmp_path / "te.onnx"
    api.export(path, out)
    proto = onnx.load(str(out))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", "sequence", 256]
    ops = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops
    test = zoo.load_data("text-encoder").test
    feeds = [{k: v[:4, :t] for k, v in test.inputs.items()} for t in (64, 11)]
    _ort_vs_torch(out, result.module, feeds)
    # The exported file carries the metadata: compress and export read the axes back.
    assert load_model(out).meta["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}


@pytest.mark.slow
def test_export_keeps_width_axis(trained: Trained, tmp_path: Path) -> None:
    result, path = trained("text-recognizer")
    out = tmp_path / "rec.onnx"
    api.export(path, out)
    proto = onnx.load(str(out))
    x = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert x == ["batch", 1, 32, "width"]
    y = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert y[0] == "batch" and isinstance(y[1], str) and y[2] == 11
    test = zoo.load_data("text-recognizer").test
    feeds = [{"x": test.inputs["x"][:3]}, {"x": test.inputs["x"][3:4, :, :, : int(test.lengths["x"][3])]}]
    _ort_vs_torch(out, result.module, feeds)


def test_declared_axes_are_checked() -> None:
    assert declared_axes({"ids": {"0": "batch", "1": "seq"}}) == {"ids": {1: "seq"}}
    assert declared_axes(None) == {}
    with pytest.raises(BadInputError, match="malformed"):
        declared_axes({"ids": {"one": "seq"}})
    with pytest.raises(BadInputError, match="negative"):
        declared_axes({"ids": {"-1": "seq"}})


def test_declared_axis_that_export_fixes_is_an_error(tmp_path: Path) -> None:
    class FixedLength(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], 12) * 2  # a traced constant length

    from edgekit.errors import IntegrityError
    from edgekit.export.onnx import export_onnx

    sample = {"x": np.random.default_rng(0).random((4, 12), dtype=np.float32)}
    with pytest.raises((IntegrityError, BadInputError), match="fixed|differs|cannot"):
        export_onnx(FixedLength(), tmp_path / "f.onnx", sample=sample, dynamic_axes={"x": {"1": "n"}})
    assert not (tmp_path / "f.onnx").exists()


# --- data files ----------------------------------------------------------------------------------


def test_npz_round_trip_with_lengths_and_sequences(tmp_path: Path) -> None:
    test = zoo.load_data("text-recognizer").test.head(40)
    path = tmp_path / "lines.npz"
    save_npz(test, path)
    with np.load(path) as raw:
        assert sorted(raw.files) == ["x", "x_length", "y"]
    back = load_npz(path)
    assert back.task == "sequence" and back.names == ["x"]
    np.testing.assert_array_equal(back.lengths["x"], test.lengths["x"])
    np.testing.assert_array_equal(back.labels, test.labels)
    assert back.subset([3, 1]).lengths["x"].tolist() == test.lengths["x"][[3, 1]].tolist()

    text = zoo.load_data("text-encoder").test.head(30)
    save_npz(text, tmp_path / "text.npz")
    again = load_npz(tmp_path / "text.npz")
    assert again.names == ["input_ids", "attention_mask"] and again.task == "classification"
    assert again.inputs["input_ids"].dtype == np.int64 and not again.lengths

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=test.inputs["x"], x_length=np.ones((40, 2), dtype=np.int64))
    with pytest.raises(BadInputError, match="x_length"):
        load_npz(bad)
    with pytest.raises(BadInputError, match="x_length"):
        Dataset({"x": test.inputs["x"]}, lengths={"x": np.ones(3, dtype=np.int64)})
    # Re-bound to the model's own input name, the lengths follow.
    renamed = dataclasses.replace(back, inputs=back.bind(["image"]))
    np.testing.assert_array_equal(renamed.lengths["image"], test.lengths["x"])


def test_user_data_keeps_lengths(tmp_path: Path) -> None:
    lines = zoo.load_data("text-recognizer").test.head(40)
    path = tmp_path / "lines.npz"
    save_npz(lines, path)

    class Loaded:  # what resolve_data reads of a loaded user model
        meta: dict[str, str] = {}
        inputs = [type("Spec", (), {"name": "image"})()]
        path = tmp_path / "user.onnx"

    splits = resolve_data(Loaded(), path, "data", seed=0)
    assert splits.eval.names == ["image"] and splits.eval.task == "sequence"
    widths = dict(zip(map(bytes, (r.tobytes() for r in lines.inputs["x"])), lines.lengths["x"], strict=True))
    for row, width in zip(splits.eval.inputs["image"], splits.eval.lengths["image"], strict=True):
        assert widths[row.tobytes()] == width


# --- the CLI journey -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_export_compress_recognizer(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    runner = CliRunner()
    model, data, graph = tmp_path / "rec.pt", tmp_path / "d.npz", tmp_path / "rec.onnx"
    res = runner.invoke(
        cli, ["train", "text-recognizer", "-o", str(model), "--epochs", "1", "--data-out", str(data), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["data"] == str(data)
    with np.load(data) as arrays:
        assert sorted(arrays.files) == ["x", "x_length", "y"]
    res = runner.invoke(cli, ["export", str(model), "-o", str(graph)])
    assert res.exit_code == 0, res.output
    bundle = tmp_path / "rec.bundle"
    res = runner.invoke(
        cli,
        ["compress", str(graph), "--int8", "--data", str(data), "--runtime", "onnxruntime,openvino",
         "-o", str(bundle), "--time-budget", "0.2"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((bundle / "report.json").read_text())
    assert {v["runtime"] for v in report["variants"]} >= {"onnxruntime", "openvino"}
    assert (bundle / "manifest.json").is_file()
