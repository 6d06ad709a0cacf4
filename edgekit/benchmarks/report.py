"""The measured report: ``report.json`` (the contract of DESIGN.md), ``report.md`` and a plot.

Keys may be added, never renamed: scripts and CI read them.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.artifact import Artifact

SCHEMA = 1


@dataclass
class VariantRow:
    name: str
    runtime: str
    precision: str
    techniques: list[str]
    artifact: str | None
    size_bytes: int | None
    params: int | None = None
    sparsity: float | None = None
    latency_ms: dict[str, Any] | None = None  # batch 1 (or the first batch measured): p50, p90, p99, mean, n
    latency_by_batch: dict[str, dict[str, Any]] = field(default_factory=dict)  # "8" → stats
    latency_by_shape: dict[str, dict[str, Any]] = field(default_factory=dict)  # "x:1x1x32x64" → stats (--shapes)
    threads: int | None = None  # the thread count latency_ms was measured with (the fastest of those tried)
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    metric: dict[str, Any] | None = None  # {"name", "value"}
    metrics: dict[str, float | None] = field(default_factory=dict)  # every task metric measured (None: not finite)
    metric_drop: float | None = None
    fidelity: dict[str, Any] | None = None
    speedup_vs_baseline: float | None = None
    speedup_vs_fp32_same_runtime: float | None = None
    slower_than_fp32: bool | None = None  # more than 5 % slower than fp32 on the same runtime
    speed_verdict: str | None = None  # "faster" | "same" (within ±5 %) | "slower", vs fp32 on the same runtime
    deployable: bool = True
    rejected_reason: str | None = None
    measured: bool = True  # False when this machine cannot run the variant (e.g. TensorRT without a GPU)
    not_measured_reason: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)  # what the runtime says it ran
    notes: list[str] = field(default_factory=list)
    load_ms: float | None = None  # cold load of the model file by its runtime
    first_inference_ms: float | None = None  # the first call after loading (batch 1)
    latency_samples_ms: list[float] = field(default_factory=list)  # raw per-call times behind latency_ms
    energy: dict[str, Any] = field(default_factory=dict)  # energy per inference, where the device exposes it

    @classmethod
    def of(cls, artifact: Artifact) -> VariantRow:
        """The report row of ``artifact`` before it is measured."""
        return cls(
            name=artifact.name,
            runtime=artifact.runtime,
            precision=artifact.precision,
            techniques=list(artifact.techniques),
            artifact=artifact.artifact,
            size_bytes=artifact.size_bytes,
            params=artifact.params,
            sparsity=artifact.sparsity,
            notes=list(artifact.notes),
        )


@dataclass
class Report:
    command: str
    model: dict[str, Any]
    machine: dict[str, Any]
    baseline: VariantRow | None = None
    variants: list[VariantRow] = field(default_factory=list)
    recommended: str | None = None
    recommendation_reason: str | None = None
    budget: dict[str, Any] = field(default_factory=dict)  # the fidelity gate's thresholds
    data: dict[str, Any] = field(default_factory=dict)  # which data the figures come from
    techniques: dict[str, Any] = field(default_factory=dict)  # per-technique measured facts
    warnings: list[str] = field(default_factory=list)
    timer_calibration: dict[str, Any] = field(default_factory=dict)  # bench --calibrate-timer: vs the runtimes' tools
    device: dict[str, Any] = field(default_factory=dict)  # device profile: facts, sensors, throttling (bench)
    schema: int = SCHEMA
    edgekit_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """JSON with NaN forbidden: a non-finite figure is written as null."""
        plain = json.loads(json.dumps(self.to_dict(), default=_json_default))
        return json.dumps(finite(plain), indent=2, allow_nan=False) + "\n"

    def relative_to(self, root: Path, shown: Path) -> None:
        """Replace ``root`` (a temporary folder) by ``shown`` in every string of the report, so
        that no temporary path leaks into what is shipped."""
        prefixes = sorted({str(root), str(Path(root).absolute()), str(Path(root).resolve())}, key=len, reverse=True)

        def fix(obj: Any) -> Any:
            if isinstance(obj, str):
                for p in prefixes:
                    if p in obj:
                        obj = obj.replace(p + "/", "").replace(p, str(shown))
                return obj
            if isinstance(obj, dict):
                return {k: fix(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [fix(v) for v in obj]
            return obj

        for row in self.rows():
            row.describe = fix(row.describe)
            row.notes = fix(row.notes)
        self.warnings = fix(self.warnings)
        self.techniques = fix(self.techniques)

    def rows(self) -> list[VariantRow]:
        return ([self.baseline] if self.baseline else []) + self.variants

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """A report read back from its JSON (for example one measured on a device)."""

        def row(r: dict[str, Any] | None) -> VariantRow | None:
            known = VariantRow.__dataclass_fields__
            return VariantRow(**{k: v for k, v in r.items() if k in known}) if r else None

        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("baseline", "variants")}
        variants = [v for r in d.get("variants", []) if (v := row(r)) is not None]
        return cls(**fields, baseline=row(d.get("baseline")), variants=variants)

    def row(self, name: str) -> VariantRow:
        for r in self.rows():
            if r.name == name:
                return r
        raise KeyError(name)


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json`` (generated from :class:`Report`)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Report).json_schema(mode="serialization")
    schema["title"] = "edgekit report.json"
    return schema


def _json_default(obj: object) -> object:
    if isinstance(obj, Path):
        return obj.as_posix()
    if hasattr(obj, "item"):
        return obj.item()  # numpy scalars
    raise TypeError(f"cannot serialise {type(obj).__name__}")


NEAR_CHANCE_POINTS = 5.0


def chance_warnings(report: Report, data: Any) -> list[str]:
    """A warning when fp32 itself scores near chance on the labels: the labels probably do not
    match the model's outputs, and every variant would look faithful to a wrong answer."""
    base = report.baseline
    labels = getattr(data, "labels", None)
    if base is None or labels is None or not base.metric or base.metric.get("name") != "accuracy":
        return []
    value = base.metric.get("value")
    if value is None or len(labels) == 0:
        return []
    import numpy as np

    _, counts = np.unique(np.asarray(labels), return_counts=True)
    chance = 100.0 * counts.max() / counts.sum()
    if value > chance + NEAR_CHANCE_POINTS:
        return []
    return [
        f"fp32 itself scores {value:.1f} % accuracy on the labels, near chance ({chance:.1f} % by always "
        "answering the most frequent class): check that 'y' matches the model's outputs"
    ]


def machine_info(threads: int) -> dict[str, Any]:
    from edgekit.devices.detect import cpu_name, machine
    from edgekit.runtimes.openvino import bf16_support, cpu_bf16_flags

    info = machine()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
        "threads_used": threads,
        "arch": platform.machine(),
        "isa": info["isa"],
        "python": platform.python_version(),
        "bf16_flags": cpu_bf16_flags(),
        "bf16": bf16_support()[1],
    }


def _scalar(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def extra_batches(report: Report) -> list[str]:
    """Batch sizes measured beyond the first (they get a p50 column each)."""
    base = report.baseline
    return list(base.latency_by_batch)[1:] if base else []


def several_thread_counts(report: Report) -> bool:
    """Whether each variant was timed at several thread counts (then a ``thr`` column says which
    count its figures are from)."""
    return len(report.machine.get("threads_tried") or ()) > 1


def header(report: Report) -> list[str]:
    first = (report.baseline.latency_ms or {}).get("batch", 1) if report.baseline else 1
    cols = list(HEADER)
    cols[3:6] = [f"p50 b{first}", f"p99 b{first}", "× fp32"]
    thr = ["thr"] if several_thread_counts(report) else []
    return cols[:6] + thr + [f"p50 b{b}" for b in extra_batches(report)] + cols[6:]


def table_rows(report: Report) -> list[list[str]]:
    """One row of text per variant: the table printed by the CLI and written to report.md."""
    out = []
    for r in report.rows():
        lat = r.latency_ms or {}
        fid = r.fidelity or {}
        metric = f"{r.metric['value']:.3f}" if r.metric else "—"
        if r.deployable:
            verdict = "baseline" if r is report.baseline else "ok"
        else:
            verdict = "REJECTED: " + (r.rejected_reason or "")
        if not r.measured:
            verdict = "not measured: " + (r.not_measured_reason or "")
        if r.speed_verdict == "slower":
            verdict += " (SLOWER than fp32 on this runtime)"
        elif r.speed_verdict == "same":
            verdict += " (no faster than fp32 here)"
        if r.name == report.recommended:
            verdict += " ← recommended"
        out.append(
            [
                r.name,
                r.runtime,
                r.precision,
                _fmt(lat.get("p50")),
                _fmt(lat.get("p99")),
                _fmt(r.speedup_vs_fp32_same_runtime, ".2f"),
                *([str(r.threads or "—")] if several_thread_counts(report) else []),
                *(_fmt((r.latency_by_batch.get(b) or {}).get("p50")) for b in extra_batches(report)),
                "—" if r.size_bytes is None else f"{r.size_bytes / 1024:.0f}",
                metric,
                _fmt(r.metric_drop, "+.2f"),
                _fmt(fid.get("top1_agreement"), ".4f"),
                _fmt(fid.get("sqnr_db"), ".1f"),
                verdict,
            ]
        )
    return out


HEADER = [
    "variant",
    "runtime",
    "prec",
    "p50 ms",
    "p99 ms",
    "× fp32",
    "KiB",
    "metric",
    "drop",
    "top1 agr",
    "SQNR dB",
    "verdict",
]


def to_markdown(report: Report) -> str:
    lines = ["# edgekit report\n", f"`{report.command}`\n"]
    m = report.model
    sha = str(m.get("sha256", ""))[:12]
    lines.append(f"Model: `{m.get('source')}` (sha256 {sha}…, task {m.get('task')}, {m.get('params')} params)  ")
    mc = report.machine
    isa = ", ".join(mc.get("isa", []))
    tried = mc.get("threads_tried") or [mc.get("threads_used")]
    threads = f"timed at {'/'.join(map(str, tried))} threads" if len(tried) > 1 else f"{tried[0]} thread(s) used"
    lines.append(f"Machine: {mc.get('cpu')}, {mc.get('cores')} cores, {threads}, ISA {isa}  ")
    if report.data:
        lines.append(f"Data: {report.data}  ")
    lines.append(f"Gate: {report.budget}\n")
    cols = header(report)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for row in table_rows(report):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Latency at batch "
        + str((report.baseline.latency_ms or {}).get("batch", 1) if report.baseline else 1)
        + " (b8 = batch 8, …): median of interleaved runs, in ms; `× fp32` = fp32 p50 / variant p50 at the first"
        " batch on the same runtime (>1 is faster)."
        + (
            f" Each variant was timed at {'/'.join(map(str, report.machine['threads_tried']))} threads, side by"
            " side; `thr` is the count it was fastest with, which its figures are from."
            if several_thread_counts(report)
            else ""
        )
    )
    lines.extend(_shape_table(report))
    if report.recommended:
        lines.append(f"\n**Recommended:** `{report.recommended}` — {report.recommendation_reason}")
    for r in report.rows():
        for note in r.notes:
            lines.append(f"- `{r.name}`: {note}")
    if report.techniques:
        lines.append("\n## Techniques (scalar facts; everything is in report.json)\n")
        for name, facts in report.techniques.items():
            flat = facts if isinstance(facts, dict) else {"value": facts}
            shown = {k: v for k, v in flat.items() if not isinstance(v, dict | list)}
            lines.append(f"- **{name}**: " + "; ".join(f"{k} = {_scalar(v)}" for k, v in shown.items()))
    if report.timer_calibration:
        from edgekit.benchmarks.calibrate import markdown

        lines.extend(markdown(report.timer_calibration))
    for w in report.warnings:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> Path | None:
    """Latency (p50) against metric for every measured variant; one colour per runtime."""
    rows = [r for r in report.rows() if r.latency_ms and r.metric]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colours = {"onnxruntime": "tab:blue", "openvino": "tab:purple", "tensorrt": "tab:green", "torch": "tab:orange"}
    for r in rows:
        assert r.latency_ms is not None and r.metric is not None
        marker = "o" if r.deployable else "x"
        ax.scatter(r.latency_ms["p50"], r.metric["value"], c=colours.get(r.runtime, "gray"), marker=marker, s=60)
        ax.annotate(
            r.name, (r.latency_ms["p50"], r.metric["value"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    from matplotlib.lines import Line2D

    present = sorted({r.runtime for r in rows})
    handles = [Line2D([], [], marker="o", ls="", color=colours.get(rt, "gray"), label=rt) for rt in present]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xlabel(f"p50 latency (ms), batch {rows[0].latency_ms['batch']}")  # type: ignore[index]
    ax.set_ylabel(rows[0].metric["name"])  # type: ignore[index]
    ax.set_title("edgekit: latency vs metric (x = rejected by the gate)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_all(report: Report, directory: Path) -> dict[str, Path]:
    """Write report.json, report.md and latency.png into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {"json": directory / "report.json", "md": directory / "report.md"}
    from edgekit.io.interrupts import deferred

    out["json"].write_text(report.to_json())
    out["md"].write_text(to_markdown(report))
    with deferred():  # matplotlib's native text layout crashes when a signal interrupts it
        png = plot(report, directory / "latency.png")
    if png:
        out["png"] = png
    return out


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"edgekit — {report.model.get('source')}", show_lines=False)
    for h in header(report):
        table.add_column(h, overflow="fold")
    for r, cells in zip(report.rows(), table_rows(report), strict=True):
        style = None if r.deployable and r.measured else "red" if not r.deployable else "dim"
        if r.slower_than_fp32:
            style = "yellow"
        table.add_row(*(escape(c) for c in cells), style=style)
    console = Console(stderr=False, width=max(170, Console().width))
    console.print(table)
    if report.recommended:
        console.print(f"recommended: [bold]{report.recommended}[/bold] — {escape(report.recommendation_reason or '')}")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")


def _shape_table(report: Report) -> list[str]:
    """``bench --shapes``: p50 (ms) of each variant at each shape, one row per shape."""
    rows = [r for r in report.rows() if r.latency_by_shape]
    if not rows:
        return []
    labels = list(rows[0].latency_by_shape)
    out = ["", "Latency at the `--shapes` shapes (p50 ms, batch = the shape's first axis):", ""]
    out.append("| shape | role | " + " | ".join(r.name for r in rows) + " |")
    out.append("|" + "---|" * (len(rows) + 2))
    for key in labels:
        role = rows[0].latency_by_shape[key].get("role", "")
        cells = [_fmt((r.latency_by_shape.get(key) or {}).get("p50")) for r in rows]
        out.append(f"| {key} | {role} | " + " | ".join(cells) + " |")
    return out
