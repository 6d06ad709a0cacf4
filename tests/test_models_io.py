"""Model loading in every input format, its refusals, and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MLP, TextNet
from torch import nn

from edgekit.errors import BadInputError
from edgekit.io.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, sha256_file
from edgekit.io.models import InputSpec, LoadedModel, load_model, parse_input_shapes

torch.set_num_threads(1)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def build_mlp() -> MLP:
    return MLP()


def _write_marker_and_build(marker: str, state: dict[str, torch.Tensor]) -> MarkerNet:
    Path(marker).write_text("unpickling ran code from the file")
    net = MarkerNet(marker)
    net.load_state_dict(state)
    return net


class MarkerNet(MLP):
    """Unpickling it calls a function that writes a marker file: stands for any code in a pickle."""

    def __init__(self, marker: str = "") -> None:
        super().__init__()
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (_write_marker_and_build, (self.marker, self.state_dict()))


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


def _same(loaded: LoadedModel, reference: nn.Module, *args: torch.Tensor) -> None:
    assert loaded.module is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(*args), reference(*args))


X = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# -- TorchScript ------------------------------------------------------------------------------


def test_torchscript_without_meta_loads_scripted_module(tmp_path: Path) -> None:
    net = _seeded(ConvNet)
    path = tmp_path / "net.pt"
    torch.jit.save(_script(net), str(path))
    loaded = load_model(path)
    assert loaded.format == "torchscript"
    assert isinstance(loaded.module, torch.jit.ScriptModule) and not loaded.eager
    assert loaded.inputs == [] and loaded.meta == {} and loaded.is_torch
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    _same(loaded, net, X)


def test_torchscript_input_shape_takes_forward_argument_name(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.jit.save(_script(_seeded(ConvNet)), str(path))
    loaded = load_model(path, input_shape="1x28x28")
    assert loaded.inputs == [InputSpec("x", (1, 28, 28), "float32")]


def test_torchscript_with_meta_factory_rebuilds_eager_module(tmp_path: Path) -> None:
    net = _seeded(ConvNet)
    meta = {
        "zoo": "test-cnn",
        "task": "classification",
        "input_name": "input",
        "input_shape": [1, 28, 28],
        "input_dtype": "float32",
        "factory": f"{__name__}:ConvNet",
    }
    path = tmp_path / "ref.pt"
    torch.jit.save(_script(net), str(path), _extra_files={"edgekit.json": json.dumps(meta)})
    with pytest.raises(BadInputError, match="--arch"):  # a file may name only edgekit's own factories
        load_model(path)
    loaded = load_model(path, arch=meta["factory"])
    assert loaded.eager and isinstance(loaded.module, ConvNet) and not loaded.module.training
    assert loaded.meta == meta
    assert loaded.inputs == [InputSpec("input", (1, 28, 28), "float32")]
    _same(loaded, net, X)


def test_torchscript_with_unknown_factory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ref.pt"
    meta = {"factory": "no_such_module_here:build", "input_shape": [30]}
    torch.jit.save(
        _script(_seeded(MLP)), str(path), _extra_files={"edgekit.json": json.dumps(meta)}
    )
    with pytest.raises(BadInputError, match="not one edgekit ships"):
        load_model(path)


def test_torchscript_with_arch_rebuilds_eager_module(tmp_path: Path) -> None:
    net = _seeded(MLP)
    path = tmp_path / "mlp.pt"
    torch.jit.save(_script(net), str(path))
    loaded = load_model(path, arch=f"{__name__}:build_mlp")
    assert loaded.eager and isinstance(loaded.module, MLP)
    x = torch.randn(4, 30)
    _same(loaded, net, x)
    with pytest.raises(BadInputError, match="do not fit"):
        load_model(path, arch=f"{__name__}:ConvNet")


def test_multi_input_meta_inputs_keep_int64(tmp_path: Path) -> None:
    net = _seeded(TextNet)
    meta = {
        "inputs": [
            {"name": "input_ids", "shape": [16], "dtype": "int64"},
            {"name": "attention_mask", "shape": [16], "dtype": "float32"},
        ]
    }
    path = tmp_path / "text.pt"
    torch.jit.save(_script(net), str(path), _extra_files={"edgekit.json": json.dumps(meta)})
    loaded = load_model(path)
    assert [(s.name, s.dtype) for s in loaded.inputs] == [
        ("input_ids", "int64"),
        ("attention_mask", "float32"),
    ]
    ids, mask = torch.randint(0, 100, (2, 16)), torch.ones(2, 16)
    _same(loaded, net, ids, mask)


# -- torch.export -----------------------------------------------------------------------------


def test_exported_program_inputs_from_signature(tmp_path: Path) -> None:
    net = _seeded(ConvNet)
    program = torch.export.export(net, (X,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert loaded.format == "exported_program" and not loaded.eager
    assert loaded.inputs == [InputSpec("x", (1, 28, 28), "float32")]
    _same(loaded, net, X)
    _same(loaded, net, X[:1])  # the dynamic batch survives the round trip


def test_exported_program_int64_input(tmp_path: Path) -> None:
    net = _seeded(TextNet)
    ids, mask = torch.randint(0, 100, (2, 16)), torch.ones(2, 16)
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (ids, mask), dynamic_shapes=({0: batch}, {0: batch}))
    path = tmp_path / "text.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert loaded.inputs == [
        InputSpec("input_ids", (16,), "int64"),
        InputSpec("attention_mask", (16,), "float32"),
    ]


# -- ONNX -------------------------------------------------------------------------------------


def _onnx_export(
    net: nn.Module, args: tuple[torch.Tensor, ...], path: Path, names: list[str]
) -> None:
    with warnings.catch_warnings():  # the TorchScript-based exporter warns it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            args,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=["output"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "output"]},
        )


def test_onnx_inputs_from_graph(tmp_path: Path) -> None:
    path = tmp_path / "text.onnx"
    _onnx_export(
        _seeded(TextNet),
        (torch.randint(0, 100, (2, 16)), torch.ones(2, 16)),
        path,
        ["input_ids", "attention_mask"],
    )
    loaded = load_model(path)
    assert loaded.format == "onnx" and loaded.module is None and not loaded.is_torch
    assert loaded.onnx_path == path
    assert loaded.inputs == [
        InputSpec("input_ids", (16,), "int64"),
        InputSpec("attention_mask", (16,), "float32"),
    ]


def test_format_detected_by_content_not_extension(tmp_path: Path) -> None:
    onnx_named_pt = tmp_path / "really_onnx.pt"
    _onnx_export(_seeded(MLP), (torch.randn(2, 30),), onnx_named_pt, ["input"])
    assert load_model(onnx_named_pt).format == "onnx"
    script_named_onnx = tmp_path / "really_torchscript.onnx"
    torch.jit.save(_script(_seeded(MLP)), str(script_named_onnx))
    assert load_model(script_named_onnx).format == "torchscript"


# -- torch.save -------------------------------------------------------------------------------


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_state_dict_needs_arch(tmp_path: Path, zipped: bool) -> None:
    net = _seeded(MLP)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(BadInputError, match="is a state_dict; pass --arch module:factory"):
        load_model(path)
    loaded = load_model(path, arch=f"{__name__}:build_mlp", input_shape="30")
    assert loaded.format == "state_dict" and loaded.eager and isinstance(loaded.module, MLP)
    assert loaded.inputs == [InputSpec("x", (30,), "float32")]
    _same(loaded, net, torch.randn(5, 30))


def test_state_dict_with_wrong_arch_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_seeded(MLP).state_dict(), path)
    with pytest.raises(
        BadInputError, match=r"do not fit .*missing conv\.weight.*unexpected net\.0\.weight"
    ):
        load_model(path, arch=f"{__name__}:ConvNet")


def test_state_dict_inside_training_checkpoint(tmp_path: Path) -> None:
    net = _seeded(MLP)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, path)
    loaded = load_model(path, arch=f"{__name__}:build_mlp")
    _same(loaded, net, torch.randn(2, 30))


def test_untrusted_pickle_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    net = MarkerNet(str(marker))
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    assert not marker.exists()
    with pytest.raises(
        BadInputError, match="is a pickled module; loading it runs code.*--trust-pickle"
    ):
        load_model(path)
    with pytest.raises(BadInputError, match="pickled module"):
        load_model(path, arch=f"{__name__}:build_mlp")  # --arch does not open the door either
    assert not marker.exists()

    loaded = load_model(path, trust_pickle=True)
    assert (
        marker.exists()
    )  # proves the file does run code when trusted, so the check above means something
    assert loaded.format == "pickle" and loaded.eager and isinstance(loaded.module, MarkerNet)
    _same(loaded, net, torch.randn(2, 30))


# -- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pt", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.onnx", b""), "is empty"),
        (lambda d: _write(d / "text.pt", b"hello, this is not a model\n" * 20), "not a model file"),
        (
            lambda d: _write(d / "noise.onnx", np.random.default_rng(0).bytes(4096)),
            "not a model file",
        ),
        (lambda d: _zip(d / "other.pt"), "zip archive but not a PyTorch or ONNX model"),
        (lambda d: _write(d / "tensor.pt", _saved_tensor()), "holds a Tensor"),
    ],
    ids=["missing", "directory", "empty", "text", "noise", "zip", "tensor"],
)
def test_bad_files_give_bad_input_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as info:
        load_model(make(tmp_path))
    assert "\n" not in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return path


def _saved_tensor() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(torch.ones(3), buf)
    return buf.getvalue()


def test_parse_input_shapes() -> None:
    assert parse_input_shapes("1x28x28") == [InputSpec("input", (1, 28, 28), "float32")]
    assert parse_input_shapes("1x28x28", known_names=["image"]) == [InputSpec("image", (1, 28, 28))]
    assert parse_input_shapes("input_ids:64:int64,attention_mask:64") == [
        InputSpec("input_ids", (64,), "int64"),
        InputSpec("attention_mask", (64,), "float32"),
    ]
    assert parse_input_shapes("tokens:?:int32") == [InputSpec("tokens", (None,), "int32")]
    for bad in ["", "28 x 28", "a:1x2,1x2", "x:3:notadtype", "x:3,x:4"]:
        with pytest.raises(BadInputError):
            parse_input_shapes(bad)


# -- atomic writes ----------------------------------------------------------------------------


def test_atomic_dir_renames_into_place(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with atomic_dir(target) as work:
        assert work.parent == tmp_path and work != target
        (work / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_dir_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as work:
        (work / "half.onnx").write_bytes(b"x" * 10)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


OLD_REPORT = '{"edgekit_version": "0.1.0"}'  # an earlier output edgekit wrote (a bench report)


def test_atomic_dir_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "report.json").write_text(OLD_REPORT)
    with pytest.raises(BadInputError, match="already exists"), atomic_dir(target):
        pytest.fail("must not get here")
    assert (target / "report.json").read_text() == OLD_REPORT
    (target / "old.txt").write_text("old")  # not edgekit's: refused even with overwrite
    with pytest.raises(BadInputError, match="did not write"), atomic_dir(target, overwrite=True):
        pytest.fail("must not get here")
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_dir_overwrite_replaces_and_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "report.json").write_text(OLD_REPORT)
    with pytest.raises(ValueError), atomic_dir(target, overwrite=True) as work:
        (work / "new.txt").write_text("new")
        raise ValueError
    assert [p.name for p in target.iterdir()] == ["report.json"]
    with atomic_dir(target, overwrite=True) as work:
        (work / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask  # not left private like a temp dir


def test_atomic_dir_accepts_existing_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with atomic_dir(target) as work:
        (work / "f").write_text("1")
    assert (target / "f").read_text() == "1"


def test_atomic_write_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, '{"a": 1}')
    atomic_write_bytes(path, b'{"a": 2}')
    assert path.read_bytes() == b'{"a": 2}'
    assert sha256_file(path) == hashlib.sha256(b'{"a": 2}').hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]
