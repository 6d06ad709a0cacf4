from __future__ import annotations

import json

import pytest

from edgekit.bundle import manifest as mf
from edgekit.errors import BadInputError, IntegrityError


def make_bundle(tmp_path):
    root = tmp_path / "b"
    (root / "openvino").mkdir(parents=True)
    (root / "model.fp32.onnx").write_bytes(b"\x08\x07fake-onnx")
    (root / "openvino" / "model.int8.xml").write_text("<net/>")
    m = mf.Manifest(
        source={"path": "m.pt", "sha256": "ab"},
        recipe={"seed": 0, "step": []},
        calibration={"sha256": "cd", "n": 10, "seed": 0},
        target="x86-openvino",
    )
    m.add_files(root, [p for p in root.rglob("*") if p.is_file()])
    mf.write(root, m)
    return root


def test_roundtrip_and_hashes(tmp_path) -> None:
    root = make_bundle(tmp_path)
    m = mf.read(root)
    assert {f.path for f in m.files} == {"model.fp32.onnx", "openvino/model.int8.xml"}
    data = json.loads((root / "manifest.json").read_text())
    for key in (
        "schema",
        "edgekit_version",
        "created",
        "source",
        "recipe",
        "calibration",
        "target",
        "toolchain",
        "files",
        "report",
    ):
        assert key in data
    assert data["toolchain"]["edgekit"]


def test_one_altered_byte_is_refused(tmp_path) -> None:
    root = make_bundle(tmp_path)
    p = root / "openvino" / "model.int8.xml"
    raw = bytearray(p.read_bytes())
    raw[0] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="does not match its SHA-256"):
        mf.read(root)
    assert IntegrityError.exit_code == 2


def test_missing_file_and_not_a_bundle(tmp_path) -> None:
    root = make_bundle(tmp_path)
    (root / "model.fp32.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        mf.read(root)
    with pytest.raises(BadInputError, match="not an edgekit bundle"):
        mf.read(tmp_path)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="not a valid manifest"):
        mf.read(root)
