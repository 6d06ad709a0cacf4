"""Pruning through the CLI with its default settings: what issue-level targets a user gets
without tuning (accuracy on the held-out split, parameters, gzip size, sparsity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def compress(model: Path, out: Path, *flags: str) -> dict:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(
            [
                "compress",
                str(model),
                *flags,
                "-o",
                str(out),
                "--runtime",
                "onnxruntime",
                "--time-budget",
                "0.05",
                "--no-memory",
            ]
        )
        assert code == 0, streams[1].getvalue().decode()
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("name", ["tabular-mlp", "digits-cnn"])
def test_unstructured_90_defaults(trained, tmp_path: Path, name: str) -> None:
    _, model = trained(name)
    r = compress(model, tmp_path / "b", "--prune", "unstructured:0.9")
    facts = r["techniques"]["prune"]
    pruned = next(v for v in r["variants"] if v["name"] == "ort-fp32-prune")
    assert facts["sparsity"] >= 0.89 and pruned["sparsity"] >= 0.85  # ONNX initializers, biases included
    assert pruned["metric_drop"] <= 1.0
    assert facts["gzip_ratio"] <= 0.3
    assert any("skips zero weights" in n for n in pruned["notes"])  # says it buys no speed


def test_structured_50_defaults_shrink_the_exported_graph(trained, tmp_path: Path) -> None:
    _, model = trained("digits-cnn")
    r = compress(model, tmp_path / "b", "--prune", "structured:0.5", "--int8")
    pruned = next(v for v in r["variants"] if v["name"] == "ort-fp32-prune")
    assert pruned["params"] <= 0.35 * r["baseline"]["params"]  # counted in the exported ONNX
    assert pruned["metric_drop"] <= 1.0
    assert pruned["size_bytes"] < 0.4 * r["baseline"]["size_bytes"]
    int8 = next(v for v in r["variants"] if v["name"] == "ort-int8-static")
    assert int8["techniques"] == ["prune:structured:0.5", "quantize:int8-static"]
