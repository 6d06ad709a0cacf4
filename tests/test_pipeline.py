"""The compress pipeline's structure: graph steps chain, a partly built step keeps what it made,
the gate gives the run's verdict, calibration is capped only by the configuration and the bundle
keeps the very samples compress calibrated on."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.artifact import Artifact, PartialBuild
from edgekit.benchmarks.gate import Budget, budget_verdict
from edgekit.benchmarks.report import VariantRow
from edgekit.compress.base import register
from edgekit.pipeline.steps import run_graph_steps

CALLS: list[tuple[str, str]] = []


@dataclass(frozen=True)
class _Rewrite:
    """A graph-level transform: writes an fp32 ONNX the next step should take."""

    runtimes: tuple[str, ...] = ("onnxruntime",)

    def label(self) -> str:
        return "rewrite"


@dataclass(frozen=True)
class _Lower:
    """A terminal step: one artifact per runtime; ``openvino`` fails."""

    runtimes: tuple[str, ...] = ("onnxruntime", "openvino")

    def label(self) -> str:
        return "lower"


@register(_Rewrite, "graph")
def _rewrite(config: _Rewrite, onnx_path: Path, ctx: object) -> list[Artifact]:
    CALLS.append(("rewrite", onnx_path.name))
    out = onnx_path.with_name("model.rewritten.onnx")
    shutil.copy(onnx_path, out)
    return [Artifact("ort-rewritten", "onnxruntime", "fp32", out, techniques=["rewrite"])]


@register(_Lower, "graph")
def _lower(config: _Lower, onnx_path: Path, ctx: object) -> list[Artifact]:
    CALLS.append(("lower", onnx_path.name))
    made = [Artifact("ort-lowered", "onnxruntime", "int8", onnx_path, techniques=["lower"])]
    if "openvino" in config.runtimes:
        raise PartialBuild(made, {"openvino": RuntimeError("unsupported op Foo")})
    return made


def _ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(progress=lambda _m: None, workdir=tmp_path, records={})


def test_graph_steps_chain_and_a_partial_step_is_not_redone(tmp_path: Path) -> None:
    CALLS.clear()
    src = tmp_path / "model.fp32.onnx"
    src.write_bytes(b"onnx")
    start = Artifact("ort-fp32", "onnxruntime", "fp32", src)
    made, not_built = run_graph_steps([_Rewrite(), _Lower()], start, _ctx(tmp_path))
    # the second step ran once, on the first step's artifact, and kept what it built
    assert CALLS == [("rewrite", "model.fp32.onnx"), ("lower", "model.rewritten.onnx")]
    assert [a.name for a in made] == ["ort-rewritten", "ort-lowered"]
    assert made[1].techniques == ["rewrite", "lower"]
    assert [(r.name, r.runtime) for r in not_built] == [("ov-lower", "openvino")]
    assert not_built[0].measured is False and "unsupported op Foo" in (not_built[0].not_measured_reason or "")


def _row(name: str, precision: str, deployable: bool, drop: float | None) -> VariantRow:
    return VariantRow(
        name=name,
        runtime="onnxruntime",
        precision=precision,
        techniques=[],
        artifact=None,
        size_bytes=None,
        deployable=deployable,
        rejected_reason=None if deployable else f"accuracy drops {drop} > budget 0.5",
        metric_drop=drop,
        fidelity={"top1_agreement": 0.9},
    )


def test_the_gate_gives_the_runs_budget_verdict() -> None:
    rows = [_row("ov-fp32", "fp32", True, 0.0), _row("ort-int8", "int8", False, 2.0)]
    rows.append(_row("ov-int8", "int8", False, 1.0))
    assert budget_verdict(Budget(), rows, "r.json") is None  # no budget given: no verdict
    verdict = budget_verdict(Budget(max_drop=0.5), rows, "r.json")
    assert verdict is not None and verdict.startswith("no compressed variant met the budget (best was ov-int8")
    rows[1].deployable = True
    assert budget_verdict(Budget(max_drop=0.5), rows, "r.json") is None


def test_calibration_is_capped_by_the_configuration_only(tmp_path: Path) -> None:
    from edgekit.io.splits import resolve_data

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((1000, 4)).astype(np.float32), y=rng.integers(0, 3, 1000))
    loaded = SimpleNamespace(meta={}, inputs=[SimpleNamespace(name="x")], path=tmp_path / "m.onnx")
    assert len(resolve_data(loaded, data, "data", 0).calib) == 300  # the default
    big = resolve_data(loaded, data, "data", 0, calib_size=500)
    assert len(big.calib) == 500 and big.info["calib_n"] == 500


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> Path:
    from edgekit import api
    from edgekit.compress.quantize import Int8Config

    _, model = trained("digits-cnn")
    out = tmp_path_factory.mktemp("pipeline") / "b"
    steps = [Int8Config(runtimes=("onnxruntime",), calib_size=100)]
    api.compress(model, steps=steps, out=out, time_budget_s=0.05, with_memory=False)
    return out


def test_the_bundle_keeps_the_samples_compress_calibrated_on(bundle: Path) -> None:
    from edgekit.benchmarks.doctor import _calibration
    from edgekit.bundle import manifest as mf
    from edgekit.io.data import bundle_samples

    manifest = mf.read(bundle, verify=True)
    cal = manifest.calibration
    kept = bundle_samples(bundle, manifest.model, cal["file"])
    assert len(kept) == cal["n"] == 100  # the step's calib_size, not a fixed cap
    assert kept.sha256() == cal["sha256"]
    report = (bundle / "report.json").read_text()
    assert cal["sha256"] in report
    # doctor ranks layers on those samples, not on the evaluation set
    evaluation = bundle_samples(bundle, manifest.model)
    assert _calibration(bundle, manifest, evaluation).sha256() == cal["sha256"] != evaluation.sha256()
