"""Trust: a hostile or careless user. Every bad input, fault and interrupt ends in exit 2 (or
130/143 for a signal) with one line naming the problem, no partial output or temporary folder, and
every input file byte-identical. Real model files, real bundles, real mounts and real signals."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main

OPTS = ["--time-budget", "0.05", "--no-memory"]
MLP_SHAPE = 30


# ---------------------------------------------------------------------------------- fixtures
def run_inproc(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def mlp(trained) -> Path:
    return trained("tabular-mlp")[1]


@pytest.fixture(scope="module")
def bundle(mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "mlp.bundle"
    code = main(["compress", str(mlp), "--int8", "--runtime", "onnxruntime", "-o", str(out), *OPTS])
    assert code == 0
    return out


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts(tmp_path: Path):
    """Mount helpers: a read-only tmpfs, and a tiny tmpfs filled to the last byte. Root ignores
    file modes, so only a real mount makes a folder read-only or full; skipped where not allowed."""
    made: list[Path] = []

    def readonly(path: Path) -> Path:
        if not _mount(path, "ro,size=1m"):
            pytest.skip("mounting a tmpfs is not permitted here (needs root and CAP_SYS_ADMIN)")
        made.append(path)
        return path

    def full(path: Path) -> Path:
        if not _mount(path, "size=64k"):
            pytest.skip("mounting a tmpfs is not permitted here (needs root and CAP_SYS_ADMIN)")
        made.append(path)
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        return path

    yield readonly, full
    for p in made:
        _umount(p)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
    return out


def assert_nothing_changed(before: dict[str, str], work: Path, tmpdir: Path) -> None:
    after = snapshot(work)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"inputs changed or removed: {changed}"
    new = sorted(set(after) - set(before))
    assert not new, f"partial output or temporary files left: {new}"
    # Folders (edgekit's probe, export and quantization scratch) must be gone; a third-party state
    # file such as OpenVINO telemetry's session id ('.ses') is written by every run and is not ours.
    leftovers = sorted(p.name for p in tmpdir.iterdir() if p.is_dir() or p.name.startswith("edgekit-"))
    assert not leftovers, f"temporary folders left in the temp dir: {leftovers}"


def assert_one_line(err: str, pattern: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("edgekit: ")]
    assert len(ours) == 1 and ours[0] == lines[-1], err
    assert re.search(pattern, ours[0]), f"{pattern!r} not in {ours[0]!r}"
    return ours[0]


# ------------------------------------------------------------------------------ the matrix
@dataclass
class Ctx:
    work: Path
    mlp: Path
    bundle: Path
    mounts: tuple[Callable[[Path], Path], Callable[[Path], Path]]

    def model(self) -> str:
        dst = self.work / "m.pt"
        if not dst.exists():
            shutil.copy(self.mlp, dst)
        return "m.pt"

    def bundle_copy(self) -> Path:
        dst = self.work / "b.bundle"
        if not dst.exists():
            shutil.copytree(self.bundle, dst, symlinks=True)
        return dst

    def npz(self, name: str, **arrays: object) -> str:
        with open(self.work / name, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        return name

    def manifest(self) -> tuple[Path, dict]:
        path = self.bundle_copy() / "manifest.json"
        return path, json.loads(path.read_text())


def _x(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, MLP_SHAPE)).astype(np.float32)


def _y(n: int = 40) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2, n)


def _hostile_torchscript(ctx: Ctx, factory: str = "os:system") -> str:
    import torch

    scripted = torch.jit.load(str(ctx.mlp))
    meta = {"factory": factory, "factory_kwargs": {"command": "touch MARKER"}, "input_shape": [MLP_SHAPE]}
    torch.jit.save(scripted, str(ctx.work / "x.pt"), _extra_files={"edgekit.json": json.dumps(meta)})
    return "x.pt"


def _compress_data(ctx: Ctx, **arrays: object) -> list[str]:
    return ["compress", ctx.model(), "--int8", "--runtime", "onnxruntime", "--data", ctx.npz("d.npz", **arrays), *OPTS]


def _recipe(ctx: Ctx, text: str) -> list[str]:
    (ctx.work / "r.toml").write_text(text)
    return ["compress", ctx.model(), "--recipe", "r.toml", *OPTS]


def _edit_manifest(ctx: Ctx, edit: Callable[[dict, Path], object], command: str = "bench") -> list[str]:
    path, data = ctx.manifest()
    result = edit(data, path.parent)
    path.write_text(result if isinstance(result, str) else json.dumps(result if result is not None else data))
    extra = OPTS if command == "bench" else []
    return [command, "b.bundle", *extra]


def _entry(data: dict, rel: str) -> dict:
    return next(f for f in data["files"] if f["path"] == rel)


def _escape_dotdot(data: dict, root: Path) -> None:
    outside = root.parent / "outside.txt"
    outside.write_text("not part of the bundle")
    data["files"].append(
        {
            "path": "../outside.txt",
            "sha256": hashlib.sha256(b"not part of the bundle").hexdigest(),
            "size": outside.stat().st_size,
        }
    )


def _escape_absolute(data: dict, root: Path) -> None:
    target = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path(sys.executable)
    raw = target.read_bytes()
    data["files"].append({"path": str(target), "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)})


def _escape_symlink(data: dict, root: Path) -> None:
    eval_npz = root / "data" / "eval.npz"
    outside = root.parent / "evil.npz"
    shutil.copy(eval_npz, outside)
    eval_npz.unlink()
    eval_npz.symlink_to(outside)


def _unlisted_variant(data: dict, root: Path) -> None:
    data["files"] = [f for f in data["files"] if f["path"] != "model.int8-static.onnx"]


def _mistyped(data: dict, root: Path) -> None:
    data["files"][0]["size"] = "big"


def _missing(data: dict, root: Path) -> None:
    (root / "openvino" / "model.fp32.bin").unlink()


def _altered(data: dict, root: Path) -> None:
    p = root / "model.int8-static.onnx"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 1
    p.write_bytes(bytes(raw))


def _neighbours(ctx: Ctx) -> list[str]:
    (ctx.work / "p").mkdir()
    shutil.copy(ctx.mlp, ctx.work / "p" / "m.pt")
    (ctx.work / "p" / "notes.txt").write_text("mine")
    return ["compress", "p/m.pt", "--int8", "-o", "p", "--overwrite", *OPTS]


def _unrelated_dir(ctx: Ctx) -> list[str]:
    ctx.bundle_copy()
    (ctx.work / "other").mkdir()
    (ctx.work / "other" / "keep.txt").write_text("keep me")
    return ["bench", "b.bundle", "-o", "other", *OPTS]


def _recipe_in_out(ctx: Ctx) -> list[str]:
    (ctx.work / "rdir").mkdir()
    (ctx.work / "rdir" / "r.toml").write_text('seed = 0\n[[step]]\ntechnique = "int8"\n')
    return ["compress", ctx.model(), "--recipe", "rdir/r.toml", "-o", "rdir", "--overwrite", *OPTS]


def _existing_file_train(ctx: Ctx) -> list[str]:
    return ["train", "tabular-mlp", "-o", ctx.model()]


def _readonly(ctx: Ctx, argv: Callable[[Ctx, str], list[str]]) -> list[str]:
    ctx.mounts[0](ctx.work / "ro")
    return argv(ctx, "ro")


def _full(ctx: Ctx, argv: Callable[[Ctx, str], list[str]]) -> list[str]:
    ctx.mounts[1](ctx.work / "full")
    return argv(ctx, "full")


def _compress_to(ctx: Ctx, d: str) -> list[str]:
    return ["compress", ctx.model(), "--int8", "--runtime", "onnxruntime", "-o", f"{d}/b", *OPTS]


def _export_to(ctx: Ctx, d: str) -> list[str]:
    return ["export", ctx.model(), "-o", f"{d}/m.onnx"]


def _train_to(ctx: Ctx, d: str) -> list[str]:
    return ["train", "tabular-mlp", "-o", f"{d}/m.pt", "--epochs", "1"]


def _bench_to(ctx: Ctx, d: str) -> list[str]:
    ctx.bundle_copy()
    return ["bench", "b.bundle", "-o", f"{d}/bench", *OPTS]


@dataclass(frozen=True)
class Row:
    id: str
    setup: Callable[[Ctx], list[str]]
    message: str
    code: int = 2


NOT_A_MODEL = r"not a model file|cannot load|damaged|empty|cannot read"
ROWS = [
    # -- corrupt, truncated and hostile model files
    Row(
        "model-random-bytes",
        lambda c: (
            c.work.joinpath("z.pt").write_bytes(os.urandom(4096)),
            ["compress", "z.pt", "--int8", "--calib", "random"],
        )[1],
        NOT_A_MODEL,
    ),
    Row(
        "model-truncated-torchscript",
        lambda c: (c.work.joinpath("t.pt").write_bytes(c.mlp.read_bytes()[:5000]), ["compress", "t.pt", "--int8"])[1],
        NOT_A_MODEL,
    ),
    Row(
        "model-truncated-onnx",
        lambda c: (
            c.work.joinpath("t.onnx").write_bytes((c.bundle / "model.fp32.onnx").read_bytes()[:300]),
            ["compress", "t.onnx", "--int8", "--calib", "random"],
        )[1],
        r"not a model file|not a valid ONNX",
    ),
    Row(
        "model-empty",
        lambda c: (c.work.joinpath("e.pt").write_bytes(b""), ["export", "e.pt", "-o", "e.onnx"])[1],
        "is empty",
    ),
    Row(
        "model-pickle-without-trust",
        lambda c: (
            __import__("torch").save(__import__("torch").nn.Linear(2, 2), str(c.work / "p.pt")),
            ["export", "p.pt", "-o", "p.onnx"],
        )[1],
        "--trust-pickle",
    ),
    Row(
        "model-is-directory",
        lambda c: (c.work.joinpath("d.pt").mkdir(), ["compress", "d.pt", "--int8"])[1],
        "is a directory",
    ),
    # -- hostile TorchScript metadata (the marker file it would create is caught as new output)
    Row(
        "hostile-meta-compress",
        lambda c: ["compress", _hostile_torchscript(c), "--int8", "--calib", "random"],
        "not one edgekit ships.*--arch",
    ),
    Row(
        "hostile-meta-export",
        lambda c: ["export", _hostile_torchscript(c), "-o", "x.onnx"],
        "not one edgekit ships.*--arch",
    ),
    Row("hostile-meta-doctor", lambda c: ["doctor", _hostile_torchscript(c)], "not a bundle directory"),
    Row(
        "hostile-meta-builtin-eval",
        lambda c: ["export", _hostile_torchscript(c, "builtins:eval"), "-o", "x.onnx"],
        "not one edgekit ships",
    ),
    Row(
        "hostile-meta-shipped-factory-with-kwargs",
        lambda c: ["export", _hostile_torchscript(c, "edgekit.zoo.models:tabular_mlp"), "-o", "x.onnx"],
        "not one edgekit ships",
    ),
    # -- data and labels
    Row(
        "data-string-array",
        lambda c: _compress_data(c, x=np.array([["a"] * MLP_SHAPE] * 40), y=_y()),
        r"array 'x' holds <U1",
    ),
    Row(
        "data-object-array",
        lambda c: _compress_data(c, x=np.array([{"a": 1}] * 40, dtype=object)),
        r"not a readable \.npz",
    ),
    Row(
        "data-nan-input",
        lambda c: _compress_data(
            c, x=np.where(np.arange(40 * MLP_SHAPE).reshape(40, -1) == 7, np.nan, _x()).astype(np.float32), y=_y()
        ),
        r"array 'x' has 1 NaN or infinite",
    ),
    Row(
        "data-inf-input",
        lambda c: _compress_data(c, x=np.full((40, MLP_SHAPE), np.inf, np.float32), y=_y()),
        r"array 'x' has \d+ NaN or infinite",
    ),
    Row("data-2d-labels", lambda c: _compress_data(c, x=_x(), y=np.zeros((40, 3), np.int64)), r"array 'y' has shape"),
    Row("data-nan-labels", lambda c: _compress_data(c, x=_x(), y=np.full(40, np.nan)), r"array 'y' has 40 NaN"),
    Row("data-labels-outside-classes", lambda c: _compress_data(c, x=_x(), y=np.full(40, 7)), r"outside 0\.\.1"),
    Row("data-negative-labels", lambda c: _compress_data(c, x=_x(), y=-np.ones(40, np.int64)), r"outside 0\.\.1"),
    Row("data-fractional-labels", lambda c: _compress_data(c, x=_x(), y=np.full(40, 0.5)), "whole class numbers"),
    Row(
        "data-not-npz",
        lambda c: (c.work.joinpath("d.txt").write_text("1,2,3"), ["compress", c.model(), "--int8", "--data", "d.txt"])[
            1
        ],
        r"not a readable \.npz",
    ),
    Row("data-label-count", lambda c: _compress_data(c, x=_x(), y=_y(30)), "30 labels for 40 samples"),
    Row("data-wrong-width", lambda c: _compress_data(c, x=_x()[:, :29].copy(), y=_y()), "fails on the sample input"),
    # -- options: non-finite, out of range, usage errors (one line, not click's usage block)
    Row(
        "opt-max-drop-nan-bench",
        lambda c: (c.bundle_copy(), ["bench", "b.bundle", "--max-drop", "nan"])[1],
        "--max-drop.*not a finite number",
    ),
    Row(
        "opt-max-drop-inf-compress",
        lambda c: ["compress", c.model(), "--int8", "--max-drop", "inf"],
        "--max-drop.*not a finite",
    ),
    Row("opt-max-drop-negative", lambda c: ["compress", c.model(), "--int8", "--max-drop", "-1"], "outside 0"),
    Row("opt-atol-nan", lambda c: ["export", c.model(), "-o", "m.onnx", "--atol", "nan"], "--atol.*not a finite"),
    Row("opt-atol-zero", lambda c: ["export", c.model(), "-o", "m.onnx", "--atol", "0"], "greater than 0"),
    Row(
        "opt-time-budget-nan",
        lambda c: (c.bundle_copy(), ["bench", "b.bundle", "--time-budget", "nan"])[1],
        "--time-budget.*not a finite",
    ),
    Row(
        "opt-time-budget-inf",
        lambda c: ["compress", c.model(), "--int8", "--time-budget", "inf"],
        "--time-budget.*not a finite",
    ),
    Row("opt-min-top1-above-one", lambda c: ["compress", c.model(), "--int8", "--min-top1", "1.5"], "outside 0..1"),
    Row("opt-min-cosine-nan", lambda c: ["compress", c.model(), "--int8", "--min-cosine", "nan"], "not a finite"),
    Row("opt-min-sqnr-inf", lambda c: ["compress", c.model(), "--int8", "--min-sqnr", "-inf"], "not a finite"),
    Row("opt-batch-zero", lambda c: ["compress", c.model(), "--int8", "--batch", "0", *OPTS], "positive whole"),
    Row("opt-threads-zero", lambda c: ["compress", c.model(), "--int8", "--threads", "0"], "--threads"),
    Row("opt-unknown", lambda c: ["compress", c.model(), "--int9"], "No such option"),
    Row("opt-missing-argument", lambda c: ["bench"], "Missing argument"),
    Row("opt-prune-nan", lambda c: ["compress", c.model(), "--prune", "structured:nan"], "finite"),
    # -- recipes
    Row(
        "recipe-seed-string",
        lambda c: _recipe(c, 'seed = "zero"\n[[step]]\ntechnique = "int8"\n'),
        r"seed = 'zero'.*valid integer",
    ),
    Row("recipe-step-number", lambda c: _recipe(c, "seed = 0\nstep = 5\n"), r"step = 5.*\[\[step\]\] tables"),
    Row(
        "recipe-option-mistyped",
        lambda c: _recipe(c, '[[step]]\ntechnique = "prune"\nkind = "structured"\namount = "half"\n'),
        "option amount = 'half'",
    ),
    Row(
        "recipe-max-drop-nan",
        lambda c: _recipe(c, 'max_drop = nan\n[[step]]\ntechnique = "int8"\n'),
        "max_drop.*finite",
    ),
    Row("recipe-unknown-technique", lambda c: _recipe(c, '[[step]]\ntechnique = "magic"\n'), "unknown technique"),
    Row("recipe-not-toml", lambda c: _recipe(c, "this is = = not toml"), "not valid TOML"),
    Row(
        "recipe-binary",
        lambda c: (
            c.work.joinpath("r.toml").write_bytes(b"\xff\xfe\x00"),
            ["compress", c.model(), "--recipe", "r.toml"],
        )[1],
        "cannot be read as text",
    ),
    # -- manifests and bundles: malformed, escaping, incomplete
    Row("manifest-is-list", lambda c: _edit_manifest(c, lambda d, r: "[]"), "not an object"),
    Row("manifest-mistyped-field", lambda c: _edit_manifest(c, _mistyped), r"files\.0\.size"),
    Row("manifest-not-json", lambda c: _edit_manifest(c, lambda d, r: "{not json"), "not a valid manifest"),
    Row("manifest-newer-schema", lambda c: _edit_manifest(c, lambda d, r: {**d, "schema": 99}), "newer"),
    Row("bundle-path-dotdot", lambda c: _edit_manifest(c, _escape_dotdot), "not a relative path inside"),
    Row("bundle-path-absolute", lambda c: _edit_manifest(c, _escape_absolute), "not a relative path inside"),
    Row("bundle-symlink-outside", lambda c: _edit_manifest(c, _escape_symlink), "outside the bundle"),
    Row("bundle-unlisted-variant-file", lambda c: _edit_manifest(c, _unlisted_variant), "does not list"),
    Row("bundle-missing-file", lambda c: _edit_manifest(c, _missing), "is missing"),
    Row("bundle-altered-byte", lambda c: _edit_manifest(c, _altered), "does not match its SHA-256"),
    Row("doctor-escaping-bundle", lambda c: _edit_manifest(c, _escape_dotdot, "doctor"), "not a relative path"),
    Row("build-escaping-bundle", lambda c: _edit_manifest(c, _escape_absolute, "build"), "not a relative path"),
    # -- outputs that hold inputs, the current directory or unrelated files
    Row(
        "out-bench-into-bundle",
        lambda c: (c.bundle_copy(), ["bench", "b.bundle", "-o", "b.bundle", *OPTS])[1],
        "holds the input",
    ),
    Row(
        "out-bench-into-bundle-data",
        lambda c: (c.bundle_copy(), ["bench", "b.bundle", "-o", "b.bundle/data"])[1],
        r"holds the input (calib|eval)\.npz",
    ),
    Row("out-bench-unrelated-folder", _unrelated_dir, "did not write"),
    Row("out-compress-over-model-folder", _neighbours, "holds the input m.pt"),
    Row(
        "out-save-recipe-over-model",
        lambda c: ["compress", c.model(), "--int8", "--save-recipe", "m.pt"],
        "--save-recipe m.pt is an input",
    ),
    Row(
        "out-compress-into-cwd",
        lambda c: ["compress", c.model(), "--int8", "-o", ".", "--overwrite"],
        "current directory",
    ),
    Row("out-compress-recipe-folder", _recipe_in_out, "holds the input r.toml"),
    Row("out-export-over-model", lambda c: ["export", c.model(), "-o", "m.pt"], "is an input|overwrite the input"),
    Row("out-train-existing-file", _existing_file_train, "already exists; pass --overwrite"),
    # -- read-only and full output locations (real tmpfs mounts)
    Row("readonly-compress", lambda c: _readonly(c, _compress_to), "read-only file system"),
    Row("readonly-export", lambda c: _readonly(c, _export_to), "read-only file system"),
    Row("readonly-train", lambda c: _readonly(c, _train_to), "read-only file system"),
    Row("readonly-bench", lambda c: _readonly(c, _bench_to), "read-only file system"),
    Row("full-compress", lambda c: _full(c, _compress_to), "cannot write to .*full: no space left"),
    Row("full-export", lambda c: _full(c, _export_to), "cannot write to .*full: no space left"),
    Row("full-train", lambda c: _full(c, _train_to), "cannot write to .*full: no space left"),
]


@dataclass(frozen=True)
class SignalRow:
    id: str
    argv: Callable[[Ctx], list[str]]
    after: str  # a progress line on stderr that marks the phase to interrupt
    signal: int
    delay: float = 0.0


def _compress_argv(c: Ctx, memory: bool = False) -> list[str]:
    opts = ["--time-budget", "0.3"] + ([] if memory else ["--no-memory"])
    return ["compress", c.model(), "--int8", "--runtime", "onnxruntime", "-o", "out.bundle", *opts]


SIGNAL_ROWS = [
    SignalRow("sigint-while-exporting", _compress_argv, "✓ loading", 2),
    SignalRow("sigterm-while-calibrating", _compress_argv, "✓ applying int8", 15),
    SignalRow("sigint-while-timing", _compress_argv, "✓ running ort-int8-static", 2, 0.1),
    SignalRow("sigint-while-writing-report-and-plot", _compress_argv, "✓ timing", 2),
    SignalRow("sigterm-during-memory-probe", lambda c: _compress_argv(c, memory=True), "✓ peak memory of ort-fp32", 15),
    SignalRow(
        "sigterm-during-bench",
        lambda c: (c.bundle_copy(), ["bench", "b.bundle", "--time-budget", "0.5"])[1],
        "✓ running ort-fp32",
        15,
    ),
]

MATRIX_SIZE = len(ROWS) + len(SIGNAL_ROWS)


@pytest.fixture(scope="module", autouse=True)
def _announce(request: pytest.FixtureRequest) -> None:
    # printed in the session summary by tests/conftest.py
    request.config._trust_matrix_rows = (  # type: ignore[attr-defined]
        f"trust fault matrix: {MATRIX_SIZE} rows ({len(SIGNAL_ROWS)} with real SIGINT/SIGTERM)"
    )


def test_matrix_covers_at_least_40_faults() -> None:
    assert MATRIX_SIZE >= 40
    assert len({r.id for r in ROWS} | {r.id for r in SIGNAL_ROWS}) == MATRIX_SIZE


@pytest.fixture
def ctx(tmp_path: Path, mlp: Path, bundle: Path, mounts, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    return Ctx(work=work, mlp=mlp, bundle=bundle, mounts=mounts)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_fault(row: Row, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    argv = row.setup(ctx)
    before = snapshot(ctx.work)
    code, err = run_inproc(argv, capsys)
    assert code == row.code, err
    assert_one_line(err, row.message)
    assert_nothing_changed(before, ctx.work, Path(tempfile.gettempdir()))
    assert not (ctx.work / "MARKER").exists()


@pytest.mark.parametrize("row", SIGNAL_ROWS, ids=[r.id for r in SIGNAL_ROWS])
def test_signal(row: SignalRow, ctx: Ctx) -> None:
    argv = row.argv(ctx)
    before = snapshot(ctx.work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": tempfile.gettempdir()}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit.cli", *argv],
        cwd=ctx.work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if row.after in line:
            time.sleep(row.delay)
            proc.send_signal(row.signal)
            break
    else:
        proc.wait()
        proc.stderr.close()
        pytest.fail(f"never saw {row.after!r}: {''.join(seen)}")
    rest = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=300)
    err = "".join(seen) + rest
    assert code == 128 + row.signal, err
    assert_one_line(err, r"interrupted \(SIG(INT|TERM)\); nothing half-written")
    assert_nothing_changed(before, ctx.work, Path(tempfile.gettempdir()))
