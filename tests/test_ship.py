"""Shipping to a device and measuring on it, against a real OpenSSH server on 127.0.0.1.

The fixture starts ``sshd -D -e -f CONFIG`` on a free loopback port with a host key and a user key
made for the test (no system configuration touched) and stops it at the end. The "device" is a
second virtual environment whose ``edgekit`` is reached through that server; variants of it lack
ONNX Runtime, or compute one variant differently (as a device with another CPU or runtime would).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.devices import remote

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ROOT = Path(__file__).resolve().parents[1]


def invoke(args: list[str]) -> tuple[int, str, str]:
    from edgekit.cli import main

    runner = CliRunner()
    with runner.isolation() as streams:
        code = main(args)
        return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Device:
    """A loopback sshd and the ssh options that reach it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.key = root / "user_key"
        self.known = root / "known_hosts"
        self.url = f"ssh://127.0.0.1:{self.port}"  # as this user, like plain ssh
        self.proc: subprocess.Popen[bytes] | None = None

    def options(self, key: Path | None = None) -> str:
        return shlex.join(
            [
                "-F", "/dev/null", "-i", str(key or self.key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known}", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "LogLevel=ERROR",
            ]
        )  # fmt: skip

    def start(self) -> None:
        _keygen(self.root / "host_key")
        _keygen(self.key)
        shutil.copy(self.key.with_suffix(".pub"), self.root / "authorized_keys")
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.root / 'host_key'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel ERROR",
                ]
            )
            + "\n"
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.log = open(self.root / "sshd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.log.close()


def make_device_env(root: Path, name: str, *, hide: tuple[str, ...] = (), startup: str = "") -> Path:
    """A second virtual environment that sees this one's packages (minus ``hide``) and this
    checkout: seconds to make, instead of a full install. Returns its ``edgekit`` command."""
    env = root / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    ours = Path(sysconfig.get_paths()["purelib"])
    if hide:
        farm = root / f"{name}-site"
        farm.mkdir()
        for entry in ours.iterdir():
            if not entry.name.lower().startswith(hide):
                (farm / entry.name).symlink_to(entry)
        ours = farm
    (site / "aa_edgekit_device.pth").write_text(f"{ROOT}\n{ours}\n")
    if startup:
        (site / "zz_device_startup.py").write_text(startup)
        (site / "zz_device_startup.pth").write_text("import zz_device_startup\n")
    exe = env / "bin" / "edgekit"
    exe.write_text(f"#!{env / 'bin' / 'python'}\nimport sys\nfrom edgekit.cli import main\nsys.exit(main())\n")
    exe.chmod(0o755)
    return exe


# On this "device" the OpenVINO INT8 variant computes something else (its logits rotated by one
# class), as a device whose CPU or runtime changes the numbers would.
DIFFERENT_OV_INT8 = """
import numpy as np
from edgekit.runtimes import openvino as _ov

_orig = _ov.OpenVINORuntime._run


def _run(self, feed):
    outs = _orig(self, feed)
    if self.path is not None and self.path.name == "model.int8.xml":
        outs = [np.roll(np.asarray(o), 1, axis=-1) for o in outs]
    return outs


_ov.OpenVINORuntime._run = _run
"""


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    if not Path(SSHD).exists():
        if os.environ.get("EDGEKIT_REQUIRE_SSHD"):
            pytest.fail(f"{SSHD} is missing; install openssh-server")
        pytest.skip("needs OpenSSH's sshd (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("device")
    dev = Device(root)
    dev.start()
    dev.edgekit = make_device_env(root, "device-venv")  # type: ignore[attr-defined]
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, model = trained("digits-cnn")
    out = tmp_path_factory.mktemp("ship") / "digits.bundle"
    code, _, err = invoke(
        ["compress", str(model), "--int8", "--runtime", "onnxruntime,openvino", "--time-budget", "0.1",
         "--no-memory", "-o", str(out)]
    )  # fmt: skip
    assert code == 0, err
    return out


def ship_args(device: Device, *extra: str, edgekit: Path | None = None) -> list[str]:
    return [
        "--ssh-option", device.options(), "--remote-edgekit", str(edgekit or device.edgekit),  # type: ignore[attr-defined]
        *extra,
    ]  # fmt: skip


def no_secret(device: Device, *texts: str) -> None:
    secret = device.key.read_text().strip().splitlines()
    body = "".join(secret[1:-1])
    for text in texts:
        assert body[:40] not in text.replace("\n", "") and "PRIVATE KEY" not in text


# ------------------------------------------------------------------------------------- rows
def test_parse_addresses() -> None:
    h = remote.parse("ssh://pi@10.0.0.5:2222:/opt/models/digits", need_path=True)
    assert (h.user, h.host, h.port, h.path) == ("pi", "10.0.0.5", 2222, "/opt/models/digits")
    assert remote.parse("ssh://jetson").port is None
    assert remote.parse("ssh://[::1]:22").host == "::1"
    assert remote.parse("ssh://[::1]:22").url() == "ssh://[::1]:22"
    for bad in ("scp://host", "ssh://host:99999", "ssh://host:/x"):
        with pytest.raises(remote.BadInputError):
            remote.parse(bad)
    with pytest.raises(remote.BadInputError, match="names no directory"):
        remote.parse("ssh://host:22", need_path=True)
    argv = remote.Launcher(host=h, ssh_options=["-i", "k"]).ssh_argv("edgekit --version")
    assert "BatchMode=yes" in argv and "-p" in argv and argv[-2:] == ["pi@10.0.0.5", "edgekit --version"]


def test_ship_then_reship_copies_nothing(device: Device, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dev" / "digits"
    code, out, err = invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device), "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["copied"] and r["copied_bytes"] > 0
    dev = r["device"]
    assert dev["files_verified"] == len(json.loads((bundle / "manifest.json").read_text())["files"])
    assert dev["smoke"]["compared"] and dev["smoke"]["max_abs_err"] < 1e-4
    assert all(v["deployable_here"] == v["deployable_on_build_host"] for v in dev["variants"])
    assert (dest / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    assert not [p for p in dest.parent.iterdir() if p.name != "digits"], "a temporary copy was left"

    code, out, err = invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device)])
    assert code == 0, err
    assert "nothing copied" in out
    no_secret(device, out, err)

    # one seam for both: the same verb run here and on the device through the launcher
    there = remote.launcher(device.url, ssh_options=shlex.split(device.options()), remote_edgekit=str(device.edgekit))  # type: ignore[attr-defined]
    here = remote.launcher(None).run(["verify", str(bundle), "--no-gate", "--json"]).json()
    remote_view = there.run(["verify", str(dest), "--no-gate", "--json"]).json()
    assert here["manifest_sha256"] == remote_view["manifest_sha256"] == r["manifest_sha256"]
    assert here["files_verified"] == remote_view["files_verified"] and here["smoke"] == remote_view["smoke"]


def test_bench_on_the_device_brings_back_a_profile(device: Device, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dev" / "digits"
    assert invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device)])[0] == 0
    out_dir = tmp_path / "remote-report"
    code, out, err = invoke(
        ["bench", str(dest), "--host", device.url, *ship_args(device), "--time-budget", "0.1", "--runtime", "ort",
         "--no-memory", "-o", str(out_dir)]
    )  # fmt: skip
    assert code == 0, err
    r = json.loads((out_dir / "report.json").read_text())
    d = r["device"]
    assert d["address"] == device.url and d["hostname"] == socket.gethostname() and d["cpu"]
    assert d["cores"] >= 1 and d["memory_mb"] > 0 and d["runtimes"]["onnxruntime"]
    for key in ("cpu_freq_mhz", "cpu_temp_c"):
        assert isinstance(d["sensors_before"][key], float) or d["sensors_before"][key] == "not available"
    assert d["throttled"] in (True, False, "not available")
    rows = [r["baseline"], *r["variants"]]
    for row in rows:
        if row["measured"]:
            assert row["load_ms"] > 0 and row["first_inference_ms"] > 0
            assert len(row["latency_samples_ms"]) == row["latency_ms"]["n"] > 0
            energy = row["energy"]["mj_per_inference"]
            assert energy == "not available" or energy >= 0
    assert (out_dir / "report.md").is_file()
    assert f"device: {socket.gethostname()} (" in out
    no_secret(device, out, err, (out_dir / "report.json").read_text())

    code, out, err = invoke(
        ["doctor", str(dest), "--host", device.url, *ship_args(device), "--no-layers", "--variant", "ov-int8", "--json"]
    )  # fmt: skip
    assert code == 0, err
    diagnosis = json.loads(out)
    assert diagnosis["bundle"] == str(dest) and [v["name"] for v in diagnosis["variants"]] == ["ov-int8"]
    assert diagnosis["variants"][0]["fidelity"]["top1_agreement"] >= 0.98


def test_tamper_on_the_device_is_refused_and_reship_repairs(device: Device, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dev" / "digits"
    assert invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device)])[0] == 0
    victim = dest / "openvino" / "model.int8.bin"
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    code, out, err = invoke(
        ["bench", str(dest), "--host", device.url, *ship_args(device), "--time-budget", "0.1", "--json"]
    )
    assert code == 2 and err.count("\n") == 1
    assert "model.int8.bin does not match its SHA-256" in err
    code, out, err = invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device), "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["copied"] and r["replaced"] == "a bundle that failed verification"
    assert victim.read_bytes() == (bundle / "openvino" / "model.int8.bin").read_bytes()


def test_interrupted_ship_leaves_nothing(device: Device, bundle: Path, tmp_path: Path) -> None:
    """The connection drops halfway through the tar stream: nothing is installed, no temporary
    copy stays, and a bundle already there is untouched."""
    from edgekit.bundle import manifest as mf

    full = tmp_path / "full.tar"
    with tarfile.open(full, "w") as tar:
        for entry in mf.read(bundle).files:
            tar.add(bundle / entry.path, arcname=entry.path)
        tar.add(bundle / "manifest.json", arcname="manifest.json")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    lch = remote.launcher(device.url, ssh_options=shlex.split(device.options()), remote_edgekit=str(device.edgekit))  # type: ignore[attr-defined]
    parent = tmp_path / "dev"
    for dest in (parent / "fresh", parent / "installed"):
        if dest.name == "installed":
            assert invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device)])[0] == 0
            before = (dest / "manifest.json").read_bytes()
        with open(cut, "rb") as stream:
            res = lch.run(["receive", str(dest), "--json"], stdin=stream, check=False)
        assert res.code == 2, res
        assert "broke off" in res.stderr or "missing" in res.stderr
        if dest.name == "fresh":
            assert not dest.exists()
        else:
            assert (dest / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in parent.iterdir()) == ["installed"], "a half-installed copy was left"


def test_gate_on_the_device_rejects_a_variant_that_differs_there(device: Device, bundle: Path, tmp_path: Path) -> None:
    odd = make_device_env(tmp_path, "odd-venv", startup=DIFFERENT_OV_INT8)
    dest = tmp_path / "dev" / "digits"
    code, out, err = invoke(["ship", str(bundle), f"{device.url}:{dest}", *ship_args(device, edgekit=odd), "--json"])
    assert code == 0, err
    gate = {v["name"]: v for v in json.loads(out)["device"]["variants"]}
    assert gate["ov-int8"]["deployable_on_build_host"] is True
    assert gate["ov-int8"]["deployable_here"] is False and "accuracy drops" in gate["ov-int8"]["reason"]
    assert gate["ort-int8-static"]["deployable_here"] is True
    out_dir = tmp_path / "r"
    code, out, err = invoke(
        ["bench", str(dest), "--host", device.url, *ship_args(device, edgekit=odd), "--time-budget", "0.1",
         "--runtime", "openvino", "--no-memory", "-o", str(out_dir)]
    )  # fmt: skip
    assert code == 0, err
    rows = {v["name"]: v for v in json.loads((out_dir / "report.json").read_text())["variants"]}
    assert rows["ov-int8"]["deployable"] is False and "accuracy drops" in rows["ov-int8"]["rejected_reason"]
    assert rows["ov-fp32"]["deployable"] is True


@pytest.mark.parametrize(
    "case",
    ["unreachable", "refused-key", "missing-edgekit", "missing-runtime", "unsigned", "not-a-bundle-there"],
)
def test_failures_are_one_clear_line_and_exit_2(case: str, device: Device, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dev" / "digits"
    url = f"{device.url}:{dest}"
    args = ship_args(device)
    want = {
        "unreachable": "is unreachable",
        "refused-key": "refused the SSH key",
        "missing-edgekit": "edgekit is not installed on",
        "missing-runtime": "this device has no onnxruntime",
        "unsigned": "is not signed",
        "not-a-bundle-there": "exists and is not an edgekit bundle",
    }[case]
    if case == "unreachable":
        url = f"ssh://127.0.0.1:{_free_port()}:{dest}"
    elif case == "refused-key":
        stranger = tmp_path / "stranger"
        _keygen(stranger)
        args = ["--ssh-option", device.options(stranger), "--remote-edgekit", str(device.edgekit)]  # type: ignore[attr-defined]
    elif case == "missing-edgekit":
        args = ["--ssh-option", device.options(), "--remote-edgekit", str(tmp_path / "nowhere" / "edgekit")]
    elif case == "missing-runtime":
        bare = make_device_env(tmp_path, "bare-venv", hide=("onnxruntime",))
        args = ["--ssh-option", device.options(), "--remote-edgekit", str(bare)]
    elif case == "unsigned":
        args = [*args, "--require-signature", "--device-pubkey", str(tmp_path / "trusted.pub")]
    elif case == "not-a-bundle-there":
        (dest / "precious").mkdir(parents=True)
    code, out, err = invoke(["ship", str(bundle), url, *args])
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("edgekit: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err  # one line, the last one printed
    assert want in errors[0], err
    if case == "not-a-bundle-there":
        assert [p.name for p in dest.iterdir()] == ["precious"]  # left as it was
    else:
        assert not dest.exists()
    if case == "missing-edgekit":
        assert "pip install edgekit" in err
    if case == "missing-runtime":
        assert "pip install onnxruntime==" in err
    no_secret(device, out, err)


def _ec_keypair(path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = path.with_suffix(".pem"), path.with_suffix(".pub")
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_signed_bundle_is_required_and_checked_on_the_device(device: Device, bundle: Path, tmp_path: Path) -> None:
    signed = tmp_path / "signed.bundle"
    shutil.copytree(bundle, signed)
    key, pub = _ec_keypair(tmp_path / "release")
    _, stranger_pub = _ec_keypair(tmp_path / "stranger")
    code, out, err = invoke(["sign", str(signed), "--key", str(key)])
    assert code == 0, err
    dest = tmp_path / "dev" / "digits"
    url = f"{device.url}:{dest}"
    trusted = ["--require-signature", "--device-pubkey", str(pub)]
    code, out, err = invoke(["ship", str(signed), url, *ship_args(device), "--pubkey", str(pub), *trusted, "--json"])
    assert code == 0, err
    assert json.loads(out)["device"]["signature"] == "verified"
    # a device that trusts another key refuses the bundle (the signature is not its signer's)
    other = tmp_path / "dev" / "other"
    code, out, err = invoke(
        ["ship", str(signed), f"{device.url}:{other}", *ship_args(device), "--require-signature",
         "--device-pubkey", str(stranger_pub)]
    )  # fmt: skip
    assert code == 2 and "does not verify with stranger.pub" in err.splitlines()[-1], err
    assert not other.exists()
    # on the device, an unsigned bundle is refused with --require-signature
    lch = remote.launcher(device.url, ssh_options=shlex.split(device.options()), remote_edgekit=str(device.edgekit))  # type: ignore[attr-defined]
    (dest / "manifest.sig").unlink()
    res = lch.run(["verify", str(dest), "--require-signature", "--pubkey", str(pub)], check=False)
    assert res.code == 2 and "is not signed" in res.stderr and res.stderr.count("\n") == 1, res
    no_secret(device, out, err, res.stdout, res.stderr)
    assert key.read_text().splitlines()[1] not in out + err + res.stdout + res.stderr


# A device whose OpenVINO INT8 computes something else, whatever the file is called.
ANY_OV_INT8_DIFFERS = DIFFERENT_OV_INT8.replace('self.path.name == "model.int8.xml"', '"int8" in self.path.name')


def test_search_builds_here_and_measures_on_the_device(device: Device, trained, tmp_path: Path) -> None:
    """``search --host``: the same candidates, built here, gated and timed on the device — whose
    OpenVINO INT8 differs, so the device rejects what this machine passes, and nothing is left there."""
    import hashlib

    _, model = trained("digits-cnn")
    before = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    exe = make_device_env(device.root, "search-device", startup=ANY_OV_INT8_DIFFERS)
    common = ["--max-drop", "1.0", "--prune", "0", "--distill", "0", "--no-fp16", "--time-budget", "0.05",
              "--minutes", "5", "--threads", "1"]  # fmt: skip
    code, _, err = invoke(["search", str(model), *common, "-o", str(tmp_path / "here")])
    assert code == 0, err
    code, _, err = invoke(["search", str(model), *common, "-o", str(tmp_path / "there"), "--host", device.url,
                           *ship_args(device, edgekit=exe)])  # fmt: skip
    assert code == 0, err
    assert f"measured on {device.url}" in err
    here, there = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("here", "there"))
    rows_here = {c["name"]: c for c in here["candidates"]}
    rows_there = {c["name"]: c for c in there["candidates"]}
    assert rows_here.keys() == rows_there.keys()  # the same candidate set
    assert rows_here["int8-static@ov"]["status"] == "measured"  # faithful here
    assert rows_there["int8-static@ov"]["status"] == "rejected", rows_there["int8-static@ov"]  # not there
    assert all(rows_there[n]["latency_ms"]["p50"] > 0 for n in ("fp32@ort", "fp32@ov", "int8-static@ort"))
    measured_on = there["measured_on"]
    assert measured_on["address"] == device.url and measured_on["threads_used"] == 1 and measured_on["cpu"]
    assert there["winner"] != "int8-static@ov" and here["measured_on"] == "this machine"
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("edgekit-stage-*") if p.is_dir()]
    assert leftovers == []  # the device's temporary stage is gone (same machine here)
    # A device that cannot be reached, or has no edgekit, fails in one line before anything is written.
    for host, extra in (("ssh://127.0.0.1:1", []), (device.url, ["--remote-edgekit", "/no/such/edgekit"])):
        nowhere = tmp_path / "nowhere"
        code, _, err = invoke(["search", str(model), "-o", str(nowhere), "--host", host,
                               "--ssh-option", device.options(), *extra])  # fmt: skip
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and not nowhere.exists(), err
        assert ("unreachable" if extra == [] else "not installed") in lines[0], lines
    assert hashlib.sha256(Path(model).read_bytes()).hexdigest() == before  # the input is untouched
