"""TensorRT: everything up to the engine build runs here (shapes, trtexec command lines, Q/DQ
validation, dependency errors); building and running an engine needs an NVIDIA GPU and skips
without one."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgekit.errors import BadInputError, MissingDependencyError
from edgekit.runtimes import get_runtime
from edgekit.runtimes.tensorrt import (
    TensorRTRuntime,
    build_engine,
    check_trt_qdq,
    gpu_available,
    profile_shapes,
    trtexec_command,
)

GPU, GPU_REASON = gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason=f"needs an NVIDIA GPU with TensorRT: {GPU_REASON}")
TRT_INSTALLED = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> Path:
    """A small MLP trained on the real digits, exported with a dynamic batch axis."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.from_numpy(digits), torch.from_numpy(load_digits().target)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path_factory.mktemp("trt") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export pytree notices
        torch.onnx.export(
            model.eval(), (x[:2],), str(path), input_names=["x"], output_names=["logits"],
            dynamo=True, external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    return path


def quantize(src: Path, dst: Path, digits: np.ndarray, **kwargs: object) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": digits[i : i + 64]} for i in range(0, 512, 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    options: dict = dict(kwargs)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, **options)
    return dst


# ------------------------------------------------------------------------------- device
def test_gpu_available_answers_without_crashing() -> None:
    ok, reason = gpu_available()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if not ok:
        assert "GPU" in reason or "tensorrt" in reason


# ------------------------------------------------------------------------------- shapes
def test_profile_shapes_from_a_dynamic_batch_model(mlp_onnx: Path) -> None:
    shapes = profile_shapes(mlp_onnx, min_batch=1, opt_batch=8, max_batch=32)
    assert shapes == {"x": ((1, 64), (8, 64), (32, 64))}


def test_profile_shapes_of_a_static_model_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "static.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph), str(path))
    assert profile_shapes(path) == {}


def test_profile_shapes_needs_shapes_for_other_dynamic_axes(tmp_path: Path) -> None:
    path = tmp_path / "seq.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["ids"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
    )
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(BadInputError, match="dynamic axes.*seq"):
        profile_shapes(path)
    given = {"ids": ((1, 16), (4, 128), (8, 512))}
    assert profile_shapes(path, shapes=given) == given
    with pytest.raises(BadInputError, match="min <= opt <= max"):
        profile_shapes(path, shapes={"ids": ((1, 16), (4, 8), (8, 512))})
    with pytest.raises(BadInputError, match="rank"):
        profile_shapes(path, shapes={"ids": ((1,), (4,), (8,))})
    with pytest.raises(BadInputError, match="not inputs"):
        profile_shapes(path, shapes={"mask": ((1, 1), (1, 1), (1, 1))})


def test_profile_shapes_rejects_bad_batches(mlp_onnx: Path) -> None:
    with pytest.raises(BadInputError, match="min <= opt <= max"):
        profile_shapes(mlp_onnx, min_batch=8, opt_batch=4, max_batch=32)


# ------------------------------------------------------------------------------- trtexec
def test_trtexec_fp16_with_timing_cache_and_dynamic_batch(mlp_onnx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cmd = trtexec_command(mlp_onnx, tmp_path / "mlp.engine", fp16=True, timing_cache=cache,
                          shapes=profile_shapes(mlp_onnx, opt_batch=8), workspace_mb=2048)
    assert cmd[0] == "trtexec"
    assert f"--onnx={mlp_onnx}" in cmd and f"--saveEngine={tmp_path / 'mlp.engine'}" in cmd
    assert "--fp16" in cmd and "--int8" not in cmd and "--stronglyTyped" not in cmd
    assert f"--timingCacheFile={cache}" in cmd
    assert {"--minShapes=x:1x64", "--optShapes=x:8x64", "--maxShapes=x:32x64"} <= set(cmd)
    assert "--memPoolSize=workspace:2048M" in cmd
    assert "--skipInference" in cmd


def test_trtexec_int8_for_explicit_qdq_has_no_calibrator(mlp_onnx: Path, tmp_path: Path) -> None:
    cmd = trtexec_command(mlp_onnx, tmp_path / "q.engine", fp16=True, int8=True)
    assert "--int8" in cmd and "--fp16" in cmd
    # no calibrator, and no flag TensorRT 10 removed
    assert not any(arg.startswith(("--calib", "--workspace")) for arg in cmd)
    assert not any("Shapes" in arg for arg in cmd)  # no shapes given: none passed


def test_trtexec_strongly_typed(mlp_onnx: Path, tmp_path: Path) -> None:
    cmd = trtexec_command(mlp_onnx, tmp_path / "s.engine", strongly_typed=True)
    assert "--stronglyTyped" in cmd and "--fp16" not in cmd and "--int8" not in cmd
    with pytest.raises(BadInputError, match="strongly typed"):
        trtexec_command(mlp_onnx, tmp_path / "s.engine", strongly_typed=True, fp16=True)


def test_trtexec_quotes_names_with_separators(tmp_path: Path) -> None:
    shapes = {"input:0": ((1, 3), (2, 3), (4, 3)), "mask": ((1, 3), (2, 3), (4, 3))}
    cmd = trtexec_command(tmp_path / "m.onnx", tmp_path / "m.engine", shapes=shapes)
    assert "--minShapes='input:0':1x3,mask:1x3" in cmd
    assert "--maxShapes='input:0':4x3,mask:4x3" in cmd


# ------------------------------------------------------------------------------- build (no GPU)
@pytest.mark.skipif(TRT_INSTALLED, reason="tensorrt is installed here")
def test_build_engine_without_tensorrt_names_package_and_extra(
    mlp_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(MissingDependencyError, match=r"tensorrt.*edgekit\[tensorrt\]"):
        build_engine(
            mlp_onnx, tmp_path / "mlp.engine", fp16=True, timing_cache=tmp_path / "timing.cache"
        )
    assert not (tmp_path / "mlp.engine").exists() and not (tmp_path / "timing.cache").exists()


@pytest.mark.skipif(TRT_INSTALLED, reason="tensorrt is installed here")
def test_runtime_without_tensorrt_names_package_and_extra(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match=r"edgekit\[tensorrt\]"):
        get_runtime("trt").load(engine)


def test_build_engine_validates_before_needing_tensorrt(mlp_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        build_engine(tmp_path / "none.onnx", tmp_path / "e.engine")
    wrong = tmp_path / "model.xml"
    wrong.write_text("<net/>")
    with pytest.raises(BadInputError, match="not an .onnx"):
        build_engine(wrong, tmp_path / "e.engine")
    with pytest.raises(BadInputError, match="strongly typed"):
        build_engine(mlp_onnx, tmp_path / "e.engine", int8=True, strongly_typed=True)
    with pytest.raises(BadInputError, match="min <= opt <= max"):
        build_engine(mlp_onnx, tmp_path / "e.engine", min_batch=4, opt_batch=2)
    with pytest.raises(BadInputError, match="workspace"):
        build_engine(mlp_onnx, tmp_path / "e.engine", workspace_mb=0)


def test_runtime_accepts_engine_files_only(mlp_onnx: Path) -> None:
    with pytest.raises(BadInputError, match="expected a .engine"):
        TensorRTRuntime().load(mlp_onnx)


# ------------------------------------------------------------------------------- Q/DQ check
def test_symmetric_int8_qdq_passes(mlp_onnx: Path, digits: np.ndarray, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.quantization import QuantType

    monkeypatch.chdir(tmp_path)  # the quantizer writes scratch files into the working directory
    q = quantize(
        mlp_onnx, tmp_path / "sym.onnx", digits, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    assert check_trt_qdq(q) == []
    zero_points = [i for i in onnx.load(str(q)).graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(numpy_helper.to_array(z).dtype == np.int8 for z in zero_points)


def test_asymmetric_uint8_qdq_is_rejected(mlp_onnx: Path, digits: np.ndarray, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.quantization import QuantType

    monkeypatch.chdir(tmp_path)
    q = quantize(
        mlp_onnx, tmp_path / "u8.onnx", digits,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    problems = check_trt_qdq(q)
    assert any("uint8 zero point" in p and "x_QuantizeLinear" in p for p in problems), problems
    # ONNX Runtime quantizes biases to int32 by default
    assert any("quantized bias" in p for p in problems), problems


def test_nonzero_int8_zero_point_is_rejected(mlp_onnx: Path, digits: np.ndarray, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.quantization import QuantType

    monkeypatch.chdir(tmp_path)
    q = quantize(mlp_onnx, tmp_path / "asym.onnx", digits, activation_type=QuantType.QInt8,
                 weight_type=QuantType.QInt8, extra_options={"QuantizeBias": False})
    problems = check_trt_qdq(q)
    assert len(problems) == 1 and "int8 zero point is not 0" in problems[0], problems


def qdq_model(path: Path, *, zero_point: np.ndarray | None, scale: np.ndarray, opset: int = 17,
              scale_is_input: bool = False) -> Path:
    inits = [] if scale_is_input else [numpy_helper.from_array(scale, "scale")]
    q_inputs = ["x", "scale"] + ([] if zero_point is None else ["zp"])
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    if scale_is_input:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, list(scale.shape)))
    axis = {"axis": 1} if scale.size > 1 else {}
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", q_inputs, ["q"], name="q0", **axis),
         helper.make_node("DequantizeLinear", ["q", *q_inputs[1:]], ["y"], name="dq0", **axis)],
        "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_handmade_qdq_cases(tmp_path: Path) -> None:
    scale = np.array(0.05, dtype=np.float32)
    ok = qdq_model(tmp_path / "ok.onnx", zero_point=np.array(0, dtype=np.int8), scale=scale)
    assert check_trt_qdq(ok) == []

    shifted = qdq_model(tmp_path / "shift.onnx", zero_point=np.array(3, np.int8), scale=scale)
    (problem,) = check_trt_qdq(shifted)
    assert "not 0" in problem and "q0" in problem and "dq0" in problem

    default_u8 = qdq_model(tmp_path / "nozp.onnx", zero_point=None, scale=scale)
    assert any("uint8" in p and "q0" in p for p in check_trt_qdq(default_u8))

    zero = np.array(0, dtype=np.int8)
    negative = qdq_model(tmp_path / "neg.onnx", zero_point=zero, scale=np.array(-1.0, np.float32))
    assert any("not positive" in p for p in check_trt_qdq(negative))

    dynamic = qdq_model(tmp_path / "dyn.onnx", zero_point=zero, scale=scale, scale_is_input=True)
    assert any("not a constant" in p for p in check_trt_qdq(dynamic))

    per_channel = qdq_model(tmp_path / "pc.onnx", zero_point=np.zeros(4, np.int8),
                            scale=np.full(4, 0.1, np.float32), opset=12)
    assert any("opset >= 13" in p for p in check_trt_qdq(per_channel))


def test_float_model_is_not_an_explicit_quantization_model(mlp_onnx: Path) -> None:
    (problem,) = check_trt_qdq(mlp_onnx)
    assert "no QuantizeLinear/DequantizeLinear" in problem


# ------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.slow
@needs_gpu
def test_fp16_engine_builds_with_timing_cache_and_runs(
    mlp_onnx: Path, digits: np.ndarray, tmp_path: Path
) -> None:
    cache = tmp_path / "timing.cache"
    engine = build_engine(
        mlp_onnx, tmp_path / "mlp.engine", fp16=True, timing_cache=cache, max_batch=16
    )
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    rt = TensorRTRuntime().load(engine)
    x = digits[:16]
    out = rt.run({"x": x})[0]
    ref = get_runtime("onnxruntime").load(mlp_onnx).run({"x": x})[0]
    np.testing.assert_allclose(out, ref, atol=2e-2, rtol=0)
    assert rt.describe()["device_name"]
    with pytest.raises(BadInputError, match="optimization profile"):
        rt.run({"x": digits[:17]})
    build_engine(mlp_onnx, tmp_path / "again.engine", fp16=True, timing_cache=cache, max_batch=16)
    assert cache.stat().st_size > 0


@pytest.mark.gpu
@pytest.mark.slow
@needs_gpu
def test_int8_engine_from_symmetric_qdq(mlp_onnx: Path, digits: np.ndarray, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.quantization import QuantType

    monkeypatch.chdir(tmp_path)
    q = quantize(
        mlp_onnx, tmp_path / "sym.onnx", digits, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    assert check_trt_qdq(q) == []
    engine = build_engine(q, tmp_path / "q.engine", fp16=True, int8=True, max_batch=64)
    out = TensorRTRuntime().load(engine).run({"x": digits[:64]})[0]
    ref = get_runtime("onnxruntime").load(mlp_onnx).run({"x": digits[:64]})[0]
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9
