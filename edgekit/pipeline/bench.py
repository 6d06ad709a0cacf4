"""``bench``: verify a bundle's hashes, then measure its variants with the same measuring path
and gate as compress (:func:`edgekit.benchmarks.harness.measure`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.benchmarks.gate import Budget
from edgekit.benchmarks.report import Report
from edgekit.errors import BadInputError
from edgekit.io.data import bundle_samples
from edgekit.pipeline.options import MeasureOptions, OutputOptions, Progress, threads_info


@dataclass
class BenchJob:
    """One bench call: the bundle, which runtimes, and the option groups."""

    bundle: Path
    runtimes: Sequence[str] | None = None
    budget: Budget | None = None
    output: OutputOptions = field(default_factory=OutputOptions)
    measure: MeasureOptions = field(default_factory=lambda: MeasureOptions(time_budget_s=2.0))
    out: Path | None = None
    command: str = "edgekit bench"
    calibrate_timer: bool = False
    shapes: Mapping[str, Any] | None = None  # {input: (min, opt, max)}: also timed at each shape


def run(job: BenchJob, progress: Progress) -> tuple[Report, Path]:
    from edgekit.bundle import manifest as mf
    from edgekit.io.atomic import atomic_dir
    from edgekit.io.outputs import check_output_dir

    threads, threads_source = job.measure.resolved_threads()
    job.output.check()
    root = Path(job.bundle)
    manifest = mf.read(root, verify=True)
    if not manifest.variants:
        raise BadInputError(f"{root}/manifest.json lists no variants; rebuild the bundle with this edgekit")
    out_dir = Path(job.out) if job.out else root / "bench"
    inputs = [root / mf.MANIFEST, *(root / f.path for f in manifest.files)]
    check_output_dir(out_dir, inputs=inputs, overwrite=True)
    if job.runtimes:
        from edgekit.runtimes import names as runtime_names

        bad = sorted(set(job.runtimes) - set(runtime_names()))
        if bad:
            raise BadInputError(f"unknown runtime(s) {', '.join(bad)}; choose from {', '.join(runtime_names())}")
    report = measure_bundle(job, root, manifest, threads, threads_source, progress)
    with atomic_dir(out_dir, overwrite=True, inputs=inputs) as tmp:
        from edgekit.benchmarks.report import write_all

        write_all(report, tmp)
    return report, out_dir / "report.json"


def measure_bundle(
    job: BenchJob, root: Path, manifest: Any, threads: int, threads_source: str, progress: Progress
) -> Report:
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import machine_info
    from edgekit.bundle.candidates import candidates as bundle_candidates
    from edgekit.devices import probe
    from edgekit.devices.detect import target_runtime

    variants = manifest.variants
    wanted = set(job.runtimes) if job.runtimes else {v["runtime"] for v in variants}
    ds = bundle_samples(root, manifest.model)
    candidates = bundle_candidates(root, manifest, wanted)
    if job.shapes and candidates:
        from edgekit.benchmarks.at_shapes import check

        check(candidates, ds, job.shapes)
    budget = job.budget or Budget(**manifest.budget)
    report = Report(
        command=job.command,
        model={
            "source": manifest.source.get("path"),
            "sha256": manifest.source.get("sha256"),
            "params": next((v.get("params") for v in variants if v["name"] == "ort-fp32"), None),
            "task": ds.task,
        },
        machine={**machine_info(threads), **threads_info(threads, threads_source)},
        budget=budget.describe(manifest.model.get("metric") if ds.labels is not None else None),
        data={"source": "bundle data/eval.npz", "eval_n": len(ds), "eval_sha256": ds.sha256()},
    )
    output = job.output.from_bundle(manifest.model)
    if output is not None:
        progress(f"output kind: {output.summary()}")
    if output is not None and manifest.model.get("user_metric") and not job.output.metric:
        report.warnings.append(
            f"compress judged with --metric {manifest.model['user_metric']}; bench does not import code named "
            "in a bundle: pass --metric again to use it"
        )
    before = probe.sensors()
    m = job.measure
    target_rt = target_runtime(manifest.target) if manifest.model.get("target_given", True) else None
    harness.fill(report, candidates, ds, target_runtime=target_rt, budget=budget, batches=m.batches, threads=threads,
                 thread_choices=report.machine["threads_tried"], budget_s=m.time_budget_s,
                 with_memory=m.with_memory, output=output, progress=progress)  # fmt: skip
    report.warnings.extend(f"{f} is in the bundle but not in its manifest; ignored" for f in manifest.extra_files)
    if job.shapes:
        from edgekit.benchmarks.at_shapes import time_at_shapes
        from edgekit.export.shapes import describe

        report.data["shapes"] = describe(job.shapes)
        time_at_shapes(report.rows(), candidates, ds, job.shapes, threads=threads, budget_s=m.time_budget_s,
                       progress=progress)  # fmt: skip
    if job.calibrate_timer:
        from edgekit.benchmarks.calibrate import calibrate

        progress("calibrating the timer against benchmark_app / onnxruntime_perf_test")
        chosen = [v for v in variants if v["name"] in {c.name for c in candidates}]
        report.timer_calibration = calibrate(chosen, root, ds, threads=threads, seconds=m.time_budget_s)
    probe.profile(report, candidates, ds, threads=threads, before=before, progress=progress)
    return report
