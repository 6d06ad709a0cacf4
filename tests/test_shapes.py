"""Dynamic shapes: ``--shapes`` parsing, min/opt/max from real data, TensorRT profiles in the
bundle, and a runtime that cannot be prepared becoming a "not built" row instead of ending the run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edgekit.errors import BadInputError
from edgekit.export.shapes import describe, from_described, parse_shapes, profile_from_data
from edgekit.io.data import Dataset
from edgekit.runtimes.base import TensorSpec


def invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(args)
        return code, streams[1].getvalue().decode()


# ------------------------------------------------------------------------------------ parsing
def test_parse_shapes_reads_several_inputs() -> None:
    got = parse_shapes(["x:1x3x48x64/1x3x48x320/1x3x48x960", "ids:1x8/4x32/32x128,mask:1x8/4x32/32x128"])
    assert got["x"] == ((1, 3, 48, 64), (1, 3, 48, 320), (1, 3, 48, 960))
    assert got["ids"] == got["mask"] == ((1, 8), (4, 32), (32, 128))
    assert from_described(describe(got)) == got


@pytest.mark.parametrize(
    "spec, words",
    [
        ("1x3/1x3/1x3", "names no input"),
        ("x:1x3/1x3", "three shapes"),
        ("x:1x3/1xa/1x3", "not a shape"),
        ("x:1x0/1x3/1x3", "positive integer"),
        ("x:1x3/1x3x2/1x3", "same rank"),
        ("x:1x9/1x3/1x12", "MIN <= OPT <= MAX"),
        ("x:1x3/1x3/1x3,x:1x4/1x4/1x4", "twice"),
    ],
)
def test_parse_shapes_rejects_bad_values(spec: str, words: str) -> None:
    with pytest.raises(BadInputError, match=words):
        parse_shapes(spec)


@pytest.mark.parametrize("spec", ["x:1x3/1x3", "x:1x9/1x3/1x12", "nonsense"])
def test_bad_shapes_on_the_cli_is_exit_2_with_one_line(tmp_path: Path, spec: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the option is checked first")
    before = model.read_bytes()
    code, err = invoke(["compress", str(model), "--int8", "--shapes", spec, "-o", str(tmp_path / "b")])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--shapes" in err
    assert not (tmp_path / "b").exists() and model.read_bytes() == before


# --------------------------------------------------------------------------- from the data
def test_profile_from_attention_mask_and_length_arrays() -> None:
    lengths = np.array([3, 5, 9, 12, 20])
    mask = (np.arange(20)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, 7, 0)
    text = Dataset({"input_ids": ids, "attention_mask": mask})
    specs = [TensorSpec(n, ("batch", "seq"), "int64") for n in ("input_ids", "attention_mask")]
    prof = profile_from_data(specs, [text], batches=(1, 8))
    assert prof["input_ids"] == ((1, 3), (1, 9), (32, 20)) == prof["attention_mask"]

    x = np.zeros((4, 1, 32, 96), np.float32)
    images = Dataset({"x": x}, lengths={"x": np.array([40, 56, 64, 96])})
    img_spec = [TensorSpec("x", ("batch", 1, 32, "width"), "float32")]
    assert profile_from_data(img_spec, [images])["x"] == ((1, 1, 32, 40), (1, 1, 32, 60), (32, 1, 32, 96))
    # Without a length array, the array's own width is the only extent seen.
    assert profile_from_data(img_spec, [Dataset({"x": x})])["x"] == ((1, 1, 32, 96), (1, 1, 32, 96), (32, 1, 32, 96))


def test_given_shapes_win_and_are_checked_against_the_graph() -> None:
    spec = [TensorSpec("x", ("batch", 1, 32, "width"), "float32")]
    data = [Dataset({"x": np.zeros((2, 1, 32, 64), np.float32)})]
    given = parse_shapes("x:1x1x32x16/2x1x32x128/8x1x32x512")
    assert profile_from_data(spec, data, given=given)["x"] == given["x"]
    with pytest.raises(BadInputError, match="fixed at 32"):
        profile_from_data(spec, data, given=parse_shapes("x:1x1x16x16/1x1x16x16/1x1x16x16"))
    with pytest.raises(BadInputError, match="not model inputs"):
        profile_from_data(spec, data, given=parse_shapes("y:1/1/1"))
    with pytest.raises(BadInputError, match="--shapes"):
        profile_from_data(spec, [])


# ------------------------------------------------- a user model with a dynamic sequence axis
class TokenClassifier(torch.nn.Module):
    """A model edgekit has never seen: int64 token ids and an int64 mask, both [batch, seq]."""

    def __init__(self, vocab: int, classes: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 32)
        self.head = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


@pytest.fixture(scope="module")
def token_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """Trained for a few seconds on the standard-library docstrings, exported with dynamic axes;
    the .npz holds right-padded token ids of real, varying lengths."""
    from edgekit.zoo import datasets

    texts, labels = datasets.stdlib_docstrings()
    vocab = datasets.text_vocab(0)
    ids = datasets.encode(texts, vocab)
    mask = (ids != 0).astype(np.int64)
    keep = mask.sum(1) > 0
    ids, mask, y = ids[keep].astype(np.int64), mask[keep], np.asarray(labels, np.int64)[keep]
    torch.manual_seed(0)
    model = TokenClassifier(int(ids.max()) + 1, int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t_ids, t_mask, t_y = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(y)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(t_ids, t_mask), t_y).backward()
        opt.step()
    root = tmp_path_factory.mktemp("token")
    onnx_path = root / "tokens.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model.eval(), t_ids[:2], t_mask[:2], onnx_path)
    data = root / "tokens.npz"
    np.savez(data, input_ids=ids, attention_mask=mask, y=y)
    return onnx_path, data, mask.sum(1)


def _export(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, onnx_path: Path) -> None:
    torch.onnx.export(
        model,
        (ids, mask),
        str(onnx_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
        dynamo=False,
    )


@pytest.mark.slow
def test_compress_sizes_tensorrt_profiles_from_the_data(
    token_model: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    onnx_path, data, lengths = token_model
    out = tmp_path / "bundle"
    code, err = invoke(
        ["compress", str(onnx_path), "--int8", "--data", str(data), "-o", str(out), "--no-memory",
         "--time-budget", "0.2", "--threads", "1"]
    )
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    shapes = from_described(manifest["model"]["shapes"])
    lo, opt, hi = shapes["input_ids"]
    # The profile spans real lengths (min..max of the mask), with the median as the optimum;
    # calibration and evaluation are subsets of the data, so their extents lie within it.
    assert lengths.min() <= lo[1] <= opt[1] <= hi[1] <= lengths.max()
    assert lo[1] < hi[1] and (lo[0], hi[0]) == (1, 32)
    assert shapes["attention_mask"] == shapes["input_ids"]
    script = (out / "tensorrt" / "build.sh").read_text()
    assert f"--optShapes=input_ids:{opt[0]}x{opt[1]},attention_mask:{opt[0]}x{opt[1]}" in script
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["shapes"] == manifest["model"]["shapes"]
    assert any(v["runtime"] == "tensorrt" for v in report["variants"])

    from edgekit.bundle.tensorrt import build_plan

    trt = next(v for v in manifest["variants"] if v["runtime"] == "tensorrt")
    override = parse_shapes("input_ids:1x4/2x16/4x64,attention_mask:1x4/2x16/4x64")
    assert build_plan(trt, out, override)["shapes"]["input_ids"] == override["input_ids"]


def _inverse_model(path: Path) -> None:
    """x [batch, 4, 4] → com.microsoft Inverse → flatten → linear: ONNX Runtime runs it,
    OpenVINO has no converter for the contrib op."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 3], rng.normal(size=(16, 3)).astype(np.float32).ravel())
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 16])
    nodes = [
        helper.make_node("Inverse", ["x"], ["inv"], domain="com.microsoft"),
        helper.make_node("Reshape", ["inv", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "inverse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [w, shape],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, str(path))


@pytest.mark.slow
def test_a_runtime_that_cannot_be_prepared_is_a_not_built_row(tmp_path: Path) -> None:
    model = tmp_path / "inverse.onnx"
    _inverse_model(model)
    rng = np.random.default_rng(1)
    x = (np.eye(4, dtype=np.float32) * 2 + rng.normal(scale=0.3, size=(200, 4, 4))).astype(np.float32)
    data = tmp_path / "d.npz"
    np.savez(data, x=x)
    before = model.read_bytes()
    out = tmp_path / "bundle"
    code, err = invoke(
        ["compress", str(model), "--int8", "--data", str(data), "-o", str(out), "--no-memory",
         "--time-budget", "0.2", "--threads", "1"]
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    for name in ("ov-fp32", "ov-int8"):
        assert rows[name]["deployable"] is False
        assert rows[name]["not_measured_reason"].startswith("not built: ")
        assert "com.microsoft.Inverse" in rows[name]["not_measured_reason"]
    assert rows["ort-int8-static"]["measured"] is True
    assert any(v["runtime"] == "tensorrt" for v in report["variants"])
    assert (out / "model.int8-static.onnx").is_file() and not (out / "openvino").exists()
    assert model.read_bytes() == before
    # The runtimes that built are not built again to find the one that failed.
    assert err.count("INT8 static (ONNX Runtime") == 1, err
