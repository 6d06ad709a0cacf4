"""The Runtime contract, run once per runtime that works here (ONNX Runtime, OpenVINO, torch),
on a small CNN trained on the real scikit-learn digits."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.errors import BadInputError, MissingDependencyError
from edgekit.runtimes import available, canonical, get_runtime, names
from edgekit.runtimes.base import Runtime, TensorSpec, precision_verdict, specs_from_onnx
from edgekit.runtimes.onnxruntime import OnnxRuntime
from edgekit.runtimes.openvino import OpenVINORuntime
from edgekit.runtimes.torch_eager import TorchRuntime

ATOL = 1e-4


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits: tuple[np.ndarray, np.ndarray]) -> nn.Module:
    torch.manual_seed(0)
    x, y = torch.from_numpy(digits[0]), torch.from_numpy(digits[1])
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.85, f"the fixture model did not learn the digits ({accuracy:.2f})"
    return model


@pytest.fixture(scope="module")
def artifacts(trained: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import openvino as ov

    out = tmp_path_factory.mktemp("runtimes")
    example = torch.zeros(2, 1, 8, 8)
    paths = {kind: out / f"cnn.{kind}" for kind in ("onnx", "pt2", "ts", "xml")}
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export pytree notices
        torch.onnx.export(
            trained, (example,), str(paths["onnx"]), input_names=["x"], output_names=["logits"],
            dynamo=True, external_data=False, dynamic_shapes=({0: batch},), verbose=False,
        )
        program = torch.export.export(trained, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(paths["pt2"]))
    torch.jit.save(torch.jit.trace(trained, example), str(paths["ts"]))
    # A static batch of 1 on purpose: the runtime must make the batch axis dynamic itself.
    ir = ov.convert_model(trained, example_input=example[:1], input=[ov.PartialShape([1, 1, 8, 8])])
    ov.save_model(ir, str(paths["xml"]), compress_to_fp16=False)  # the default stores fp16 weights
    return paths


def reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


class RuntimeContract:
    """What every runtime must do; subclasses name the runtime and the file it loads."""

    runtime: ClassVar[str]
    artifact: ClassVar[str]
    package: ClassVar[str]

    @pytest.fixture
    def rt(self, artifacts: dict[str, Path]) -> Runtime:
        return get_runtime(self.runtime, threads=1).load(artifacts[self.artifact])

    def feed(self, rt: Runtime, x: np.ndarray) -> dict[str, np.ndarray]:
        return {rt.inputs[0].name: x}

    @pytest.mark.parametrize("batch", [1, 7])
    def test_outputs_match_torch(
        self, rt: Runtime, trained: nn.Module, digits: tuple, batch: int
    ) -> None:
        x = digits[0][100 : 100 + batch]
        (out,) = rt.run(self.feed(rt, x))
        expected = reference(trained, x)
        assert out.shape == (batch, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=ATOL, rtol=0)
        assert (out.argmax(1) == expected.argmax(1)).all()

    def test_specs(self, rt: Runtime) -> None:
        (inp,) = rt.inputs
        assert inp.dtype == "float32" and inp.rank == 4 and inp.shape[1:] == (1, 8, 8)
        assert not isinstance(inp.shape[0], int), "the batch axis must be dynamic"
        (out,) = rt.outputs
        assert out.dtype == "float32" and out.shape[1:] == (10,)

    def test_unknown_input_name(self, rt: Runtime, digits: tuple) -> None:
        with pytest.raises(BadInputError, match=r"unknown \['image'\].*inputs are"):
            rt.run({"image": digits[0][:1]})

    def test_missing_input(self, rt: Runtime) -> None:
        with pytest.raises(BadInputError, match="missing"):
            rt.run({})

    def test_wrong_dtype_is_not_cast(self, rt: Runtime, digits: tuple) -> None:
        with pytest.raises(BadInputError, match="float64.*float32"):
            rt.run(self.feed(rt, digits[0][:2].astype(np.float64)))

    def test_wrong_rank(self, rt: Runtime, digits: tuple) -> None:
        with pytest.raises(BadInputError, match="rank 3.*rank 4"):
            rt.run(self.feed(rt, digits[0][0]))

    def test_wrong_static_dim(self, rt: Runtime, digits: tuple) -> None:
        with pytest.raises(BadInputError, match="axis 3 must be 8"):
            rt.run(self.feed(rt, np.ascontiguousarray(digits[0][:2, :, :, :4])))

    def test_not_an_array(self, rt: Runtime, digits: tuple) -> None:
        with pytest.raises(BadInputError, match="numpy array"):
            rt.run(self.feed(rt, digits[0][:1].tolist()))  # type: ignore[arg-type]

    def test_missing_file(self, tmp_path: Path) -> None:
        missing = tmp_path / f"nope{get_runtime(self.runtime).suffixes[0]}"
        with pytest.raises(BadInputError, match="does not exist"):
            get_runtime(self.runtime).load(missing)

    def test_wrong_suffix(self, tmp_path: Path) -> None:
        f = tmp_path / "model.txt"
        f.write_text("not a model")
        with pytest.raises(BadInputError, match="expected a"):
            get_runtime(self.runtime).load(f)

    def test_corrupt_file(self, tmp_path: Path) -> None:
        f = tmp_path / f"broken{get_runtime(self.runtime).suffixes[0]}"
        f.write_bytes(b"\x08\x01garbage" * 64)
        with pytest.raises(BadInputError, match="could not load|not a TorchScript|no weights"):
            get_runtime(self.runtime).load(f)

    def test_run_before_load(self) -> None:
        with pytest.raises(BadInputError, match="call load"):
            get_runtime(self.runtime).run({})

    def test_bad_threads(self) -> None:
        with pytest.raises(BadInputError, match="threads"):
            get_runtime(self.runtime, threads=0)

    def test_describe(self, rt: Runtime) -> None:
        info = rt.describe()
        assert info["runtime"] == self.runtime
        assert info["version"].startswith(importlib.metadata.version(self.package).split("+")[0])
        assert info["threads"] == 1
        assert info["device"]
        assert info["precision"] == "fp32"
        assert info["inputs"][0]["dtype"] == "float32"


class TestOnnxRuntime(RuntimeContract):
    runtime, artifact, package = "onnxruntime", "onnx", "onnxruntime"

    def test_describe_counts_ops_of_optimized_graph(self, rt: Runtime) -> None:
        info = rt.describe()
        assert info["execution_provider"] == "CPUExecutionProvider"
        assert info["ops"]["Conv"] == 2 and info["int8_ops"] == 0

    @pytest.mark.slow
    def test_int8_model_reports_int8_kernels(
        self,
        artifacts: dict[str, Path],
        digits: tuple,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"x": digits[0][i : i + 32]} for i in range(0, 256, 32)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        monkeypatch.chdir(tmp_path)  # the quantizer writes scratch files into the working directory
        q = tmp_path / "cnn.int8.onnx"
        quantize_static(
            str(artifacts["onnx"]), str(q), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        )
        rt = OnnxRuntime().load(q)
        info = rt.describe()
        assert info["int8_ops"] >= 2, info["ops"]
        assert info["precision"] in ("int8", "mixed")
        out = rt.run({"x": digits[0][:200]})[0]
        fp32 = OnnxRuntime().load(artifacts["onnx"]).run({"x": digits[0][:200]})[0]
        assert (out.argmax(1) == fp32.argmax(1)).mean() > 0.9
        assert np.abs(out - fp32).max() > ATOL, "an int8 model matching fp32 exactly is not int8"


class TestOpenVINO(RuntimeContract):
    runtime, artifact, package = "openvino", "xml", "openvino"

    def test_ir_with_static_batch_runs_any_batch(
        self, rt: Runtime, trained: nn.Module, digits: tuple
    ) -> None:
        assert rt.describe()["batch_dynamic"] is True
        x = digits[0][:5]
        out = rt.run(self.feed(rt, x))[0]
        np.testing.assert_allclose(out, reference(trained, x), atol=ATOL, rtol=0)

    def test_loads_onnx_too(
        self, artifacts: dict[str, Path], trained: nn.Module, digits: tuple
    ) -> None:
        rt = OpenVINORuntime().load(artifacts["onnx"])
        x = digits[0][:3]
        np.testing.assert_allclose(rt.run({"x": x})[0], reference(trained, x), atol=ATOL, rtol=0)

    def test_fp32_really_runs_fp32(self, rt: Runtime) -> None:
        info = rt.describe()
        assert info["inference_precision"] == "fp32"
        assert set(info["compute_ops_by_precision"]) == {"f32"}
        assert info["compute_ops_by_precision"]["f32"] >= 3  # two convolutions and the linear layer

    def test_bf16_hint_is_applied(
        self, artifacts: dict[str, Path], trained: nn.Module, digits: tuple
    ) -> None:
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            pytest.skip("this CPU has no bf16 support in OpenVINO")
        rt = OpenVINORuntime(precision_hint="bf16").load(artifacts["xml"])
        info = rt.describe()
        assert info["inference_precision"] == "bf16" and info["precision"] == "bf16"
        x = digits[0][:64]
        out, expected = rt.run({rt.inputs[0].name: x})[0], reference(trained, x)
        assert np.abs(out - expected).max() > ATOL  # bf16 keeps 8 mantissa bits: not within 1e-4
        assert (out.argmax(1) == expected.argmax(1)).mean() > 0.9

    def test_ir_without_weights(self, artifacts: dict[str, Path], tmp_path: Path) -> None:
        xml = tmp_path / "alone.xml"
        xml.write_text(artifacts["xml"].read_text())
        with pytest.raises(BadInputError, match="no weights file alone.bin"):
            OpenVINORuntime().load(xml)


class TestTorch(RuntimeContract):
    runtime, artifact, package = "torch", "pt2", "torch"

    def test_torchscript_with_specs_from_onnx(
        self, artifacts: dict[str, Path], trained: nn.Module, digits: tuple
    ) -> None:
        specs, _ = specs_from_onnx(artifacts["onnx"])
        rt = TorchRuntime(input_specs=specs).load(artifacts["ts"])
        assert rt.outputs[0].shape == ("batch", 10)
        x = digits[0][:4]
        np.testing.assert_allclose(rt.run({"x": x})[0], reference(trained, x), atol=ATOL, rtol=0)
        assert rt.describe()["format"] == "torchscript"

    def test_torchscript_needs_specs(self, artifacts: dict[str, Path]) -> None:
        with pytest.raises(BadInputError, match="input_specs"):
            TorchRuntime().load(artifacts["ts"])

    def test_from_module(self, trained: nn.Module, digits: tuple) -> None:
        specs = [TensorSpec("x", ("batch", 1, 8, 8), "float32")]
        rt = TorchRuntime.from_module(trained, specs, output_names=["logits"])
        assert [o.name for o in rt.outputs] == ["logits"]
        x = digits[0][:3]
        np.testing.assert_array_equal(rt.run({"x": x})[0], reference(trained, x))
        with pytest.raises(BadInputError, match="float64"):
            rt.run({"x": x.astype(np.float64)})


# ------------------------------------------------------------------------------- registry
def test_names_and_aliases() -> None:
    assert names() == ["onnxruntime", "openvino", "tensorrt", "torch"]
    assert [canonical(a) for a in ("ORT", "ov", "trt")] == ["onnxruntime", "openvino", "tensorrt"]
    assert isinstance(get_runtime("ort", threads=2), OnnxRuntime)
    assert get_runtime("ov").threads == 1


def test_unknown_runtime_lists_known_ones() -> None:
    with pytest.raises(BadInputError, match="onnxruntime, openvino, tensorrt, torch"):
        get_runtime("tflite")


def test_available_reports_packages() -> None:
    status = available()
    assert set(status) == set(names())
    assert status["onnxruntime"] is True and status["openvino"] is True and status["torch"] is True
    if status["tensorrt"] is not True:
        assert "edgekit[tensorrt]" in str(status["tensorrt"])


def test_available_imports_no_runtime_package() -> None:
    code = (
        "import sys, edgekit.runtimes as r; r.available(); r.get_runtime('ort');"
        "r.get_runtime('ov'); heavy = ('onnxruntime', 'openvino', 'torch', 'tensorrt');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.stdout.strip() == "[]"


def test_missing_package_names_package_and_extra(tmp_path: Path) -> None:
    class Absent(OnnxRuntime):
        name, package, extra = "absent", "absent-runtime", "absent"
        module = "edgekit_absent_runtime"

    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    with pytest.raises(MissingDependencyError, match=r"absent-runtime.*edgekit\[absent\]"):
        Absent().load(f)


def test_precision_verdict() -> None:
    assert precision_verdict({"f32": 3}) == "fp32"
    assert precision_verdict({"i8": 2, "u8": 1}) == "int8"
    assert precision_verdict({"i8": 2, "f32": 1}) == "mixed"
    assert precision_verdict({"int8": 0, "fp32": 4}) == "fp32"
    assert precision_verdict({}) == "unknown"


def test_bad_precision_hint() -> None:
    with pytest.raises(BadInputError, match="fp32, fp16, bf16, int8"):
        get_runtime("openvino", precision_hint="fp64")


def test_a_load_failure_names_the_runtime_reason_not_its_source_location() -> None:
    from edgekit.errors import error_line as _reason

    raised = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:132:\nException from src/inference/src/dev/plugin.cpp:59:\n"
        "could not create a primitive descriptor for the LSTM forward propagation primitive.\n\n"
    )
    assert _reason(raised) == "could not create a primitive descriptor for the LSTM forward propagation primitive."
    assert _reason(ValueError("bad header\nmore")) == "bad header"
    assert _reason(ValueError("")) == "ValueError"
