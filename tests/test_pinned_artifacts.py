"""The artifacts of ``edgekit compress digits.pt --int8 --seed 0`` are pinned byte for byte.

A refactoring must not change what edgekit ships. Training and calibration run real float kernels,
whose rounding depends on the instruction set the libraries dispatch to (AVX2, AVX-512, AMX) and on
the library versions; the pins are therefore keyed by that machine class. Record the pins of a new
class with ``EDGEKIT_RECORD_PINS=1 pytest tests/test_pinned_artifacts.py`` on the code *before* a
change, then run the test on the code after it.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli

PINS = Path(__file__).parent / "data" / "pinned_artifacts.json"
# What the bundle ships to a device; report, plots and schemas carry timings and are left out.
ARTIFACTS = (
    "data/eval.npz",
    "model.fp32.onnx",
    "model.int8-static.onnx",
    "openvino/model.fp32.bin",
    "openvino/model.fp32.xml",
    "openvino/model.int8.bin",
    "openvino/model.int8.xml",
    "tensorrt/build.sh",
    "tensorrt/model.int8-qdq.onnx",
)


def machine_class() -> str:
    """The kernel family the float libraries pick on this CPU, plus the versions that compute."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    isa = next(
        (f for f in ("amx_bf16", "avx512_vnni", "avx512f", "avx2") if f in flags), "baseline"
    )
    libs = ("torch", "onnx", "onnxruntime", "openvino", "nncf")
    return ";".join([isa, *(f"{lib}={version(lib)}" for lib in libs)])


@pytest.mark.slow
def test_digits_int8_artifacts_match_their_pins(trained, tmp_path: Path) -> None:
    _, model = trained("digits-cnn")
    out = tmp_path / "bundle"
    args = ["compress", str(model), "--int8", "--seed", "0", "-o", str(out), "--time-budget", "0.2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    files = {f["path"]: f["sha256"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    got = {path: files[path] for path in ARTIFACTS}
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {}
    key = machine_class()
    if os.environ.get("EDGEKIT_RECORD_PINS") == "1":
        pins[key] = got
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    if key not in pins:
        pytest.skip(f"no pinned artifacts for machine class {key!r}; record them (module docstring)")
    changed = [path for path in ARTIFACTS if pins[key][path] != got[path]]
    assert not changed, f"artifacts changed for the same model and seed: {changed}"
