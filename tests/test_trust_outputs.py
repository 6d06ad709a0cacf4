"""What edgekit writes can be trusted: report.json and manifest.json validate against the JSON
Schemas the bundle carries and hold no NaN and no temporary path; concurrent runs leave exactly one
complete output; a crafted TorchScript runs nothing; stale temporary folders are swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgekit.bundle import manifest as mf
from edgekit.cli import main

OPTS = ["--time-budget", "0.05", "--no-memory"]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit.cli", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def mlp(trained) -> Path:
    return trained("tabular-mlp")[1]


@pytest.fixture(scope="module")
def bundle(mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "mlp.bundle"
    assert main(["compress", str(mlp), "--int8", "--runtime", "onnxruntime", "-o", str(out), *OPTS]) == 0
    return out


def _strict_json(path: Path) -> object:
    def no_constant(name: str) -> object:
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)


def _validate(bundle: Path, report: Path) -> None:
    for doc, schema in ((bundle / "manifest.json", "manifest"), (report, "report")):
        jsonschema.validate(_strict_json(doc), json.loads((bundle / "schema" / f"{schema}.schema.json").read_text()))


def test_report_and_manifest_validate_against_their_schema(bundle: Path) -> None:
    _validate(bundle, bundle / "report.json")
    listed = {f.path for f in mf.read(bundle).files}
    assert {"schema/manifest.schema.json", "schema/report.schema.json"} <= listed
    broken = _strict_json(bundle / "report.json")
    assert isinstance(broken, dict)
    broken["variants"][0]["latency_ms"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads((bundle / "schema" / "report.schema.json").read_text()))


def test_report_names_no_temporary_path(bundle: Path) -> None:
    text = (bundle / "report.json").read_text()
    assert ".tmp" not in text and f".{bundle.name}." not in text
    rows = json.loads(text)["variants"]
    models = [r["describe"]["model"] for r in rows if r["describe"].get("model")]
    assert models and all(not Path(m).is_absolute() and (bundle / m).is_file() for m in models)


def test_non_finite_figures_are_written_as_null(tmp_path: Path) -> None:
    from edgekit.benchmarks.report import Report, VariantRow

    row = VariantRow(name="v", runtime="onnxruntime", precision="int8", techniques=[], artifact=None, size_bytes=1)
    row.metric_drop = float("nan")
    row.fidelity = {"sqnr_db": float("inf"), "cosine": 0.5}
    report = Report(command="x", model={}, machine={}, baseline=row)
    data = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert data["baseline"]["metric_drop"] is None and data["baseline"]["fidelity"] == {"sqnr_db": None, "cosine": 0.5}


def test_crafted_torchscript_runs_nothing(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    meta = {"factory": "os:system", "factory_kwargs": {"command": "touch MARKER"}, "input_shape": [30]}
    torch.jit.save(torch.jit.load(str(mlp)), "x.pt", _extra_files={"edgekit.json": json.dumps(meta)})
    assert main(["compress", "x.pt", "--int8", "--calib", "random", *OPTS]) == 2
    assert main(["export", "x.pt", "-o", "x.onnx"]) == 2
    assert main(["doctor", "x.pt"]) == 2
    assert not (tmp_path / "MARKER").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_unlisted_file_in_a_bundle_is_reported(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "stray.onnx").write_bytes(b"not listed")
    manifest = mf.read(copy)
    assert manifest.extra_files == ["stray.onnx"]
    assert main(["bench", str(copy), "--runtime", "ort", *OPTS]) == 0
    warnings = json.loads((copy / "bench" / "report.json").read_text())["warnings"]
    assert any("stray.onnx" in w for w in warnings)
    _validate(copy, copy / "bench" / "report.json")


def test_train_keeps_the_usual_file_mode_and_refuses_to_replace(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", "tabular-mlp", "-o", str(out), "--epochs", "1"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    before = out.read_bytes()
    assert main(["train", "tabular-mlp", "-o", str(out), "--epochs", "1", "--seed", "3"]) == 2
    assert out.read_bytes() == before
    assert main(["train", "tabular-mlp", "-o", str(out), "--epochs", "1", "--seed", "3", "--overwrite"]) == 0
    assert out.read_bytes() != before


def test_labels_near_chance_are_warned_about(mlp: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 30)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 2, 120))  # labels unrelated to the inputs
    out = tmp_path / "b"
    assert main(
        [
            "compress",
            str(mlp),
            "--int8",
            "--runtime",
            "onnxruntime",
            "--data",
            str(tmp_path / "d.npz"),
            "-o",
            str(out),
            *OPTS,
        ]
    ) in (0, 3)
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("near chance" in w for w in warnings), warnings


def test_stale_temporary_folders_are_swept(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    old = time.time() - 2 * 3600
    stale = [system_tmp / "edgekit-mem-dead", system_tmp / "edgekit-run-dead", tmp_path / ".b.abcd1234.tmp"]
    fresh = [system_tmp / "edgekit-mem-live", tmp_path / ".b.efgh5678.tmp"]
    for p in stale + fresh:
        p.mkdir()
        (p / "half.onnx").write_bytes(b"x")
    for p in stale:
        os.utime(p, (old, old))
    (system_tmp / "not-ours").mkdir()
    os.utime(system_tmp / "not-ours", (old, old))
    assert main(["compress", str(mlp), "--int8", "--runtime", "onnxruntime", "-o", str(tmp_path / "b"), *OPTS]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in fresh) and (system_tmp / "not-ours").exists()


def test_help_states_the_pickle_rule() -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    text = CliRunner().invoke(cli, ["--help"]).output
    assert "--trust-pickle" in text and "130/143" in text


# ------------------------------------------------------------------------------------ stress
def test_twenty_concurrent_bench_runs_on_one_bundle(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    args = ["bench", str(copy), "--runtime", "ort", "--time-budget", "0.02", "--no-memory", "--json"]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _i: edgekit(*args, cwd=tmp_path), range(20)))
    for r in results:
        assert r.returncode == 0, r.stderr
    reports = [json.loads(r.stdout) for r in results]
    for rep in reports:  # consistent: same variants, same held-out data, same accuracy
        assert [v["name"] for v in rep["variants"]] == [v["name"] for v in reports[0]["variants"]]
        assert rep["data"]["eval_sha256"] == reports[0]["data"]["eval_sha256"]
        assert rep["baseline"]["metric"] == reports[0]["baseline"]["metric"]
        assert [v["metric"] for v in rep["variants"]] == [v["metric"] for v in reports[0]["variants"]]
    mf.read(copy)  # the bundle still verifies
    assert sorted(p.name for p in (copy / "bench").iterdir()) == ["latency.png", "report.json", "report.md"]
    _validate(copy, copy / "bench" / "report.json")
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


def test_concurrent_compress_runs(mlp: Path, tmp_path: Path) -> None:
    base = ["compress", str(mlp), "--int8", "--runtime", "onnxruntime", "--time-budget", "0.02", "--no-memory"]
    jobs = [[*base, "-o", f"b{i}"] for i in range(5)] + [[*base, "-o", "same"], [*base, "-o", "same"]]
    with ThreadPoolExecutor(max_workers=7) as pool:
        results = list(pool.map(lambda a: edgekit(*a, cwd=tmp_path), jobs))
    for r in results[:5]:
        assert r.returncode == 0, r.stderr
    hashes = []
    for i in range(5):
        manifest = mf.read(tmp_path / f"b{i}")  # re-verifies every hash
        _validate(tmp_path / f"b{i}", tmp_path / f"b{i}" / "report.json")
        hashes.append({f.path: f.sha256 for f in manifest.files if f.path.endswith((".onnx", ".npz"))})
    assert all(h == hashes[0] for h in hashes), "same model, seed and data must give the same artifacts"
    # Two runs into one folder: exactly one wins; the other says so in one line and writes nothing.
    codes = sorted(r.returncode for r in results[5:])
    assert codes == [0, 2], [r.stderr for r in results[5:]]
    loser = next(r for r in results[5:] if r.returncode == 2)
    assert loser.stderr.strip().splitlines()[-1].startswith("edgekit: error:")
    mf.read(tmp_path / "same")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert not leftovers


@pytest.mark.parametrize(
    "code, reason",
    [(13, "permission denied"), (30, "read-only file system"), (28, "no space left"), (122, "disk quota exceeded")],
)
def test_write_failures_name_the_folder_and_the_reason(
    code: int, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EACCES and EDQUOT cannot be caused as root on this machine (root ignores modes, no quotas):
    the failing write is simulated at os.replace, the last step of every atomic file write."""
    from edgekit.config import Recipe, build_step, save_recipe

    def refuse(*_a: object, **_k: object) -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / ".r.toml.x.tmp"))

    monkeypatch.setattr(os, "replace", refuse)
    recipe = Recipe(steps=[build_step("int8", {})])
    with pytest.raises(OSError) as info:
        save_recipe(recipe, tmp_path / "r.toml")
    from edgekit.io.outputs import write_error

    mapped = write_error(info.value)
    assert mapped is not None and str(mapped).startswith(f"cannot write to {tmp_path}: {reason}")
    assert not list(tmp_path.iterdir())


def test_errors_name_the_users_path_not_the_temporary_one(tmp_path: Path) -> None:
    from edgekit.errors import IntegrityError
    from edgekit.io.atomic import atomic_dir

    target = tmp_path / "out.bundle"
    with pytest.raises(IntegrityError) as info, atomic_dir(target) as work:
        raise IntegrityError(f"{work / 'model.onnx'} failed its parity check")
    assert str(info.value) == f"{target / 'model.onnx'} failed its parity check"
    assert not list(tmp_path.iterdir())
