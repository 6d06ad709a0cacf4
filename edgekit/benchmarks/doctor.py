"""``edgekit doctor``: why a compressed variant is inaccurate or slow.

For each variant of a bundle: how far its outputs are from fp32, what the runtime says it really
computes in INT8 (kernels after graph optimisation, OpenVINO's per-layer precisions), which layers
the graph quantized, and — for INT8 — each layer's sensitivity (output SQNR with that layer alone
quantized, lowest first), with plain-language hints about speed on this CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

TOP_LAYERS = 8
RANK_SAMPLES = 64


def _outputs(runtime: Any, data: Dataset) -> np.ndarray:
    arrays = data.bind([s.name for s in runtime.inputs])
    return np.concatenate(
        [np.asarray(runtime.run({k: v[i : i + 64] for k, v in arrays.items()})[0]) for i in range(0, len(data), 64)]
    )


def _hints(
    variant: dict[str, Any],
    says: dict[str, Any],
    graph: dict[str, Any],
    isa: list[str],
    measured: dict[str, Any] | None,
    on_cpu: bool = True,
) -> list[str]:
    """Plain-language hints; ``on_cpu`` says whether the variant's runtime computes on this CPU
    (its ISA then decides INT8 and FP16 speed)."""
    hints: list[str] = []
    precision = variant["precision"]
    if precision in ("int8", "mixed"):
        if not {"avx512_vnni", "avx_vnni", "amx_tile"} & set(isa) and on_cpu:
            hints.append(
                "this CPU has no VNNI: an INT8 dot product costs several instructions, so INT8 gains are small"
            )
        if graph.get("ConvInteger"):
            hints.append("ConvInteger (dynamic INT8 convolution) is slow on CPUs: restrict dynamic INT8 to MatMul/Gemm")
        compute = says.get("compute_ops_by_precision") or says.get("ops_by_precision") or {}
        floats = sum(n for p, n in compute.items() if p in ("f32", "fp32", "bf16", "f16"))
        if floats:
            hints.append(f"the runtime still computes {floats} layer(s) in float: {compute}")
        if graph.get("float_weighted") or graph.get("float"):
            kept = graph.get("float_weighted") or graph.get("float")
            hints.append(f"weighted layers left in float by the graph: {kept}")
    if precision == "fp16" and on_cpu:
        hints.append(
            "CPUs here have no fp16 arithmetic: weights are stored in fp16 and computed in fp32 (size, not speed)"
        )
    if says.get("inference_precision") == "bf16":
        hints.append("OpenVINO computes this model in bf16 (its default on CPUs with AVX512-BF16/AMX)")
    if measured and measured.get("speed_verdict") in ("slower", "same"):
        lat = measured.get("latency_ms") or {}
        if lat.get("p50", 1.0) < 0.2:
            hints.append(
                f"p50 {lat.get('p50'):.3f} ms at batch {lat.get('batch')}: per-call overhead dominates so small a "
                "model; compare at a larger batch (edgekit bench --batch 1,32)"
            )
    return hints


def diagnose(
    bundle: str | Path,
    *,
    variants: Sequence[str] | None = None,
    threads: int = 1,
    rank_layers: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Diagnose every variant of ``bundle`` (or those named). Verifies the bundle's hashes first."""
    import json

    from edgekit.benchmarks.accuracy import fidelity
    from edgekit.benchmarks.backends import REFERENCE_RUNTIME, for_techniques
    from edgekit.benchmarks.harness import cannot_run
    from edgekit.bundle import manifest as mf
    from edgekit.devices.detect import machine
    from edgekit.io.data import load_npz
    from edgekit.runtimes import get_runtime, runtime_for

    root = Path(bundle)
    manifest = mf.read(root, verify=True)
    known = {v["name"]: v for v in manifest.variants}
    wanted = list(variants) if variants else [n for n in known if n != "ort-fp32"]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise BadInputError(f"no variant {unknown} in {root}; its variants are: {', '.join(known)}")
    task = manifest.model.get("task", "unknown")
    data = load_npz(root / "data" / "eval.npz", task=task)
    fp32 = root / known["ort-fp32"]["artifact"]
    reference = get_runtime(REFERENCE_RUNTIME, threads=threads).load(fp32)
    data = Dataset(inputs=data.bind([s.name for s in reference.inputs]), labels=data.labels, task=task)
    ref = _outputs(reference, data)
    report_path = root / "report.json"
    measured = {r["name"]: r for r in json.loads(report_path.read_text())["variants"]} if report_path.exists() else {}
    isa = list(machine()["isa"])
    backends = for_techniques().runtimes
    out: dict[str, Any] = {"bundle": str(root), "isa": isa, "variants": []}
    for name in wanted:
        v = known[name]
        path = root / v["artifact"]
        entry: dict[str, Any] = {"name": name, "runtime": v["runtime"], "precision": v["precision"], "hints": []}
        out["variants"].append(entry)
        backend = backends.get(v["runtime"])
        graph: dict[str, Any] = {}
        if backend is not None and backend.summary is not None:
            graph = backend.summary(path)
        entry["graph"] = graph
        reason = cannot_run(v["runtime"])
        says: dict[str, Any] = {}
        if reason:
            entry["not_run"] = reason
        else:
            progress(f"running {name}")
            rt = runtime_for(v["runtime"], v.get("precision"), threads=threads).load(path)
            entry["fidelity"] = fidelity(task, ref, _outputs(rt, data)).as_dict()
            full = rt.describe()
            says = {
                k: full[k]
                for k in (
                    "precision",
                    "inference_precision",
                    "ops",
                    "ops_by_precision",
                    "compute_ops_by_precision",
                    "int8_ops",
                )
                if k in full
            }
            entry["runtime_says"] = says
        if rank_layers and v["precision"] in ("int8", "mixed") and backend is not None and backend.placement:
            progress(f"ranking the layers of {name} by sensitivity")
            entry["layers"] = _rank(
                fp32, data, task, scheme=backend.placement, calib=_calibration(root, manifest, data)
            )
        on_cpu = backend.on_cpu if backend is not None else True
        entry["hints"] = _hints(v, says, graph, isa, measured.get(name), on_cpu)
    return out


def _calibration(root: Path, manifest: Any, data: Dataset) -> Dataset:
    """The samples compress calibrated on (kept in the bundle); the evaluation samples for a bundle
    made before it kept them."""
    from edgekit.io.data import bundle_samples

    rel = manifest.calibration.get("file")
    return bundle_samples(root, manifest.model, rel) if rel else data


def _rank(fp32: Path, data: Dataset, task: str, *, scheme: str, calib: Dataset | None = None) -> list[dict[str, Any]]:
    from edgekit.compress.calibration import calibration_feeds
    from edgekit.compress.sensitivity import layer_sensitivity

    feeds = calibration_feeds(calib if calib is not None else data, fp32, RANK_SAMPLES)
    scores = layer_sensitivity(fp32, None, feeds, data, task, scheme=scheme, max_samples=RANK_SAMPLES)
    return [
        {"node": s.node, "op_type": s.op_type, "score": round(float(s.score), 2), "unit": s.unit}
        for s in scores[:TOP_LAYERS]
    ]


def print_diagnosis(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    for v in result["variants"]:
        fid = v.get("fidelity") or {}
        head = f"[bold]{v['name']}[/bold] ({v['runtime']}, {v['precision']})"
        if fid:
            top1 = fid.get("top1_agreement")
            head += f": cosine {fid['cosine']:.4f}, SQNR {fid['sqnr_db']:.1f} dB" + (
                f", top-1 agreement {top1:.4f}" if top1 is not None else ""
            )
        console.print(head)
        if v.get("not_run"):
            console.print(f"  not run here: {escape(v['not_run'])}")
        says = v.get("runtime_says") or {}
        if says:
            computes = says.get("compute_ops_by_precision") or says.get("ops_by_precision")
            console.print(f"  runtime computes: {escape(str(computes))}")
        if v.get("layers"):
            table = Table("layer", "op", "SQNR alone quantized (dB, lower = more sensitive)", show_edge=False)
            for layer in v["layers"]:
                table.add_row(escape(layer["node"]), layer["op_type"], f"{layer['score']:.1f}")
            console.print(table)
        for hint in v["hints"]:
            console.print(f"  • {escape(hint)}")
        console.print()
