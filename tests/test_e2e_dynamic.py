"""Models edgekit has never seen, with dynamic shapes, built here: a tiny transformer encoder
(``input_ids`` + ``attention_mask`` → token states) and a conv + CTC line reader of dynamic
width. Both go through ``edgekit compress MODEL.onnx --int8 --data d.npz --runtime
onnxruntime,openvino``; the gate must judge them with the embedding / sequence fidelity, over
real positions only."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow

VOCAB, WIDTH, T_MAX = 50, 32, 24
HEIGHT, W_MAX, CLASSES = 8, 48, 6  # CTC: blank 0, digits 1..5


def invoke(args: list[str]) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(args)
        return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()


class TinyEncoder(nn.Module):
    """One pre-norm attention block with GELU; the padding mask is applied inside attention."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(0.1 * torch.randn(64, WIDTH))
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.ff = nn.Sequential(nn.Linear(WIDTH, 64), nn.GELU(), nn.Linear(64, WIDTH))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids) + self.pos[: input_ids.shape[1]]
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / WIDTH**0.5
        scores = scores + (1.0 - attention_mask[:, None, :].to(scores.dtype)) * -1e4
        h = h + self.proj(torch.softmax(scores, dim=-1) @ v)
        return h + self.ff(self.ln2(h))


class TinyReader(nn.Module):
    """Conv features over a line image (1, H, W) → per-column class scores (B, W // 2, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, (HEIGHT, 1)), nn.ReLU()
        )
        self.head = nn.Conv1d(16, CLASSES, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).squeeze(2)).transpose(1, 2)


def _export(model: nn.Module, args: tuple, names: list[str], axes: dict, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter says it is deprecated
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["out"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    rng = np.random.default_rng(0)
    n = 160
    lengths = rng.integers(4, T_MAX + 1, size=n)
    mask = (np.arange(T_MAX)[None] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, VOCAB, size=(n, T_MAX)), 0).astype(np.int64)
    onnx_path = d / "encoder.onnx"
    axes = {name: {0: "batch", 1: "seq"} for name in ("input_ids", "attention_mask", "out")}
    _export(model, (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), ["input_ids", "attention_mask"], axes,
            onnx_path)
    data = d / "d.npz"
    np.savez(data, input_ids=ids, attention_mask=mask)
    return onnx_path, data


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    model = TinyReader().eval()
    rng = np.random.default_rng(1)
    n = 160
    widths = rng.integers(8, W_MAX + 1, size=n) // 2 * 2
    x = np.zeros((n, 1, HEIGHT, W_MAX), np.float32)
    for i, w in enumerate(widths):
        x[i, 0, :, :w] = rng.random((HEIGHT, w)) > 0.6
    onnx_path = d / "reader.onnx"
    _export(model, (torch.from_numpy(x[:2]),), ["x"], {"x": {0: "batch", 3: "width"}, "out": {0: "batch", 1: "t"}},
            onnx_path)
    data = d / "d.npz"
    np.savez(data, x=x, x_length=widths.astype(np.int64))
    return onnx_path, data


def _compress(model: Path, data: Path, out: Path, *extra: str) -> dict:
    code, stdout, err = invoke(
        ["compress", str(model), "--int8", "--data", str(data), "--runtime", "onnxruntime,openvino",
         "--threads", "1", "--time-budget", "0.05", "--no-memory", "-o", str(out), *extra]
    )
    assert code == 0, err
    assert "RuntimeWarning" not in err and "Warning:" not in err
    return json.loads((out / "report.json").read_text())


def test_padding_is_neither_computed_nor_counted(encoder) -> None:
    """Batches are cropped to their longest real sample: every real token state equals the one
    the model gives for that sample alone, unpadded."""
    from edgekit.benchmarks.harness import run_outputs
    from edgekit.io.data import load_npz
    from edgekit.runtimes import get_runtime

    model, data = encoder
    ds = load_npz(data).head(40)
    rt = get_runtime("onnxruntime", threads=1).load(model)
    seen: list[int] = []
    run = rt.run
    rt.run = lambda feed, **kw: seen.append(feed["input_ids"].shape[1]) or run(feed, **kw)  # type: ignore[method-assign]
    out = run_outputs(rt, ds, batch=8)
    rt.run = run  # type: ignore[method-assign]
    lengths = ds.inputs["attention_mask"].sum(axis=1)
    assert out.valid is not None and (out.valid.sum(axis=1) == lengths).all()
    assert not out.values[~out.valid].any()  # padded positions hold zeros, never a model's padding output
    assert seen == sorted(seen) and max(seen) == lengths.max() and min(seen) < T_MAX
    for i in range(0, 40, 7):
        n = int(lengths[i])
        alone = rt.run({"input_ids": ds.inputs["input_ids"][i : i + 1, :n],
                        "attention_mask": ds.inputs["attention_mask"][i : i + 1, :n]})[0][0]
        np.testing.assert_allclose(out.samples()[i], alone, atol=1e-5)


def test_transformer_token_states_use_embedding_fidelity(encoder, tmp_path) -> None:
    model, data = encoder
    report = _compress(model, data, tmp_path / "b")
    assert report["model"]["output_kind"] == "embedding"
    assert report["budget"]["output_kind"] == "embedding"
    assert {"figure": "cosine", "at_least": 0.995} in report["budget"]["rules"]
    rows = {r["name"]: r for r in [report["baseline"], *report["variants"]]}
    ov = rows["ov-fp32"]
    assert ov["fidelity"]["kind"] == "embedding" and ov["fidelity"]["cosine"] > 0.9999
    assert ov["deployable"], ov["rejected_reason"]
    assert report["recommended"] in rows and rows[report["recommended"]]["deployable"]
    for r in rows.values():
        assert r["fidelity"]["positions"] < 160 * 0.3 * T_MAX + 1  # only real tokens count
        lat = r["latency_ms"]
        assert lat["shape"]["input_ids"][1] < T_MAX and lat["shape"]["input_ids"] == lat["shape"]["attention_mask"]
        assert lat["shape"]["input_ids"][1] == report["data"]["extents"]["median"]
    for r in report["variants"]:
        if not r["deployable"]:
            assert "pooled cosine" in r["rejected_reason"] or "nearest" in r["rejected_reason"]
    assert report["machine"]["threads_used"] == 1 and report["machine"]["physical_cores"] >= 1
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["output_kind"] == "embedding"

    # bench reuses the manifest's kind; --output-kind and --metric override it there too
    code, _, err = invoke(["bench", str(tmp_path / "b"), "--runtime", "ort", "--threads", "1", "--time-budget",
                           "0.05", "--no-memory", "-o", str(tmp_path / "raw"), "--output-kind", "raw"])
    assert code == 0, err
    bench = json.loads((tmp_path / "raw" / "report.json").read_text())
    assert bench["model"]["output_kind"] == "raw" and bench["model"]["output"]["source"] == "--output-kind"
    assert all(r["fidelity"]["kind"] == "raw" for r in bench["variants"])

    code, _, err = invoke(["bench", str(tmp_path / "b"), "--runtime", "ort", "--threads", "1", "--time-budget",
                           "0.05", "--no-memory", "-o", str(tmp_path / "m"),
                           "--metric", "fidelity_metric_example:mean_token_cosine", "--max-drop", "0.5"])
    assert code == 0, err
    custom = json.loads((tmp_path / "m" / "report.json").read_text())
    assert custom["model"]["output_kind"] == "embedding" and custom["model"]["output"]["source"] == "bundle manifest"
    assert custom["budget"]["metric"] == "fidelity_metric_example:mean_token_cosine"
    for r in custom["variants"]:
        value = r["fidelity"]["user_metric"]["value"]
        assert 0 < value <= 100.0 + 1e-6
        assert r["deployable"] == (100.0 - value <= 0.5 + 1e-9) or r["rejected_reason"].startswith("fidelity_metric")


def test_ctc_reader_uses_sequence_fidelity(reader, tmp_path) -> None:
    model, data = reader
    report = _compress(model, data, tmp_path / "b", "--decode", "ctc")
    assert report["model"]["output_kind"] == "sequence" and report["model"]["output"]["decode"] == "ctc"
    rows = {r["name"]: r for r in [report["baseline"], *report["variants"]]}
    ov = rows["ov-fp32"]
    assert "exact_match" in ov["fidelity"] and ov["fidelity"]["exact_match_drop"] <= 1.0
    assert ov["deployable"], ov["rejected_reason"]
    assert report["recommended"] and rows[report["recommended"]]["deployable"]
    base = rows["ort-fp32"]
    assert base["latency_ms"]["shape"]["x"][3] < W_MAX  # timed at the median real width
    with np.load(tmp_path / "b" / "data" / "eval.npz") as ev:
        widths = ev["x_length"]
    assert base["fidelity"]["positions"] == int((widths // 2).sum())  # real columns only
    for r in report["variants"]:
        if not r["deployable"] and r["measured"]:
            assert "exact-match drop" in r["rejected_reason"]


def test_custom_metric_decides_and_bad_values_exit_2(encoder, tmp_path) -> None:
    model, data = encoder
    report = _compress(model, data, tmp_path / "b", "--metric", "fidelity_metric_example:never_passes")
    assert all(not r["deployable"] for r in report["variants"])
    assert all("never_passes says not passed" in r["rejected_reason"] for r in report["variants"])
    assert report["recommended"] == "ort-fp32"
    assert "no compressed variant passed" in report["recommendation_reason"]
    for bad, words in (
        (["--output-kind", "logits"], "--output-kind must be one of"),
        (["--decode", "beam"], "--decode must be one of"),
        (["--metric", "no_such_module_here:fn"], "cannot import module"),
        (["--metric", "nocolon"], "module:attribute"),
    ):
        out = tmp_path / "bad"
        code, _, err = invoke(["compress", str(model), "--int8", "--data", str(data), "-o", str(out), *bad])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], err
        assert not out.exists()


def test_fixed_sequence_axis_is_not_cropped_but_padding_still_does_not_count(encoder, tmp_path) -> None:
    from edgekit.benchmarks.harness import run_outputs
    from edgekit.io.data import load_npz
    from edgekit.runtimes import get_runtime

    model, data = encoder
    ds = load_npz(data).head(24)
    torch.manual_seed(0)
    fixed = tmp_path / "fixed.onnx"  # the same weights, exported with a fixed sequence length
    ids, mask = (torch.from_numpy(ds.inputs[k][:2]) for k in ("input_ids", "attention_mask"))
    _export(TinyEncoder().eval(), (ids, mask), ["input_ids", "attention_mask"],
            {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "out": {0: "batch"}}, fixed)
    dynamic = run_outputs(get_runtime("onnxruntime", threads=1).load(model), ds, batch=8)
    static = run_outputs(get_runtime("onnxruntime", threads=1).load(fixed), ds, batch=8)
    assert static.values.shape[1] == T_MAX and static.valid is not None
    assert (static.valid.sum(axis=1) == ds.inputs["attention_mask"].sum(axis=1)).all()
    for a, b in zip(static.samples(), dynamic.samples(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
