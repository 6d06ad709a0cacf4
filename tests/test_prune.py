"""Pruning on the real, trained reference models: what it removes, what it costs, what it buys."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgekit import zoo
from edgekit.compress.base import Context, handler_for
from edgekit.compress.prune import PruneConfig, count_params, prune, weight_sparsity
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset


class Trained:
    """A trained reference model (shared by the whole test session) with its data splits."""

    def __init__(self, result: zoo.TrainResult) -> None:
        self.name = result.name
        self.module = result.module
        self.splits = zoo.load_data(result.name, seed=0)
        self.task = zoo.spec(result.name).task
        self.accuracy = zoo.evaluate(self.module, self.splits.test)["accuracy"]

    def context(self, workdir: Path) -> Context:
        s = self.splits
        return Context(
            workdir=workdir, calib=s.calib, eval=s.test, train=s.train, task=self.task, seed=0
        )


@pytest.fixture(scope="module")
def digits(trained: Callable[[str], tuple[zoo.TrainResult, Path]]) -> Trained:
    return Trained(trained("digits-cnn")[0])


@pytest.fixture(scope="module")
def edge(trained: Callable[[str], tuple[zoo.TrainResult, Path]]) -> Trained:
    return Trained(trained("edge-cnn")[0])


@pytest.fixture(scope="module")
def tabular(trained: Callable[[str], tuple[zoo.TrainResult, Path]]) -> Trained:
    return Trained(trained("tabular-mlp")[0])


def export_onnx(module: nn.Module, sample: np.ndarray, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.from_numpy(sample),), str(path), dynamo=False,
            opset_version=17, input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


def onnx_initializer_elements(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batches = [x[i : i + 256] for i in range(0, len(x), 256)]
    return np.concatenate([sess.run(None, {"input": b})[0] for b in batches])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(logits.argmax(axis=1) == labels))


def gzip_ratio(after: Path, before: Path) -> float:
    return len(gzip.compress(after.read_bytes())) / len(gzip.compress(before.read_bytes()))


def _ctx(tmp_path: Path, data: Dataset, task: str = "classification") -> Context:
    """Unlabelled data only: enough for pruning without fine-tuning."""
    return Context(workdir=tmp_path, calib=data, eval=data, train=None, task=task)


# --- config ------------------------------------------------------------------------------------


def test_config_label_and_handler() -> None:
    cfg = PruneConfig("structured", 0.5)
    assert cfg.label() == "prune:structured:0.5"
    assert PruneConfig("unstructured", 0.9).label() == "prune:unstructured:0.9"
    assert PruneConfig("unstructured", 0.9, ignore=["fc"]).ignore == ("fc",)  # type: ignore[arg-type]
    stage, fn = handler_for(cfg)
    assert stage == "model" and fn is prune


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "channels", "amount": 0.5}, "structured, unstructured"),
        ({"kind": "structured", "amount": 0.0}, "strictly between 0 and 1"),
        ({"kind": "structured", "amount": 1.0}, "strictly between 0 and 1"),
        ({"kind": "structured", "amount": "half"}, "a number"),
        ({"kind": "structured", "amount": 0.5, "scope": "model"}, "global, layer"),
        ({"kind": "structured", "amount": 0.5, "finetune_epochs": -1}, "non-negative"),
        ({"kind": "structured", "amount": 0.5, "finetune_epochs": 2.5}, "non-negative integer"),
        ({"kind": "structured", "amount": 0.5, "lr": 0.0}, "positive"),
        ({"kind": "structured", "amount": 0.5, "steps": 0}, ">= 1"),
        ({"kind": "structured", "amount": 0.5, "ignore": "fc"}, "list of module names"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        PruneConfig(**kwargs)


# --- bad inputs --------------------------------------------------------------------------------


def test_finetune_without_labels_is_a_clear_error(tmp_path: Path) -> None:
    model = zoo.build("tabular-mlp")
    data = Dataset({"x": np.random.default_rng(0).standard_normal((16, 30)).astype(np.float32)})
    with pytest.raises(BadInputError, match="needs labelled data: pass --data with a 'y' array"):
        prune(PruneConfig("unstructured", 0.5), model, _ctx(tmp_path, data, task="binary"))
    # Without fine-tuning no labels are needed, and the weights are still pruned.
    ctx = _ctx(tmp_path, data, task="binary")
    out = prune(PruneConfig("unstructured", 0.5, finetune_epochs=0), model, ctx)
    assert weight_sparsity(out) >= 0.5 - 1e-3
    assert ctx.records["prune"]["sparsity"] == pytest.approx(weight_sparsity(out))


def test_unknown_ignore_name_and_scripted_model(tmp_path: Path) -> None:
    model = zoo.build("tabular-mlp")
    ctx = _ctx(tmp_path, Dataset({"x": np.zeros((4, 30), np.float32)}))
    cfg = PruneConfig("structured", 0.5, finetune_epochs=0, ignore=("nett.0",))
    with pytest.raises(BadInputError, match="not modules of the model.*net.0"):
        prune(cfg, model, ctx)
    with pytest.raises(BadInputError, match="eager torch module"):
        prune(PruneConfig("structured", 0.5, finetune_epochs=0), torch.jit.script(model), ctx)


def test_structured_refuses_to_silently_do_nothing(tmp_path: Path) -> None:
    # A lone Linear layer produces the output: no channel may go, and pruning must say so.
    ctx = _ctx(tmp_path, Dataset({"x": np.ones((4, 8), np.float32)}))
    cfg = PruneConfig("structured", 0.5, finetune_epochs=0)
    with pytest.raises(BadInputError, match="would remove no channel"):
        prune(cfg, nn.Sequential(nn.Linear(8, 3)), ctx)


# --- mechanics on the real architectures (no fine-tuning: quick) -------------------------------


def test_structured_keeps_outputs_ignored_layers_and_input_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("digits-cnn").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    ctx = _ctx(tmp_path, Dataset({"input": x}))
    cfg = PruneConfig("structured", 0.5, finetune_epochs=0, ignore=("features.3",))
    out = prune(cfg, model, ctx)
    rec = ctx.records["prune"]

    assert out.features[3].out_channels == 64  # ignored: all its output channels are kept
    assert out.features[0].out_channels < 32 and out.features[6].out_channels < 64
    assert out.classifier[3].out_features == 10 and rec["output_layers"] == ["classifier.3"]
    assert out(torch.from_numpy(x)).shape == (8, 10)
    assert "features.3" not in rec["removed_channels"]
    assert rec["removed_channels"]["features.6"] > 0
    assert rec["params_after"]["total"] < rec["params_before"]["total"]
    assert rec["params_before"]["total"] == count_params(model)["total"]
    assert rec["macs_per_sample"]["after"] < rec["macs_per_sample"]["before"]
    assert json.loads(json.dumps(rec)) == rec  # goes into report.json as it is
    assert all(a % 8 == 0 for b, a in rec["channels"].values() if a != b)  # CPU-friendly widths
    # The caller's module is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_structured_iterative_steps_reach_the_same_widths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("edge-cnn").eval()
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    widths = []
    for steps in (1, 3):
        ctx = _ctx(tmp_path, Dataset({"input": x}))
        cfg = PruneConfig("structured", 0.5, scope="layer", finetune_epochs=0, steps=steps)
        out = prune(cfg, model, ctx)
        widths.append({k: v[1] for k, v in ctx.records["prune"]["channels"].items()})
        assert out(torch.from_numpy(x)).shape == (4, 10)
    assert widths[0] == widths[1]
    assert widths[0]["features.5.block.0.0"] == 64  # 128 channels, half removed


def test_structured_text_classifier_keeps_vocabulary(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("text-classifier").eval()
    splits = zoo.load_data("text-classifier")
    cfg = PruneConfig("structured", 0.5, finetune_epochs=0)
    out = prune(cfg, model, _ctx(tmp_path, splits.calib))
    shapes = {k: tuple(v.shape) for k, v in out.state_dict().items()}
    assert shapes["embedding.weight"] == (model.embedding.num_embeddings, 32)  # vocabulary kept
    assert shapes["fc.weight"] == (32, 32)  # hidden units removed
    assert shapes["head.weight"][0] == model.head.out_features  # classes kept
    ids = torch.from_numpy(splits.test.inputs["input_ids"][:5])
    assert out(ids).shape == model(ids).shape


def test_unstructured_layer_scope_reaches_every_layer_and_skips_ignored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("digits-cnn").eval()
    ctx = _ctx(tmp_path, Dataset({"input": np.zeros((4, 1, 28, 28), np.float32)}))
    cfg = PruneConfig(
        "unstructured", 0.7, scope="layer", finetune_epochs=0, steps=2, ignore=("classifier.3",)
    )
    out = prune(cfg, model, ctx)
    rec = ctx.records["prune"]
    assert set(rec["layer_sparsity"]) == {"features.0", "features.3", "features.6", "classifier.1"}
    assert all(s == pytest.approx(0.7, abs=0.01) for s in rec["layer_sparsity"].values())
    assert int((out.classifier[3].weight == 0).sum()) == 0  # ignored layer: no zero added
    assert not any(hasattr(m, "weight_mask") for m in out.modules())  # masks made permanent
    assert out.features[0].weight.shape == model.features[0].weight.shape
    assert rec["params_after"]["total"] == rec["params_before"]["total"]
    assert rec["params_after"]["nonzero"] < 0.4 * rec["params_before"]["nonzero"]
    assert "latency unchanged" in rec["runtime_benefit"]
    assert json.loads(json.dumps(rec)) == rec


# --- the measured claims on trained reference models ------------------------------------------


@pytest.mark.slow
def test_digits_structured_half_the_channels(digits: Trained, tmp_path: Path) -> None:
    ctx = digits.context(tmp_path)
    out = prune(PruneConfig("structured", 0.5), digits.module, ctx)
    rec = ctx.records["prune"]
    x, y = digits.splits.test.inputs["input"], digits.splits.test.labels

    assert rec["channel_sparsity"] >= 0.45
    assert rec["params_ratio"] <= 0.35
    assert count_params(out)["total"] <= 0.35 * count_params(digits.module)["total"]
    ref_onnx = export_onnx(digits.module, x[:1], tmp_path / "ref.onnx")
    pruned_onnx = export_onnx(out, x[:1], tmp_path / "pruned.onnx")
    assert onnx_initializer_elements(pruned_onnx) <= 0.35 * onnx_initializer_elements(ref_onnx)
    assert pruned_onnx.stat().st_size <= 0.35 * ref_onnx.stat().st_size

    drop = digits.accuracy - accuracy(ort_outputs(pruned_onnx, x), y)
    assert drop <= 1.0, rec["metric"]
    assert rec["metric"]["before"] == pytest.approx(digits.accuracy)
    assert rec["metric"]["after_finetune"] == pytest.approx(digits.accuracy - drop, abs=0.3)
    assert rec["runtime_benefit"].startswith("channels physically removed")


@pytest.mark.slow
def test_edge_cnn_structured_depthwise_and_residual(edge: Trained, tmp_path: Path) -> None:
    ctx = edge.context(tmp_path)
    out = prune(PruneConfig("structured", 0.5, finetune_epochs=8, lr=3e-3), edge.module, ctx)
    rec = ctx.records["prune"]
    x, y = edge.splits.test.inputs["input"], edge.splits.test.labels

    depthwise = [m for m in out.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert any(n.endswith("block.1.0") for n in rec["removed_channels"])  # depthwise pruned too
    assert rec["params_ratio"] <= 0.5
    assert rec["macs_per_sample"]["after"] <= 0.75 * rec["macs_per_sample"]["before"]
    path = export_onnx(out, x[:1], tmp_path / "edge-pruned.onnx")
    ort_logits = ort_outputs(path, x)
    with torch.no_grad():
        torch_logits = out(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_logits, torch_logits, atol=1e-4, rtol=1e-4)
    assert edge.accuracy - accuracy(ort_logits, y) <= 1.5, rec["metric"]


@pytest.mark.slow
def test_tabular_unstructured_90_percent(tabular: Trained, tmp_path: Path) -> None:
    ctx = tabular.context(tmp_path)
    cfg = PruneConfig("unstructured", 0.9, finetune_epochs=5, lr=1e-2, steps=4)
    out = prune(cfg, tabular.module, ctx)
    rec = ctx.records["prune"]

    assert rec["sparsity"] >= 0.89 and weight_sparsity(out) >= 0.89
    assert rec["gzip_ratio"] <= 0.3
    after = zoo.evaluate(out, tabular.splits.test)["accuracy"]
    assert tabular.accuracy - after <= 1.0, rec["metric"]
    assert rec["metric"]["after_prune"] < rec["metric"]["after_finetune"]  # fine-tuning did work


@pytest.mark.slow
def test_digits_unstructured_90_percent(digits: Trained, tmp_path: Path) -> None:
    ctx = digits.context(tmp_path)
    out = prune(PruneConfig("unstructured", 0.9, lr=2e-3), digits.module, ctx)
    rec = ctx.records["prune"]
    x, y = digits.splits.test.inputs["input"], digits.splits.test.labels

    assert rec["sparsity"] >= 0.89 and weight_sparsity(out) >= 0.89
    assert rec["gzip_ratio"] <= 0.3
    ref_onnx = export_onnx(digits.module, x[:1], tmp_path / "ref.onnx")
    sparse_onnx = export_onnx(out, x[:1], tmp_path / "sparse.onnx")
    # The same dense file, far smaller once compressed.
    assert sparse_onnx.stat().st_size == pytest.approx(ref_onnx.stat().st_size, rel=0.01)
    assert gzip_ratio(sparse_onnx, ref_onnx) <= 0.3
    assert digits.accuracy - accuracy(ort_outputs(sparse_onnx, x), y) <= 1.0, rec["metric"]
