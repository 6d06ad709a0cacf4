"""A user's own model (not a reference model) through ``compress``: TorchScript and ONNX inputs
with an .npz of real samples, and a model with no data at all."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

pytestmark = pytest.mark.slow


def invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        err = streams[1]
        code = main(args)
        return code, err.getvalue().decode()


class WineNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(13, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A wine classifier trained here, saved as TorchScript and as ONNX, with its data as .npz."""
    d = tmp_path_factory.mktemp("user")
    x, y = load_wine(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    torch.manual_seed(0)
    net = WineNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    ts = d / "wine.pt"
    torch.jit.save(torch.jit.trace(net, xt[:2]), str(ts))
    onnx_path = d / "wine.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (xt[:2],),
            str(onnx_path),
            input_names=["features"],
            output_names=["logits"],
            dynamic_axes={"features": {0: "n"}, "logits": {0: "n"}},
            dynamo=False,
            opset_version=17,
        )
    npz = d / "wine.npz"
    np.savez(npz, x=x, y=y.astype(np.int64))
    return ts, onnx_path, npz


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_compress_user_model_with_npz(user_model, kind: str, tmp_path: Path) -> None:
    ts, onnx_path, npz = user_model
    model = ts if kind == "torchscript" else onnx_path
    out = tmp_path / "b"
    code, err = invoke(
        ["compress", str(model), "--int8", "--data", str(npz), "-o", str(out), "--time-budget", "0.1", "--no-memory"]
    )
    assert code == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["model"]["task"] == "classification"
    assert r["baseline"]["metric"]["value"] > 85.0  # real held-out accuracy of the user's model
    by_name = {v["name"]: v for v in r["variants"]}
    assert {"ort-int8-static", "ov-int8", "ov-fp32"} <= set(by_name)
    for name in ("ort-int8-static", "ov-int8"):
        assert by_name[name]["fidelity"]["cosine"] > 0.95
        assert isinstance(by_name[name]["deployable"], bool)
    if kind == "onnx":
        assert r["model"]["inputs"] == [{"name": "features"}]


def test_user_model_without_data_is_refused(user_model, tmp_path: Path) -> None:
    ts, _, _ = user_model
    code, err = invoke(["compress", str(ts), "--int8", "-o", str(tmp_path / "b")])
    assert code == 2 and "--data" in err and "--calib random" in err
    assert not (tmp_path / "b").exists()


def test_random_calibration_is_marked_directional(user_model, tmp_path: Path) -> None:
    _, onnx_path, _ = user_model
    out = tmp_path / "b"
    code, err = invoke(
        [
            "compress",
            str(onnx_path),
            "--int8",
            "--calib",
            "random",
            "--runtime",
            "onnxruntime",
            "-o",
            str(out),
            "--time-budget",
            "0.1",
            "--no-memory",
        ]
    )
    assert code == 0, err
    r = json.loads((out / "report.json").read_text())
    assert any("directional" in w for w in r["warnings"])
    assert json.loads((out / "manifest.json").read_text())["calibration"]["directional_only"] is True
    assert r["baseline"]["metric"] is None  # no labels: fidelity decides
    assert r["variants"][0]["fidelity"]["cosine"] is not None
