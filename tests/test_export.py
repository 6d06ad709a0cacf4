"""ONNX export from every input format, with dynamic batch and a parity check that bites."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import MLP, TextNet
from torch import nn

from edgekit.errors import BadInputError, IntegrityError
from edgekit.export import ExportResult, check_parity, export_onnx, model_params
from edgekit.io.models import load_model

torch.set_num_threads(1)
RNG = np.random.default_rng(0)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(h.flatten(1)))


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(30, 4), nn.Linear(30, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


class FixedBatch(nn.Module):
    """Hard-codes the batch size it was traced with: its ONNX cannot serve another batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(30, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(int(x.shape[0]), -1))


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    net = cls()
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval vs train mode matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _images(n: int) -> np.ndarray:
    return RNG.standard_normal((n, 1, 28, 28)).astype(np.float32)


def _text(n: int) -> dict[str, np.ndarray]:
    mask = (RNG.random((n, 16)) > 0.3).astype(np.float32)
    return {"input_ids": RNG.integers(0, 100, (n, 16)).astype(np.int64), "attention_mask": mask}


def _ort(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feed)


def _torch(net: nn.Module, *arrays: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(*(torch.from_numpy(a) for a in arrays)).numpy()


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


def _assert_dynamic_batch_and_self_contained(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        path.name
    ]  # no .data file, no leftovers
    return model


def test_eager_conv_net_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = _seeded(ConvNet)
    net.train()  # export must use eval mode (dropout off, running stats) and restore the mode
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out" / "model.onnx"
    sample = _images(4)
    result = export_onnx(net, out, sample={"input": sample})

    assert isinstance(result, ExportResult) and result.path == out
    assert (result.exporter, result.opset) == ("torchscript", 17)
    assert result.input_names == ["input"] and result.output_names == ["output"]
    assert 0.0 <= result.max_abs_err < 1e-4
    assert net.training
    assert list(cwd.iterdir()) == []
    model = _assert_dynamic_batch_and_self_contained(out)
    assert model.opset_import[0].version == 17
    net.eval()
    for n in (1, 5):
        x = _images(n)
        (got,) = _ort(out, {"input": x})
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, _torch(net, x), atol=1e-4)
    # batch norm is folded into the convolution on export
    assert model_params(out) == sum(
        p.numel() for name, p in net.named_parameters() if not name.startswith("bn.")
    )


def test_batch_one_sample_still_gives_dynamic_batch(tmp_path: Path) -> None:
    net = _seeded(MLP)
    out = tmp_path / "mlp.onnx"
    x = RNG.standard_normal((1, 30))  # float64 on purpose: cast to the model's float32
    export_onnx(net, out, sample={"x": x})
    _assert_dynamic_batch_and_self_contained(out)
    x5 = RNG.standard_normal((5, 30)).astype(np.float32)
    np.testing.assert_allclose(_ort(out, {"x": x5})[0], _torch(net, x5), atol=1e-5)


def test_two_inputs_keep_int64(tmp_path: Path) -> None:
    net = _seeded(TextNet)
    out = tmp_path / "text.onnx"
    sample = dict(reversed(_text(3).items()))  # ordered by forward's arguments, not by the dict
    result = export_onnx(net, out, sample=sample)
    assert result.input_names == ["input_ids", "attention_mask"]
    model = _assert_dynamic_batch_and_self_contained(out)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    assert types == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.FLOAT}
    for n in (1, 5):
        feed = _text(n)
        np.testing.assert_allclose(
            _ort(out, feed)[0], _torch(net, feed["input_ids"], feed["attention_mask"]), atol=1e-5
        )


def test_multiple_outputs_are_named_and_checked(tmp_path: Path) -> None:
    net = _seeded(TwoHeads)
    out = tmp_path / "heads.onnx"
    result = export_onnx(net, out, sample={"x": RNG.standard_normal((3, 30)).astype(np.float32)})
    assert result.output_names == ["output_0", "output_1"]
    got = _ort(out, {"x": np.ones((5, 30), np.float32)})
    assert [g.shape for g in got] == [(5, 4), (5, 2)]
    _assert_dynamic_batch_and_self_contained(out)


def test_torchscript_reference_file_exports_with_meta_names(tmp_path: Path) -> None:
    net = _seeded(ConvNet)
    meta = {
        "zoo": "test-cnn",
        "task": "classification",
        "input_name": "input",
        "input_shape": [1, 28, 28],
        "input_dtype": "float32",
    }
    src = tmp_path / "src" / "ref.pt"
    src.parent.mkdir()
    torch.jit.save(_script(net), str(src), _extra_files={"edgekit.json": json.dumps(meta)})
    loaded = load_model(src)
    assert not loaded.eager
    out = tmp_path / "out" / "ref.onnx"
    result = export_onnx(
        loaded, out, sample={"x": _images(3)}
    )  # a single array binds to the only input
    assert result.exporter == "torchscript" and result.input_names == ["input"]
    _assert_dynamic_batch_and_self_contained(out)
    reloaded = load_model(out)  # the metadata travels inside the ONNX file
    assert reloaded.meta == meta
    assert [(s.name, s.shape) for s in reloaded.inputs] == [("input", (1, 28, 28))]


@pytest.mark.slow  # the first dynamo export imports and warms up onnxscript (~5 s)
def test_exported_program_uses_dynamo_exporter(tmp_path: Path) -> None:
    net = _seeded(TextNet)
    feed = _text(2)
    batch = torch.export.Dim("batch")
    args = (torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]))
    src = tmp_path / "src" / "text.pt2"
    src.parent.mkdir()
    torch.export.save(
        torch.export.export(net, args, dynamic_shapes=({0: batch}, {0: batch})), str(src)
    )
    loaded = load_model(src)
    out = tmp_path / "out" / "text.onnx"
    result = export_onnx(loaded, out, sample=_text(4))
    assert result.exporter == "dynamo" and result.opset >= 18
    assert result.input_names == ["input_ids", "attention_mask"] and result.max_abs_err < 1e-4
    model = _assert_dynamic_batch_and_self_contained(out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    feed5 = _text(5)
    np.testing.assert_allclose(_ort(out, feed5)[0], _torch(net, *feed5.values()), atol=1e-5)


def test_state_dict_model_exports(tmp_path: Path) -> None:
    net = _seeded(MLP)
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    loaded = load_model(weights, arch=f"{__name__}:MLP", input_shape="input:30")
    out = tmp_path / "out" / "mlp.onnx"
    result = export_onnx(
        loaded, out, sample={"input": RNG.standard_normal((8, 30)).astype(np.float32)}
    )
    assert result.input_names == ["input"]
    assert model_params(out) == 30 * 16 + 16 + 16 + 1


def test_onnx_input_is_upgraded_and_made_dynamic(tmp_path: Path) -> None:
    net = _seeded(ConvNet)
    src = tmp_path / "src" / "old.onnx"
    src.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.from_numpy(_images(1)),),
            str(src),
            dynamo=False,
            opset_version=11,
            input_names=["image"],
            output_names=["logits"],
        )  # opset 11, batch fixed at 1
    loaded = load_model(src)
    assert loaded.format == "onnx"
    out = tmp_path / "out" / "new.onnx"
    result = export_onnx(loaded, out, sample={"image": _images(3)})
    assert result.exporter == "onnx" and result.opset == 17
    assert (result.input_names, result.output_names) == (["image"], ["logits"])
    _assert_dynamic_batch_and_self_contained(out)
    x = _images(5)
    np.testing.assert_allclose(_ort(out, {"image": x})[0], _torch(net, x), atol=1e-4)


def test_check_parity_catches_a_different_model(tmp_path: Path) -> None:
    net = _seeded(MLP)
    out = tmp_path / "mlp.onnx"
    sample = {"x": RNG.standard_normal((6, 30)).astype(np.float32)}
    export_onnx(net, out, sample=sample)
    assert check_parity(out, net, sample, atol=1e-4) < 1e-5
    torch.manual_seed(123)
    other = MLP().eval()
    with pytest.raises(IntegrityError, match=r"ONNX output differs from torch by .* > "):
        check_parity(out, other, sample, atol=1e-4)
    with pytest.raises(IntegrityError, match="shape"):
        check_parity(out, _seeded(TwoHeads).a, sample, atol=1e-4)


def test_hard_coded_batch_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(IntegrityError, match="ONNX Runtime cannot run|differs"):
        export_onnx(
            _seeded(FixedBatch), out, sample={"x": RNG.standard_normal((2, 30)).astype(np.float32)}
        )
    assert list(tmp_path.iterdir()) == []


def test_static_batch_on_request(tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    export_onnx(
        _seeded(FixedBatch), out, sample={"x": np.ones((2, 30), np.float32)}, dynamic_batch=False
    )
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_bad_requests(tmp_path: Path) -> None:
    net = _seeded(MLP)
    x = np.ones((2, 30), np.float32)
    with pytest.raises(BadInputError, match="opset 11 is too old"):
        export_onnx(net, tmp_path / "a.onnx", sample={"x": x}, opset=11)
    with pytest.raises(BadInputError, match=r"forward takes \['input_ids', 'attention_mask'\]"):
        export_onnx(_seeded(TextNet), tmp_path / "b.onnx", sample={"x": x})
    with pytest.raises(BadInputError, match="fails on the sample"):
        export_onnx(net, tmp_path / "c.onnx", sample={"x": np.ones((2, 7), np.float32)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two dynamo exports
def test_exported_program_with_fixed_batch(tmp_path: Path) -> None:
    src = tmp_path / "static.pt2"
    torch.export.save(
        torch.export.export(_seeded(ConvNet), (torch.from_numpy(_images(2)),)), str(src)
    )
    loaded = load_model(src)
    with pytest.raises(
        BadInputError, match=r"fixed batch size \(x: 2\); re-export it with dynamic_shapes"
    ):
        export_onnx(loaded, tmp_path / "dyn.onnx", sample={"x": _images(2)})
    out = tmp_path / "static.onnx"
    result = export_onnx(loaded, out, sample={"x": _images(2)}, dynamic_batch=False)
    assert result.exporter == "dynamo" and result.max_abs_err < 1e-4
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static.onnx", "static.pt2"]


def test_onnx_input_already_normal_is_kept(tmp_path: Path) -> None:
    first = tmp_path / "a.onnx"
    export_onnx(_seeded(TextNet), first, sample=_text(2))
    loaded = load_model(first)
    second = tmp_path / "b.onnx"
    result = export_onnx(loaded, second, sample=_text(3))
    assert (result.exporter, result.opset, result.max_abs_err) == ("onnx", 17, 0.0)
    assert result.input_names == ["input_ids", "attention_mask"]
    assert model_params(second) == model_params(first) == 100 * 8 + 8 * 3 + 3
