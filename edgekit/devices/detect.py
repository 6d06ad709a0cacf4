"""Device profiles, what this machine is, and which targets it can run."""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib

from edgekit.errors import BadInputError

# target name → (runtime, family of devices it is meant for)
TARGETS: dict[str, tuple[str, str]] = {
    "x86-onnxruntime": ("onnxruntime", "x86_64"),
    "x86-openvino": ("openvino", "x86_64"),
    "arm64-onnxruntime": ("onnxruntime", "aarch64"),
    "jetson-tensorrt": ("tensorrt", "aarch64"),
    "gpu-tensorrt": ("tensorrt", "x86_64"),
}
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "torch"}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    arch: str
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...]
    cores: int
    memory_gb: float
    notes: str = ""


def profiles() -> dict[str, DeviceProfile]:
    out: dict[str, DeviceProfile] = {}
    for entry in resources.files("edgekit.devices").joinpath("profiles").iterdir():
        if entry.name.endswith(".toml"):
            d = tomllib.loads(entry.read_text())
            out[d["name"]] = DeviceProfile(
                name=d["name"],
                arch=d["arch"],
                runtimes=tuple(d["runtimes"]),
                precisions=tuple(d["precisions"]),
                cores=int(d["cores"]),
                memory_gb=float(d["memory_gb"]),
                notes=d.get("notes", ""),
            )
    return dict(sorted(out.items()))


def target_runtime(target: str) -> str:
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[target][0]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What this host is: CPU, cores, the ISA features that decide INT8 speed, runtimes installed."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "asimddp") if f in flags]
    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores": os.cpu_count() or 1,
        "isa": isa,
        "runtimes": {rt: importlib.util.find_spec(pkg) is not None for rt, pkg in RUNTIME_PACKAGES.items()},
    }


def closest_profile() -> DeviceProfile | None:
    """The profile that describes this host best (x86 only: AVX-512 VNNI or AVX2)."""
    info = machine()
    if info["arch"] not in ("x86_64", "AMD64"):
        return profiles().get("arm64-cortex-a76") if info["arch"] == "aarch64" else None
    isa = set(info["isa"]) if isinstance(info["isa"], list) else set()
    name = "x86-avx512-vnni" if {"avx512_vnni", "avx_vnni", "amx_tile"} & isa else "x86-avx2"
    return profiles().get(name)


def default_target() -> str:
    info = machine()
    runtimes = info["runtimes"]
    arch = "x86" if info["arch"] in ("x86_64", "AMD64") else "arm64"
    if arch == "x86" and isinstance(runtimes, dict) and runtimes.get("openvino"):
        return "x86-openvino"
    return f"{arch}-onnxruntime"


def runnable_targets() -> dict[str, str]:
    """Every target with 'yes' or the reason this machine cannot run it."""
    info = machine()
    out: dict[str, str] = {}
    for target, (runtime, arch) in TARGETS.items():
        if not (isinstance(info["runtimes"], dict) and info["runtimes"].get(runtime)):
            out[target] = f"no: the {RUNTIME_PACKAGES[runtime]} package is not installed"
        elif runtime == "tensorrt" and not Path("/dev/nvidia0").exists():
            out[target] = "no: needs an NVIDIA GPU"
        elif arch != info["arch"]:
            out[target] = f"no: needs a {arch} device (artifacts can still be built here and shipped)"
        else:
            out[target] = "yes"
    return out
