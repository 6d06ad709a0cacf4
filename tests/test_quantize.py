"""INT8 and FP16 graph techniques on a real CNN trained on scikit-learn's digits.

Every variant runs in its real runtime (ONNX Runtime, OpenVINO) on the held-out split and is
compared with the fp32 model. The TensorRT Q/DQ ONNX cannot be built without a GPU; ONNX
Runtime executes its Q/DQ arithmetic on the CPU, which is what its figures measure.
Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekit.benchmarks.accuracy import fidelity, task_metrics
from edgekit.benchmarks.backends import for_techniques
from edgekit.compress.base import Context, Variant, handler_for
from edgekit.compress.fp16 import Fp16Config
from edgekit.compress.quantize import (
    Int8Config,
    calibration_feeds,
    check_trt_qdq,
    ov_fp32_ir,
    ov_quantized_ops,
    quantization_summary,
)
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset, split
from edgekit.runtimes.openvino import bf16_support

ALL_INT8 = ("ort-int8-static", "ov-int8", "trt-int8-qdq", "ort-int8-dynamic")
LAYERS = ["/0/Conv", "/2/Conv", "/5/Gemm", "/7/Gemm"]
STATIC_ALL = Int8Config(runtimes=("onnxruntime", "openvino", "tensorrt"))
DYNAMIC = Int8Config(runtimes=("onnxruntime",), mode="dynamic")


@dataclass
class Digits:
    onnx: Path
    calib: Dataset
    eval: Dataset
    fp32_out: np.ndarray
    fp32_acc: float


def _report(name: str, **figures: float) -> None:
    print(f"\n{name:30s} " + "  ".join(f"{k}={v:.4f}" for k, v in figures.items()))


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ov_run(xml: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    # f32: the CPU plugin would otherwise run the float parts in bf16 where the CPU has it.
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    return ov.Core().compile_model(str(xml), "CPU", config)(x)[0]


def _run(v: Variant, x: np.ndarray) -> np.ndarray:
    return _ov_run(v.path, x) if v.runtime == "openvino" else _ort_run(v.path, x)


def _size(v: Variant) -> int:
    return v.path.stat().st_size + sum(p.stat().st_size for p in v.extra_files)


def _export(module, x: np.ndarray, path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is deprecated
        torch.onnx.export(
            module,
            (torch.from_numpy(x[:1]),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Digits:
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    raw = load_digits()
    data = Dataset(
        inputs={"x": (raw.images / 16.0).astype(np.float32)[:, None]},
        labels=raw.target.astype(np.int64),
        task="classification",
        name="digits",
    )
    train, test = split(data, [0.75, 0.25], seed=0)
    # The dense layers hold ~95 % of the weights, as in most small classifiers.
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(train.inputs["x"]), torch.from_numpy(train.labels)
    for _ in range(15):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    model.eval()
    path = _export(model, train.inputs["x"], tmp_path_factory.mktemp("digits") / "model.onnx")
    out = _ort_run(path, test.inputs["x"])
    acc = task_metrics("classification", out, test.labels)["accuracy"]
    assert acc > 95.0, f"reference model under-trained ({acc:.1f} %)"
    return Digits(path, train, test, out, acc)


def _quantize(
    config: object, digits: Digits, workdir: Path, calib: Dataset | None = None
) -> tuple[dict[str, Variant], Context]:
    ctx = Context(workdir=workdir, calib=calib or digits.calib, eval=digits.eval, backends=for_techniques())
    stage, handler = handler_for(config)
    assert stage == "graph"
    return {v.name: v for v in handler(config, digits.onnx, ctx)}, ctx


@pytest.fixture(scope="module")
def int8(digits, tmp_path_factory) -> tuple[dict[str, Variant], Context]:
    static, ctx = _quantize(STATIC_ALL, digits, tmp_path_factory.mktemp("int8"))
    dynamic, _ = _quantize(DYNAMIC, digits, ctx.workdir)
    return {**static, **dynamic}, ctx


@pytest.fixture(scope="module")
def fp16(digits, tmp_path_factory) -> dict[str, Variant]:
    return _quantize(Fp16Config(), digits, tmp_path_factory.mktemp("fp16"))[0]


# --- configs and calibration data ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "allowed"),
    [
        ({"mode": "qat"}, "static, dynamic"),
        ({"calib_method": "kl"}, "minmax, entropy, percentile"),
        ({"calib_size": 0}, "positive integer"),
        ({"runtimes": ()}, "at least one runtime"),
        ({"runtimes": ("openvino", "openvino")}, "twice"),
    ],
)
def test_int8_config_rejects_bad_values_listing_allowed_ones(kwargs, allowed):
    with pytest.raises(BadInputError, match=allowed):
        Int8Config(**kwargs)


def test_configs_accept_lists_from_recipes():
    cfg = Int8Config(runtimes=["openvino"], exclude=["/0/Conv"])  # type: ignore[arg-type]
    assert cfg.runtimes == ("openvino",) and cfg.exclude == ("/0/Conv",)
    assert hash(cfg) == hash(Int8Config(runtimes=("openvino",), exclude=("/0/Conv",)))
    assert Fp16Config(runtimes=["tensorrt"]).runtimes == ("tensorrt",)  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [Int8Config(runtimes=("tflite",)), Fp16Config(runtimes=("cuda",))])
def test_unknown_runtime_is_rejected_listing_the_runtime_table(config, tmp_path):
    # Runtime names are checked against the backends the context carries (the runtime table).
    data = Dataset(inputs={"x": np.zeros((2, 1, 8, 8), np.float32)})
    ctx = Context(workdir=tmp_path, calib=data, eval=data, backends=for_techniques())
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(BadInputError, match="onnxruntime, openvino, tensorrt"):
        handler_for(config)[1](config, tmp_path / "m.onnx", ctx)


@pytest.mark.slow
def test_calibration_feeds_are_the_first_samples_in_the_model_dtype(digits):
    data = Dataset(inputs={"pixels": digits.calib.inputs["x"].astype(np.float64)})
    feeds = calibration_feeds(data, digits.onnx, 5)
    assert [list(f) for f in feeds] == [["x"]] * 5
    assert all(f["x"].shape == (1, 1, 8, 8) and f["x"].dtype == np.float32 for f in feeds)
    stacked = np.concatenate([f["x"] for f in feeds])
    np.testing.assert_array_equal(stacked, data.inputs["pixels"][:5])
    two = Dataset(inputs={"a": data.inputs["pixels"], "b": data.inputs["pixels"]})
    with pytest.raises(BadInputError, match="model's inputs are"):
        calibration_feeds(two, digits.onnx, 5)


@pytest.mark.slow
def test_missing_onnx_is_a_bad_input(digits, tmp_path):
    ctx = Context(workdir=tmp_path, calib=digits.calib, eval=digits.eval, backends=for_techniques())
    with pytest.raises(BadInputError, match="does not exist"):
        handler_for(STATIC_ALL)[1](STATIC_ALL, tmp_path / "nope.onnx", ctx)


# --- INT8 ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_INT8)
def test_int8_variant_is_small_and_accurate(int8, digits, name):
    v = int8[0][name]
    runtimes = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
    assert (v.runtime, v.precision) == (runtimes[name.split("-")[0]], "int8")
    out = _run(v, digits.eval.inputs["x"])
    acc = task_metrics("classification", out, digits.eval.labels)["accuracy"]
    fid = fidelity("classification", digits.fp32_out, out)
    ratio = _size(v) / digits.onnx.stat().st_size
    drop = digits.fp32_acc - acc
    _report(name, size_ratio=ratio, acc_drop=drop, cosine=fid.cosine, sqnr_db=fid.sqnr_db)
    assert ratio <= 0.35, f"{name}: {ratio:.2f}× the fp32 size"
    assert drop <= 1.0, f"{name}: accuracy {digits.fp32_acc:.2f} → {acc:.2f}"
    assert fid.cosine > 0.99 and fid.top1_agreement is not None and fid.top1_agreement > 0.98


@pytest.mark.slow
def test_fp32_model_summary_shows_nothing_quantized(digits):
    s = quantization_summary(digits.onnx)
    assert s["QuantizeLinear"] == s["DequantizeLinear"] == s["MatMulInteger"] == 0
    assert s["quantized_op_types"] == {} and s["quantized_weighted"] == []
    assert sorted(s["float_weighted"]) == LAYERS


@pytest.mark.slow
def test_static_int8_puts_qdq_on_every_conv_and_gemm_weight(int8):
    s = quantization_summary(int8[0]["ort-int8-static"].path)
    assert s["QuantizeLinear"] > 0 and s["DequantizeLinear"] > 0
    assert sorted(s["quantized_weighted"]) == LAYERS and s["float_weighted"] == []
    assert s["quantized_op_types"]["Conv"] == 2 and s["quantized_op_types"]["Gemm"] == 2
    assert s["int8_weight_bytes"] >= 32 * 8 * 8 * 64  # the first dense layer alone


@pytest.mark.slow
def test_static_int8_notes_and_records_say_what_was_done(int8):
    notes = " ".join(int8[0]["ort-int8-static"].notes)
    assert "uint8" in notes and "reduce_range" in notes and "300 samples" in notes
    record = int8[1].records["quantize:int8"]
    assert record["calibration"]["n"] == 300 and len(record["calibration"]["sha256"]) == 64
    bf16 = {"ov-bf16"} if bf16_support()[0] else set()  # the same IR in bf16, where the CPU computes it
    assert set(record["variants"]) == {"ort-int8-static", "ov-int8", "trt-int8-qdq"} | bf16
    assert record["variants"]["ov-int8"]["summary"]["FakeQuantize"] > 0


@pytest.mark.slow
def test_exclude_keeps_the_named_onnx_node_float(int8, digits, tmp_path):
    full = quantization_summary(int8[0]["ort-int8-static"].path)
    config = Int8Config(runtimes=("onnxruntime",), exclude=("/0/Conv",))
    v = _quantize(config, digits, tmp_path)[0]["ort-int8-static"]
    s = quantization_summary(v.path)
    assert s["float_weighted"] == ["/0/Conv"]
    assert sorted(s["quantized_weighted"]) == LAYERS[1:]
    assert s["DequantizeLinear"] < full["DequantizeLinear"]
    assert any("/0/Conv" in n for n in v.notes)
    with pytest.raises(BadInputError, match="not nodes"):
        bad = Int8Config(runtimes=("onnxruntime",), exclude=("/no/such/Conv",))
        _quantize(bad, digits, tmp_path / "bad")


@pytest.mark.slow
def test_nncf_ignored_scope_keeps_the_layer_float(int8, digits, tmp_path):
    full = ov_quantized_ops(int8[0]["ov-int8"].path)
    assert sorted(full["quantized"]) == LAYERS and full["float"] == []
    config = Int8Config(runtimes=("openvino",), exclude=("/0/Conv",))
    ops = ov_quantized_ops(_quantize(config, digits, tmp_path)[0]["ov-int8"].path)
    assert ops["float"] == ["/0/Conv"]
    assert sorted(ops["quantized"]) == LAYERS[1:]
    assert ops["FakeQuantize"] < full["FakeQuantize"]
    with pytest.raises(BadInputError, match="matches no OpenVINO operation"):
        _quantize(Int8Config(runtimes=("openvino",), exclude=("/nope",)), digits, tmp_path / "x")


@pytest.mark.slow
def test_trt_qdq_is_symmetric_int8_with_zero_points_zero(int8):
    import onnx
    from onnx import numpy_helper

    path = int8[0]["trt-int8-qdq"].path
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) >= 8
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            # no int32 bias DQ: TensorRT's parser rejects it
            assert inits[node.input[0]].dtype == np.int8, node.name
    # Q/DQ sit on the inputs of weighted layers, not on their outputs.
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: [n for n in model.graph.node if i in n.input] for i in producer}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert [producer[i].op_type for i in node.input[:2]] == ["DequantizeLinear"] * 2
            assert all(c.op_type != "QuantizeLinear" for c in consumers.get(node.output[0], []))
    assert check_trt_qdq(path) == [] and quantization_summary(path)["QuantizeLinear"] >= 3
    problems = check_trt_qdq(int8[0]["ort-int8-static"].path)  # asymmetric uint8 activations
    assert any("uint8 zero point" in p and "TensorRT" in p for p in problems), problems


@pytest.mark.slow
def test_dynamic_int8_quantizes_gemm_and_never_emits_conv_integer(int8):
    s = quantization_summary(int8[0]["ort-int8-dynamic"].path)
    assert s["ConvInteger"] == 0
    assert s["MatMulInteger"] == 2
    assert sorted(s["float_weighted"]) == LAYERS[:2]


@pytest.mark.slow
def test_dynamic_int8_on_a_model_without_matmul_says_so(tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    onnx_path = _export(conv_only.eval(), x, tmp_path / "conv.onnx")
    data = Dataset(inputs={"x": x})
    ctx = Context(workdir=tmp_path / "out", calib=data, eval=data, backends=for_techniques())
    (v,) = handler_for(DYNAMIC)[1](DYNAMIC, onnx_path, ctx)
    assert v.path.is_file() and any("no MatMul or Gemm" in n for n in v.notes)
    assert quantization_summary(v.path)["MatMulInteger"] == 0
    np.testing.assert_allclose(_ort_run(v.path, x), _ort_run(onnx_path, x), atol=1e-5)


@pytest.mark.slow
def test_quantizing_twice_gives_identical_bytes(int8, digits, tmp_path):
    first = int8[0]
    second = _quantize(STATIC_ALL, digits, tmp_path)[0]
    second.update(_quantize(DYNAMIC, digits, tmp_path)[0])
    assert set(second) == set(first)
    for name, v in first.items():
        w = second[name]
        for a, b in zip([v.path, *v.extra_files], [w.path, *w.extra_files], strict=True):
            assert a.read_bytes() == b.read_bytes(), f"{name}: {a.name} differs between two runs"


@pytest.mark.slow
def test_constant_calibration_data_ruins_static_int8(int8, digits, tmp_path):
    zeros = Dataset(inputs={"x": np.zeros_like(digits.calib.inputs["x"][:100])})
    variants, _ = _quantize(Int8Config(runtimes=("onnxruntime",)), digits, tmp_path, calib=zeros)
    x = digits.eval.inputs["x"]
    bad = fidelity("classification", digits.fp32_out, _run(variants["ort-int8-static"], x))
    good = fidelity("classification", digits.fp32_out, _run(int8[0]["ort-int8-static"], x))
    _report("ort-int8-static, zero calib", cosine=bad.cosine, sqnr_db=bad.sqnr_db)
    assert good.sqnr_db > 20.0
    assert bad.sqnr_db < good.sqnr_db - 15.0 and bad.cosine < 0.95
    assert any("identical" in n for n in variants["ort-int8-static"].notes)


# --- FP16 and the fp32 IR ------------------------------------------------------------------


@pytest.mark.slow
def test_ort_fp16_has_fp16_weights_and_follows_fp32(fp16, digits):
    import onnx
    from onnx import TensorProto

    v = fp16["ort-fp16"]
    assert (v.runtime, v.precision) == ("onnxruntime", "fp16")
    model = onnx.load(str(v.path))
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # keep_io_types
    out = _ort_run(v.path, digits.eval.inputs["x"])
    np.testing.assert_allclose(out, digits.fp32_out, atol=0.05, rtol=0.01)
    fid = fidelity("classification", digits.fp32_out, out)
    ratio = _size(v) / digits.onnx.stat().st_size
    _report("ort-fp16", size_ratio=ratio, cosine=fid.cosine, sqnr_db=fid.sqnr_db)
    assert 0.45 < ratio < 0.55 and fid.top1_agreement == 1.0


@pytest.mark.slow
def test_ov_fp16_ir_has_half_size_weights_and_follows_fp32(fp16, digits, tmp_path):
    v = fp16["ov-fp16"]
    assert (v.runtime, v.precision) == ("openvino", "fp16") and v.extra_files[0].suffix == ".bin"
    assert any("decompresses" in n for n in v.notes)
    fp32 = ov_fp32_ir(digits.onnx, tmp_path / "model.ov-fp32.xml")
    assert (fp32.name, fp32.runtime, fp32.precision) == ("ov-fp32", "openvino", "fp32")
    assert 0.45 < v.extra_files[0].stat().st_size / fp32.extra_files[0].stat().st_size < 0.55
    x = digits.eval.inputs["x"]
    np.testing.assert_allclose(_ov_run(fp32.path, x), digits.fp32_out, atol=1e-4)
    out = _ov_run(v.path, x)
    np.testing.assert_allclose(out, digits.fp32_out, atol=0.05, rtol=0.01)
    fid = fidelity("classification", digits.fp32_out, out)
    ratio = _size(v) / digits.onnx.stat().st_size
    _report("ov-fp16", size_ratio=ratio, cosine=fid.cosine, sqnr_db=fid.sqnr_db)


@pytest.mark.slow
def test_trt_fp16_is_the_fp32_onnx_built_with_fp16_on_the_device(fp16, digits):
    v = fp16["trt-fp16"]
    assert (v.runtime, v.precision) == ("tensorrt", "fp16")
    assert v.path.read_bytes() == digits.onnx.read_bytes()
    assert any("--fp16" in n for n in v.notes)


def test_stable_names_number_counter_names_in_graph_order_and_keep_the_sources() -> None:
    """OpenVINO names operations from a process-wide counter, and NNCF builds names on them
    (``LSTMSequence_23306/fq_output_0``): both are renumbered in graph order, so a model built
    twice serializes the same; a name built on a source node's name (``Conv_3/WithoutBiases``)
    is kept, since layers are matched to ONNX nodes by it."""
    import openvino as ov
    from openvino import opset13 as ops

    from edgekit.compress.quantize_ov import stable_names

    def build(counter: int) -> list[str]:
        x = ops.parameter([1, 4], np.float32, name="x")
        a = ops.relu(x)
        a.set_friendly_name(f"Relu_{counter}")
        b = ops.multiply(a, ops.constant(np.float32(2.0)))
        b.set_friendly_name(f"Relu_{counter}/fq_output_0")
        c = ops.relu(b)
        c.set_friendly_name("Conv_3/WithoutBiases")
        model = ov.Model([c], [x])
        stable_names(model, {"Conv_3", "x"})
        return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() != "Result"]

    first, second = build(17), build(23306)
    assert first == second, (first, second)
    assert "Conv_3/WithoutBiases" in first and "x" in first
    relu = next(n for n in first if n.startswith("Relu_") and "/" not in n)
    assert f"{relu}/fq_output_0" in first  # the derived name follows its base
