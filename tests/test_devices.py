"""Device sensors and TensorRT engines on a device: what cannot exist on this machine (RAPL
counters, thermal zones, a GPU with TensorRT) is replaced by a fake sysfs tree and a fake
``tensorrt`` module that records the calls; everything around them is the real code."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.devices import probe

# ------------------------------------------------------------------------------- sensors


def _sysfs(tmp_path: Path, *, energy_uj: int = 0, freq_khz: int | None = None, temp_mc: int | None = None) -> Path:
    root = tmp_path / "sys"
    rapl = root / "class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text(str(energy_uj))
    (rapl / "max_energy_range_uj").write_text("1000000")
    (root / "class/powercap/intel-rapl:0:0").mkdir()  # a sub-domain (core), not counted twice
    if freq_khz is not None:
        cpu = root / "devices/system/cpu/cpu0/cpufreq"
        cpu.mkdir(parents=True)
        (cpu / "scaling_cur_freq").write_text(str(freq_khz))
    if temp_mc is not None:
        zone = root / "class/thermal/thermal_zone0"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(str(temp_mc))
    return root


def test_rapl_energy_per_inference_subtracts_idle_and_handles_wraparound(tmp_path, monkeypatch) -> None:
    root = _sysfs(tmp_path, energy_uj=999_000)
    monkeypatch.setenv("EDGEKIT_SYSFS", str(root))
    meter = probe.energy_meter()
    assert isinstance(meter, probe.Rapl) and meter.source == "intel-rapl intel-rapl:0"
    counter = root / "class/powercap/intel-rapl:0/energy_uj"

    def inference() -> None:  # each call "uses" 2 mJ; the counter wraps at 1 J
        counter.write_text(str((int(counter.read_text()) + 2000) % 1_000_000))

    e = probe.energy_per_inference(inference, meter, seconds=0.05, idle_w=0.0)
    assert e["mj_per_inference_total"] == pytest.approx(2.0) and e["mj_per_inference"] == pytest.approx(2.0)
    assert e["n"] >= 1 and e["source"] == "intel-rapl intel-rapl:0"
    busy = probe.energy_per_inference(inference, meter, seconds=0.05, idle_w=1e6)
    assert busy["mj_per_inference"] == 0.0 and busy["idle_power_w"] == 1e6  # never below zero


def test_sensors_and_throttle_flag(tmp_path, monkeypatch) -> None:
    root = _sysfs(tmp_path, freq_khz=2_400_000, temp_mc=61_500)
    monkeypatch.setenv("EDGEKIT_SYSFS", str(root))
    before = probe.sensors()
    assert before == {"cpu_freq_mhz": 2400.0, "cpu_temp_c": 61.5}
    (root / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").write_text("1200000")
    assert probe.throttled(before, probe.sensors()) is True
    assert probe.throttled(before, before) is False
    monkeypatch.setenv("EDGEKIT_SYSFS", str(tmp_path / "empty"))
    bare = probe.sensors()
    assert bare == {"cpu_freq_mhz": "not available", "cpu_temp_c": "not available"}
    assert probe.throttled(bare, bare) == "not available" and probe.energy_meter() is None


def test_facts_name_the_device() -> None:
    f = probe.facts()
    assert f["cpu"] and f["cores"] >= 1 and f["memory_mb"] > 0 and f["os"]
    assert f["runtimes"]["onnxruntime"] and f["gpu"] == "not available"
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert ("avx2" in f["isa_flags"]) == ("avx2" in flags)


# ------------------------------------------------------------------------------ TensorRT
class FakeTensorRT(types.ModuleType):
    """The slice of the TensorRT 10 Python API that ``build_engine`` uses, recording each call."""

    def __init__(self, version: str) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.__version__ = version
        calls: list[tuple] = []
        self.calls = calls

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class Config:
            profiling_verbosity = None

            def set_memory_pool_limit(self, pool, size):
                calls.append(("workspace", size))

            def set_flag(self, flag):
                calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                calls.append(("profile", dict(profile.shapes)))

            def create_timing_cache(self, data):
                calls.append(("timing_cache_in", bytes(data)))
                return "cache"

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

            def get_timing_cache(self):
                return types.SimpleNamespace(serialize=lambda: b"timing-cache")

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags):
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calls.append(("build", network))
                return b"serialized-engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                calls.append(("parse", Path(path).name))
                return True

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED=1)
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")


def _gpu_bundle(root: Path) -> Path:
    """A bundle with an fp32 ONNX and a TensorRT fp16 variant of it (a real small graph)."""
    from edgekit.bundle import manifest as mf

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "tensorrt").mkdir(parents=True)
    (root / "data").mkdir()
    onnx.save(model, root / "model.fp32.onnx")
    onnx.save(model, root / "tensorrt" / "model.fp16.onnx")
    with open(root / "data" / "eval.npz", "wb") as f:
        np.savez(f, x=np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32))
    m = mf.Manifest(source={"path": "m.onnx", "sha256": "0"}, recipe={}, calibration={}, target="gpu-tensorrt")
    m.model = {"task": "regression", "inputs": ["x"]}
    m.variants = [
        {"name": "ort-fp32", "runtime": "onnxruntime", "precision": "fp32", "artifact": "model.fp32.onnx"},
        {"name": "trt-fp16", "runtime": "tensorrt", "precision": "fp16", "artifact": "tensorrt/model.fp16.onnx"},
    ]
    m.add_files(root, [p for p in root.rglob("*") if p.is_file()])
    mf.write(root, m)
    return root


def _fake_gpu(monkeypatch, version: str, gpu: str = "Orin (nvgpu)") -> FakeTensorRT:
    from edgekit.runtimes import tensorrt as trt_mod

    fake = FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_mod, "gpu_available", lambda: (True, f"GPU 0: {gpu}"))
    monkeypatch.setattr(trt_mod, "gpu_name", lambda detail="": gpu)
    monkeypatch.setattr(trt_mod, "require", lambda *a, **k: None)
    return fake


def test_build_records_gpu_and_tensorrt_and_bench_picks_up_the_engine(tmp_path, monkeypatch) -> None:
    from edgekit import api
    from edgekit.bundle import manifest as mf
    from edgekit.bundle.candidates import candidates

    root = _gpu_bundle(tmp_path / "b")
    (c,) = [c for c in candidates(root, mf.read(root)) if c.runtime == "tensorrt"]
    assert "edgekit build" in (c.unavailable or "")  # no GPU here: not built yet

    fake = _fake_gpu(monkeypatch, "10.3.0")
    (engine,) = api.build(root)
    assert engine == root / "tensorrt" / "model.fp16.engine" and engine.read_bytes() == b"serialized-engine"
    assert ("parse", "model.fp16.onnx") in fake.calls and ("flag", "FP16") in fake.calls
    assert ("profile", {"x": ((1, 4), (1, 4), (32, 4))}) in fake.calls
    assert (root / "tensorrt" / "timing.cache").read_bytes() == b"timing-cache"
    meta = json.loads((root / "tensorrt" / "model.fp16.engine.json").read_text())
    assert meta == {"gpu": "Orin (nvgpu)", "tensorrt": "10.3.0"}
    (c,) = [c for c in candidates(root, mf.read(root)) if c.runtime == "tensorrt"]
    assert c.path == engine and c.unavailable is None

    _fake_gpu(monkeypatch, "10.4.0")  # TensorRT upgraded on the device: the engine is refused
    report, _ = api.bench(root, runtimes=["tensorrt"], time_budget_s=0.05, with_memory=False)
    row = report.row("trt-fp16")
    assert row.measured is False and row.deployable is False
    assert "built for Orin (nvgpu) with TensorRT 10.3.0" in row.not_measured_reason
    assert "TensorRT 10.4.0" in row.not_measured_reason and "edgekit build" in row.not_measured_reason
    assert report.baseline is not None and report.baseline.load_ms > 0 and report.baseline.latency_samples_ms
    _fake_gpu(monkeypatch, "10.3.0", gpu="RTX 4090")
    (c,) = [c for c in candidates(root, mf.read(root)) if c.runtime == "tensorrt"]
    assert "this device has RTX 4090" in (c.unavailable or "")


def test_jetson_power_rails_are_integrated(tmp_path, monkeypatch) -> None:
    rail = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/in_power0_input"
    rail.parent.mkdir(parents=True)
    rail.write_text("5000")  # mW
    monkeypatch.setenv("EDGEKIT_SYSFS", str(tmp_path / "sys"))
    meter = probe.energy_meter()
    assert isinstance(meter, probe.PowerRails) and "in_power0_input" in meter.source
    meter.start()
    try:
        e = probe.energy_per_inference(lambda: __import__("time").sleep(0.01), meter, seconds=0.5, idle_w=1.0)
    finally:
        meter.stop()
    assert e["avg_power_w"] == pytest.approx(5.0, rel=0.3)
    assert e["mj_per_inference"] == pytest.approx(e["mj_per_inference_total"] * 4 / 5, rel=0.3)
