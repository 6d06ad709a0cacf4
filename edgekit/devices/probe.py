"""The device profile record: what the device is and what its sensors say, read where bench runs.

Facts: CPU model, ISA flags, cores, memory, OS, GPU, runtime versions. Sensors: CPU frequency and
temperature (before and after the measurement, with a throttling flag) and energy — Intel RAPL
under ``/sys/class/powercap`` (a cumulative counter) or Jetson INA3221 power rails under
``/sys/bus/i2c/drivers/ina3221*`` (sampled power). Whatever the device does not expose is
recorded as ``"not available"``, never estimated. ``EDGEKIT_SYSFS`` moves the ``/sys`` root
(tests point it at a fake tree, since no such sensor exists on a cloud VM).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NA = "not available"
IDLE_S = 1.0
ENERGY_S = 1.0


def _sys() -> Path:
    return Path(os.environ.get("EDGEKIT_SYSFS", "/sys"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _os_name() -> str:
    text = _read(Path("/etc/os-release")) or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    return f"{platform.system()} {platform.release()}"


def _memory_mb() -> float | str:
    text = _read(Path("/proc/meminfo")) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return NA


def _gpu() -> str:
    from edgekit.runtimes.tensorrt import gpu_available

    ok, detail = gpu_available()
    return detail if ok or "libcuda" not in detail else NA


def facts() -> dict[str, Any]:
    """What this device is."""
    from edgekit.bundle.manifest import toolchain
    from edgekit.devices.detect import cpu_flags, cpu_name

    flags = sorted(cpu_flags())
    simd = [f for f in flags if f.startswith(("avx", "sse4", "fma", "amx", "asimd", "neon", "sve", "f16c"))]
    return {
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "isa_flags": simd or NA,
        "cores": os.cpu_count() or NA,
        "memory_mb": _memory_mb(),
        "os": _os_name(),
        "gpu": _gpu(),
        "runtimes": toolchain(),
    }


def cpu_freq_mhz() -> float | str:
    khz = _read(_sys() / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return round(int(khz) / 1000, 1) if khz and khz.isdigit() else NA


def cpu_temp_c() -> float | str:
    """The hottest thermal zone (millidegrees in sysfs)."""
    temps = []
    for zone in sorted((_sys() / "class/thermal").glob("thermal_zone*")):
        raw = _read(zone / "temp")
        if raw and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000)
    return round(max(temps), 1) if temps else NA


def sensors() -> dict[str, Any]:
    return {"cpu_freq_mhz": cpu_freq_mhz(), "cpu_temp_c": cpu_temp_c()}


def throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | str:
    """True when the clock fell more than 10 % during the run (or the temperature passed 85 °C);
    "not available" when the device exposes neither."""
    f0, f1 = before.get("cpu_freq_mhz"), after.get("cpu_freq_mhz")
    t1 = after.get("cpu_temp_c")
    known = False
    if isinstance(f0, float) and isinstance(f1, float):
        known = True
        if f1 < 0.9 * f0:
            return True
    if isinstance(t1, float):
        known = True
        if t1 >= 85.0:
            return True
    return False if known else NA


# ------------------------------------------------------------------------------------ energy
class EnergyMeter:
    """Joules consumed since an arbitrary origin; ``read()`` is called before and after a run."""

    source: str = ""

    def start(self) -> None: ...

    def joules(self) -> float:
        raise NotImplementedError

    def stop(self) -> None: ...


class Rapl(EnergyMeter):
    """Intel RAPL package domains: cumulative ``energy_uj`` counters (wrap at ``max_energy_range_uj``)."""

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self.source = "intel-rapl " + ",".join(d.name for d in domains)
        self._last = [self._raw(d) for d in domains]
        self._total = 0.0

    @staticmethod
    def _raw(d: Path) -> int:
        return int(_read(d / "energy_uj") or 0)

    def joules(self) -> float:
        for i, d in enumerate(self.domains):
            now = self._raw(d)
            delta = now - self._last[i]
            if delta < 0:
                delta += int(_read(d / "max_energy_range_uj") or 0)
            self._total += delta / 1e6
            self._last[i] = now
        return self._total


class PowerRails(EnergyMeter):
    """Jetson INA3221 rails: instantaneous power (mW) sampled every 20 ms and integrated."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.source = "ina3221 " + ",".join(f.name for f in files)
        self._joules = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _watts(self) -> float:
        return sum(int(_read(f) or 0) for f in self.files) / 1000.0

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.02):
            now = time.perf_counter()
            with self._lock:
                self._joules += self._watts() * (now - last)
            last = now

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def joules(self) -> float:
        with self._lock:
            return self._joules

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def energy_meter() -> EnergyMeter | None:
    root = _sys()
    rapl = sorted(p for p in (root / "class/powercap").glob("intel-rapl:*") if p.name.count(":") == 1)
    rapl = [p for p in rapl if (p / "energy_uj").is_file()]
    if rapl:
        return Rapl(rapl)
    rails = sorted((root / "bus/i2c/drivers").glob("ina3221*/*/hwmon/hwmon*/in_power*_input"))
    rails += sorted((root / "bus/i2c/drivers").glob("ina3221*/*/hwmon/hwmon*/power*_input"))
    rails += sorted((root / "bus/i2c/drivers").glob("ina3221*/*/iio:device*/in_power*_input"))  # older L4T
    return PowerRails(rails) if rails else None


def energy_per_inference(
    call: Callable[[], object], meter: EnergyMeter, *, seconds: float = ENERGY_S, idle_w: float
) -> dict[str, Any]:
    """Run ``call`` for about ``seconds`` and return millijoules per inference above idle power."""
    n = 0
    e0 = meter.joules()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        call()
        n += 1
    elapsed = time.perf_counter() - t0
    used = meter.joules() - e0
    above_idle = max(used - idle_w * elapsed, 0.0)
    return {
        "mj_per_inference": round(above_idle * 1e3 / n, 4),
        "mj_per_inference_total": round(used * 1e3 / n, 4),
        "avg_power_w": round(used / elapsed, 3),
        "idle_power_w": round(idle_w, 3),
        "n": n,
        "source": meter.source,
    }


def idle_power_w(meter: EnergyMeter, seconds: float = IDLE_S) -> float:
    e0 = meter.joules()
    time.sleep(seconds)
    return (meter.joules() - e0) / seconds


def profile(
    report: Any,
    candidates: Any,
    data: Any,
    *,
    threads: int,
    before: dict[str, Any],
    progress: Callable[[str], None] = lambda _m: None,
) -> None:
    """Fill ``report.device`` (facts, sensors before/after, throttling) and each measured row's
    ``energy`` (per inference, idle subtracted; "not available" without a sensor)."""
    after = sensors()
    meter = energy_meter()
    device = {**facts(), "sensors_before": before, "sensors_after": after, "throttled": throttled(before, after)}
    rows = {r.name: r for r in report.rows()}
    if meter is None:
        device["energy"] = NA
        for r in rows.values():
            r.energy = {"mj_per_inference": NA}
        report.device = device
        return
    from edgekit.benchmarks import latency as lat
    from edgekit.runtimes import runtime_for

    meter.start()
    try:
        progress(f"idle power ({meter.source})")
        idle = idle_power_w(meter)
        device["energy"] = {"source": meter.source, "idle_power_w": round(idle, 3)}
        for c in candidates:
            row = rows.get(c.name)
            if row is None or not row.measured:
                continue
            progress(f"energy of {c.name}")
            rt = runtime_for(c.runtime, c.precision, threads=threads).load(c.path)
            feeds = lat.feeds_from(data.bind([s.name for s in rt.inputs]), batch=1, n_feeds=8, seed=0)
            row.energy = energy_per_inference(lat.cycle(rt, feeds), meter, idle_w=idle)
    finally:
        meter.stop()
    report.device = device
