"""The CLI's shell: help, start-up cost, errors and exit codes (no model work here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit.cli import cli, main

COMMANDS = ["train", "export", "compress", "bench", "build", "doctor", "targets", "devices"]


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_every_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_import_heavy_packages() -> None:
    code = (
        "import sys; from edgekit.cli import main; "
        "sys.argv=['edgekit','compress','--help']\n"
        "try:\n main(['compress','--help'])\nexcept SystemExit: pass\n"
        "heavy=[m for m in ('torch','onnxruntime','openvino','nncf','onnx','numpy') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY:"


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    code = main(["compress", str(tmp_path / "nope.pt"), "--int8", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgekit: error:")
    assert not (tmp_path / "out").exists()


def test_nothing_to_do_is_a_usage_error(tmp_path, capsys) -> None:
    assert main(["compress", str(tmp_path / "m.pt")]) == 2
    assert "--int8" in capsys.readouterr().err


def test_unknown_model_name_is_usage_error() -> None:
    result = CliRunner().invoke(cli, ["train", "resnet-9000"])
    assert result.exit_code == 2 and "digits-cnn" in result.output


def test_bench_on_a_non_bundle(tmp_path, capsys) -> None:
    assert main(["bench", str(tmp_path)]) == 2
    assert "not an edgekit bundle" in capsys.readouterr().err


def test_targets_and_devices_list_this_machine() -> None:
    out = CliRunner().invoke(cli, ["targets"]).output
    assert "x86-openvino" in out and "jetson-tensorrt" in out
    assert "no:" in out  # this machine has no GPU: TensorRT targets say why
    dev = CliRunner().invoke(cli, ["devices"]).output
    assert "jetson-orin-nano" in dev and "this machine:" in dev
