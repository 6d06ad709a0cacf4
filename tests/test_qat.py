"""Quantization-aware training: NNCF fake quantizers, fine-tuning, Q/DQ ONNX for ORT and OpenVINO.

The model is the real digits-cnn reference model trained by edgekit.zoo on scikit-learn digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from helpers import reference_context
from torch import nn

from edgekit import zoo
from edgekit.benchmarks.accuracy import task_metrics
from edgekit.compress.base import Context, handler_for
from edgekit.compress.qat import QatConfig, export_qat_onnx, is_qat_module, qat, qat_variants
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

NAME = "digits-cnn"
SEED = 0


def _ctx(splits: Any, tmp: Path, **overrides: Any) -> Context:
    return reference_context(splits, tmp, seed=SEED, **overrides)


def _layers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: m.weight.detach().clone()
        for name, m in module.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


@pytest.fixture(scope="module")
def reference(trained) -> Any:
    return trained(NAME)[0]  # trained once per session (tests/conftest.py), seed 0


@pytest.fixture(scope="module")
def splits() -> Any:
    return zoo.load_data(NAME, SEED)


@pytest.fixture(scope="module")
def qat_run(
    reference: Any, splits: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[nn.Module, Context]:
    ctx = _ctx(splits, tmp_path_factory.mktemp("qat"))
    stage, handler = handler_for(QatConfig())
    assert stage == "model"
    return handler(QatConfig(), reference.module, ctx), ctx


def _ov_int8_layers(xml_or_onnx: Path) -> dict[str, set[str]]:
    """OpenVINO's runtime precision of every compute layer type after compiling for CPU."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml_or_onnx), "CPU")
    found: dict[str, set[str]] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in ("Convolution", "FullyConnected"):
            found.setdefault(layer, set()).add(info["runtimePrecision"].astype(str))
    return found


@pytest.mark.slow
def test_qat_onnx_is_qdq_int8_and_accurate_in_onnxruntime_and_openvino(
    qat_run: tuple[nn.Module, Context], reference: Any, splits: Any, tmp_path: Path
) -> None:
    import onnxruntime as ort
    import openvino as ov

    module, ctx = qat_run
    test = splits.test
    x = test.inputs[zoo.spec(NAME).input_name]
    variants = qat_variants(module, tmp_path, {"input": x[:16]})
    by_runtime = {v.runtime: v for v in variants}
    assert set(by_runtime) == {"onnxruntime", "openvino"}
    assert all(v.precision == "int8" for v in variants)

    onnx_path = by_runtime["onnxruntime"].path
    graph = onnx.load(str(onnx_path)).graph
    ops = [n.op_type for n in graph.node]
    n_compute = ops.count("Conv") + ops.count("Gemm") + ops.count("MatMul")
    # A DequantizeLinear per weight (stored as INT8) and a Q/DQ pair per quantized activation.
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]
    assert len(int8_weights) >= n_compute
    assert ops.count("DequantizeLinear") == ops.count("QuantizeLinear") + len(int8_weights)
    assert ops.count("QuantizeLinear") >= 1
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "input" for n in graph.node)
    assert not [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) > 1]

    fp32 = reference.value
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_acc = task_metrics("classification", session.run(None, {"input": x})[0], test.labels)[
        "accuracy"
    ]
    core_model = ov.Core().compile_model(
        ov.Core().read_model(str(by_runtime["openvino"].path)), "CPU"
    )
    ov_acc = task_metrics("classification", core_model(x)[0], test.labels)["accuracy"]
    assert fp32 - ort_acc <= 1.0, (fp32, ort_acc)
    assert fp32 - ov_acc <= 1.0, (fp32, ov_acc)
    # The exported graph computes what the fine-tuned torch module does (±2 samples of rounding).
    assert abs(ort_acc - ctx.records["qat"]["metric"]["qat"]) <= 0.6

    # OpenVINO really runs the convolutions and dense layers in INT8.
    precisions = _ov_int8_layers(by_runtime["openvino"].path)
    assert set(precisions) == {"Convolution", "FullyConnected"}
    assert all(p <= {"u8", "i8"} for p in precisions.values()), precisions


@pytest.mark.slow
def test_qat_fine_tune_changes_weights_and_records_what_it_did(
    qat_run: tuple[nn.Module, Context], reference: Any
) -> None:
    module, ctx = qat_run
    assert is_qat_module(module) and not is_qat_module(reference.module)
    before, after = _layers(reference.module), _layers(module)
    assert set(before) == set(after) and len(before) == 5
    for name in before:
        delta = float((after[name] - before[name]).abs().max())
        assert delta > 1e-4, f"{name} was not trained (max change {delta})"

    record = ctx.records["qat"]
    assert record["backend"] == "nncf-torch"
    assert record["epochs"] == 3 and record["calib_size"] == len(ctx.calib)
    assert record["quantizers"] >= 2 * 5  # weights of 5 layers, their input activations
    assert record["weight_change"]["ptq_vs_fp32"] == 0.0  # NNCF's PTQ leaves weights alone
    assert record["weight_change"]["qat_vs_ptq"] > 1e-3
    metric = record["metric"]
    assert metric["name"] == "accuracy"
    assert metric["fp32"] == pytest.approx(reference.value)
    assert metric["fp32"] - metric["qat"] <= 1.0
    # The input module is left untouched.
    assert zoo.evaluate(reference.module, ctx.eval)["accuracy"] == pytest.approx(reference.value)


class _Unsquashed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


@pytest.mark.slow
def test_qat_on_a_top_level_sequential(splits: Any, tmp_path: Path) -> None:
    # NNCF adds its quantizers as a child module: a bare nn.Sequential would run them as a layer.
    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), _Unsquashed(), nn.Linear(8 * 13 * 13, 10)
    )
    zoo.fit(model, splits.train, "classification", epochs=2, lr=3e-3, batch_size=32, seed=SEED)
    ctx = _ctx(splits, tmp_path, calib=splits.calib.head(64))
    module = qat(QatConfig(epochs=1, calib_size=64), model, ctx)
    x = splits.test.inputs["input"]
    path = export_qat_onnx(
        module, tmp_path / "seq.onnx", {"input": x[:1]}
    )  # batch 1: still dynamic

    import onnxruntime as ort

    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    assert out.shape == (len(x), 10)
    acc = task_metrics("classification", out, splits.test.labels)["accuracy"]
    assert acc >= ctx.records["qat"]["metric"]["fp32"] - 2.0
    assert ctx.records["qat"]["calib_size"] == 64


def test_qat_needs_labelled_training_data(tmp_path: Path) -> None:
    data = Dataset(inputs={"input": np.zeros((4, 1, 28, 28), np.float32)}, task="classification")
    with pytest.raises(BadInputError, match="--data with a 'y' array"):
        qat(
            QatConfig(),
            zoo.build(NAME),
            Context(workdir=tmp_path, calib=data, eval=data, train=None),
        )
    with pytest.raises(BadInputError, match="--data with a 'y' array"):
        qat(
            QatConfig(),
            zoo.build(NAME),
            Context(workdir=tmp_path, calib=data, eval=data, train=data),
        )


def test_qat_refuses_torchscript(tmp_path: Path) -> None:
    data = Dataset(
        inputs={"input": np.zeros((4, 1, 28, 28), np.float32)},
        labels=np.zeros(4, np.int64),
        task="classification",
    )
    scripted = torch.jit.script(zoo.build(NAME))
    with pytest.raises(BadInputError, match="not TorchScript"):
        qat(
            QatConfig(),
            scripted,
            Context(workdir=tmp_path, calib=data, eval=data, train=data, task="classification"),
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": -1},
        {"epochs": 1.5},
        {"lr": 0},
        {"lr": "fast"},
        {"calib_size": 0},
        {"batch_size": True},
    ],
)
def test_qat_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadInputError):
        QatConfig(**kwargs)


def test_export_refuses_a_module_without_quantizers(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no INT8 fake quantizers"):
        export_qat_onnx(nn.Linear(4, 2), tmp_path / "m.onnx", {"x": np.zeros((2, 4), np.float32)})
    assert not (tmp_path / "m.onnx").exists()
