"""A runtime added with one module (tests/fake_runtime.py) and one table line goes through
``edgekit compress --int8``, ``edgekit bench`` and the report like the built-in ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_runtime import NAME, ROW, ReferenceRuntime

from edgekit.runtimes import available, get_runtime, table

FAST = ["--time-budget", "0.05", "--no-memory", "--threads", "1"]


@pytest.fixture
def plugin() -> Iterator[None]:
    table.register(ROW)  # the one table line
    try:
        yield
    finally:
        table.unregister(NAME)


def invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(args)
        return code, streams[1].getvalue().decode()


def test_an_unregistered_runtime_is_unknown() -> None:
    assert NAME not in table.names() and NAME not in available()
    from edgekit.errors import BadInputError

    with pytest.raises(BadInputError, match="unknown runtime 'onnxref'"):
        get_runtime(NAME)


def test_a_registered_runtime_goes_through_compress_bench_and_the_report(plugin, trained, tmp_path: Path) -> None:
    assert available()[NAME] is True and table.canonical("ref") == NAME
    _, model = trained("tabular-mlp")
    bundle = tmp_path / "b"
    before = ReferenceRuntime.calls
    code, err = invoke(["compress", str(model), "--int8", "--runtime", f"onnxruntime,{NAME}", "-o", str(bundle), *FAST])
    assert code == 0, err
    compressed_calls = ReferenceRuntime.calls - before
    assert compressed_calls > 0  # its variant was really run by the reference evaluator

    report = json.loads((bundle / "report.json").read_text())
    rows = {r["name"]: r for r in report["variants"]}
    ref = rows["ref-int8"]
    assert ref["runtime"] == NAME and ref["precision"] == "int8"
    assert ref["artifact"] == f"{ROW.folder}/model.int8.onnx" and (bundle / ref["artifact"]).is_file()
    assert ref["latency_ms"]["p50"] > 0 and ref["measured"]
    # Its file is ort-int8-static's Q/DQ graph run by another engine: the gate sees the same fidelity.
    ort_fid = rows["ort-int8-static"]["fidelity"]
    assert ref["fidelity"]["top1_agreement"] == pytest.approx(ort_fid["top1_agreement"], abs=0.02)
    assert ref["fidelity"]["sqnr_db"] == pytest.approx(ort_fid["sqnr_db"], abs=1.0)
    assert ref["techniques"] == ["quantize:int8-static"] and "run by onnx.reference.ReferenceEvaluator" in ref["notes"]
    assert report["techniques"]["quantize:int8"]["variants"]["ref-int8"]["summary"]["QuantizeLinear"] > 0
    assert "ref-int8" in (bundle / "report.md").read_text()
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = {v["name"]: v for v in manifest["variants"]}
    assert listed["ref-int8"]["runtime"] == NAME and listed["ref-int8"]["artifact"] == ref["artifact"]

    # Same Q/DQ file, same arithmetic: the reference evaluator agrees with ONNX Runtime on it.
    x = np.load(bundle / "data" / "eval.npz")
    feed_name = manifest["model"]["inputs"][0]
    feed = {feed_name: np.asarray(x[feed_name][:16], dtype=np.float32)}
    ours = get_runtime(NAME).load(bundle / ref["artifact"]).run(feed)[0]
    ort = get_runtime("onnxruntime").load(bundle / ref["artifact"]).run(feed)[0]
    np.testing.assert_allclose(ours, ort, atol=0.05)

    before = ReferenceRuntime.calls
    code, err = invoke(["bench", str(bundle), "--runtime", f"ort,{NAME}", *FAST])
    assert code == 0, err
    assert ReferenceRuntime.calls > before
    benched = {r["name"]: r for r in json.loads((bundle / "bench" / "report.json").read_text())["variants"]}
    assert benched["ref-int8"]["runtime"] == NAME and benched["ref-int8"]["latency_ms"]["p50"] > 0
    assert benched["ref-int8"]["fidelity"]["sqnr_db"] == pytest.approx(ref["fidelity"]["sqnr_db"], abs=1e-6)
    assert "ref-int8" in (bundle / "bench" / "report.md").read_text()
