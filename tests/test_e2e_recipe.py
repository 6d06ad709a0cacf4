"""A recipe prune → distill → quantize from TOML, end to end, and --save-recipe reproducing the
same bundle (identical artifact hashes for the same seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.slow

RECIPE = """\
seed = 0

[[step]]
technique = "prune"
kind = "structured"
amount = 0.3
finetune_epochs = 2

[[step]]
technique = "distill"
width = 0.7
epochs = 3

[[step]]
technique = "int8"
runtimes = ["onnxruntime", "openvino"]
"""
MEASURED = {"report.json", "report.md", "latency.png", "manifest.json"}  # figures of one run, not artifacts


def invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(args)
        return code, streams[1].getvalue().decode()


def artifacts(bundle: Path) -> dict[str, str]:
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    return {f["path"]: f["sha256"] for f in files if f["path"] not in MEASURED}


def test_recipe_runs_and_save_recipe_reproduces_the_bundle(trained, tmp_path: Path) -> None:
    _, model = trained("digits-cnn")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    saved = tmp_path / "saved.toml"
    opts = ["--time-budget", "0.05", "--no-memory"]
    code, err = invoke(
        [
            "compress",
            str(model),
            "--recipe",
            str(recipe),
            "--save-recipe",
            str(saved),
            "-o",
            str(tmp_path / "first"),
            *opts,
        ]
    )
    assert code == 0, err
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    assert {"prune", "distill", "quantize:int8"} <= set(report["techniques"])
    int8 = next(v for v in report["variants"] if v["name"] == "ort-int8-static")
    assert [t.split(":")[0] for t in int8["techniques"]] == ["prune", "distill", "quantize"]
    student = next(v for v in report["variants"] if v["name"].startswith("ort-fp32-prune-distill"))
    assert student["params"] < report["baseline"]["params"]

    steps = tomllib.loads(saved.read_text())["step"]
    assert [s["technique"] for s in steps] == ["prune", "distill", "int8"]
    assert steps[0]["amount"] == 0.3 and steps[1]["epochs"] == 3

    code, err = invoke(["compress", str(model), "--recipe", str(saved), "-o", str(tmp_path / "second"), *opts])
    assert code == 0, err
    first, second = artifacts(tmp_path / "first"), artifacts(tmp_path / "second")
    assert "model.int8-static.onnx" in first and "openvino/model.int8.bin" in first
    assert first == second


def test_cli_flags_save_the_equivalent_recipe(trained, tmp_path: Path) -> None:
    saved = tmp_path / "r.toml"
    flags = ["--prune", "unstructured:0.9", "--int8", "--runtime", "onnxruntime", "--max-drop", "0.5"]
    code, _ = invoke(["compress", str(tmp_path / "missing.pt"), *flags, "--save-recipe", str(saved)])
    assert code == 2 and not saved.exists()  # a failed call leaves nothing behind
    _, model = trained("tabular-mlp")
    code, err = invoke(
        [
            "compress",
            str(model),
            *flags,
            "--save-recipe",
            str(saved),
            "-o",
            str(tmp_path / "b"),
            "--time-budget",
            "0.05",
            "--no-memory",
        ]
    )
    assert code in (0, 3), err
    data = tomllib.loads(saved.read_text())
    assert data["max_drop"] == 0.5
    assert [s["technique"] for s in data["step"]] == ["prune", "int8"]
    assert data["step"][0]["kind"] == "unstructured" and data["step"][0]["amount"] == 0.9
