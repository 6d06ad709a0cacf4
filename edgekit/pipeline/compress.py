"""``compress``: load, export, bind the data once, apply the techniques, measure every artifact
against the fp32 baseline, and write a verified bundle atomically.

The data path: the data is bound to the exported model's input names once, right after export;
the calibration set is capped once, by the steps' ``calib_size``, before the technique context is
built; the bundle keeps those exact samples (``data/calib.npz``) so that doctor, QAT and a device
calibrate on what compress used.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.benchmarks.backends import for_techniques
from edgekit.benchmarks.gate import Budget
from edgekit.benchmarks.report import Report, VariantRow
from edgekit.errors import BadInputError, EdgekitError
from edgekit.io.splits import CALIB_SIZE, Splits
from edgekit.pipeline import steps as st
from edgekit.pipeline.options import DataOptions, MeasureOptions, ModelOptions, OutputOptions, Progress, threads_info
from edgekit.runtimes.table import folder as runtime_folder

CALIB_FILE = "data/calib.npz"
EVAL_FILE = "data/eval.npz"


@dataclass
class CompressResult:
    bundle: Path
    report: Report
    report_path: Path
    budget_error: str | None = None  # set when a --max-drop budget was given and nothing met it (exit 3)


@dataclass
class CompressJob:
    """One compress call: the model, its steps and every option group."""

    model: Path
    steps: Sequence[object]
    out: Path | None = None
    overwrite: bool = False
    seed: int = 0
    target: str | None = None
    budget: Budget = field(default_factory=Budget)
    load: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    measure: MeasureOptions = field(default_factory=MeasureOptions)
    command: str = "edgekit compress"
    extra_inputs: Sequence[str | Path] = ()

    @property
    def bundle(self) -> Path:
        return Path(self.out) if self.out else self.model.with_name(self.model.stem + ".bundle")

    @property
    def inputs(self) -> list[Any]:
        return [self.model, self.data.data, self.data.calib_data, *self.extra_inputs]


@dataclass
class Prepared:
    """The exported fp32 model and the data bound to it, ready for the techniques."""

    loaded: Any
    splits: Splits
    baseline: Artifact
    input_specs: list[Any]
    task: str
    output: Any
    ctx: Any
    threads: int
    threads_source: str

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]


def calib_size(steps: Sequence[object]) -> int:
    """How many calibration samples the steps ask for (the largest ``calib_size``), else the default."""
    sizes = [int(n) for s in steps if isinstance(n := getattr(s, "calib_size", None), int)]
    return max(sizes) if sizes else CALIB_SIZE


def run(job: CompressJob, progress: Progress) -> CompressResult:
    from edgekit.benchmarks.gate import budget_verdict
    from edgekit.devices.detect import default_target, target_runtime
    from edgekit.io.atomic import atomic_dir
    from edgekit.io.models import load_model
    from edgekit.io.outputs import check_output_dir
    from edgekit.io.splits import resolve_data

    threads, threads_source = job.measure.resolved_threads()
    job.output.check()
    # Without --target, recommend the fastest deployable variant on any runtime this machine runs.
    target_rt = target_runtime(job.target) if job.target else None
    job = dataclasses.replace(job, model=Path(job.model), target=job.target or default_target())
    bundle = job.bundle
    check_output_dir(bundle, inputs=job.inputs, overwrite=job.overwrite)
    model_steps, graph_steps = st.split_steps(job.steps)
    st.check_step_runtimes(job.steps)
    progress(f"loading {job.model}")
    loaded = load_model(job.model, **dataclasses.asdict(job.load))
    if model_steps and not (loaded.module is not None and loaded.eager):
        raise BadInputError(
            f"{', '.join(st.label(s) for s in model_steps)} need(s) the torch model as a module; "
            "give a reference model, a state_dict with --arch, or a pickled module with --trust-pickle"
        )
    d = job.data
    splits = resolve_data(loaded, d.data, d.calib, job.seed, d.calib_data, calib_size(job.steps))
    with atomic_dir(bundle, overwrite=job.overwrite, inputs=job.inputs) as root:
        prep = prepare(job, loaded, splits, root, threads, threads_source, progress)
        artifacts, not_built = build_artifacts(prep, model_steps, graph_steps, root, progress)
        report, paths = measure_and_report(job, prep, artifacts, not_built, root, target_rt, progress)
        write_manifest(job, prep, artifacts, report, root, target_rt)
    report_path = bundle / paths["json"].name
    verdict = budget_verdict(job.budget, report.variants, str(report_path))
    return CompressResult(bundle=bundle, report=report, report_path=report_path, budget_error=verdict)


def prepare(
    job: CompressJob, loaded: Any, splits: Splits, root: Path, threads: int, threads_source: str, progress: Progress
) -> Prepared:
    """Export and check the fp32 model, bind the data to its inputs (once), find the task and the
    output kind, and build the techniques' context."""
    from edgekit.benchmarks import harness
    from edgekit.compress.base import Context
    from edgekit.export.onnx import export_onnx, model_params
    from edgekit.io.data import check_labels
    from edgekit.io.splits import infer_task
    from edgekit.runtimes import get_runtime
    from edgekit.runtimes.base import specs_from_onnx

    work = root / ".work"
    work.mkdir()
    if loaded.format == "onnx":
        progress("checking the ONNX model (opset, shapes, dynamic batch) and running it on real samples")
    else:
        progress("exporting the fp32 model to ONNX (checked against torch)")
    fp32_path = root / "model.fp32.onnx"
    export_onnx(loaded, fp32_path, sample=splits.eval.head(16).inputs)
    specs = specs_from_onnx(fp32_path)[0]
    names = [s.name for s in specs]
    splits = splits.map(lambda ds: dataclasses.replace(ds, inputs=ds.bind(names), lengths=ds.bind_lengths(names)))

    probe_rt = get_runtime("onnxruntime", threads=threads).load(fp32_path)
    probe = np.asarray(probe_rt.run(splits.eval.head(2).inputs)[0])
    task = infer_task(splits, probe, (loaded.meta or {}).get("task"))
    detected = harness.detect_output(probe_rt, splits.eval.head(harness.EVAL_BATCH), meta=loaded.meta)
    output = job.output.resolve(detected)
    task = {"embedding": "embedding", "sequence": "sequence"}.get(output.kind, task)
    progress(f"output kind: {output.summary()}")
    splits = splits.map(lambda ds: dataclasses.replace(ds, task=task))
    width = int(np.prod(probe.shape[1:])) if probe.ndim > 1 else 1
    source = str(job.data.data) if job.data.data is not None else "data"
    for part in (splits.train, splits.eval):
        if part is not None:
            check_labels(part, task, width, source=source)
    budget = job.budget
    ctx = Context(
        workdir=work,
        calib=splits.calib,
        eval=splits.eval,
        train=splits.train,
        seed=job.seed,
        task=task,
        budget=budget if budget.explicit else None,
        progress=progress,
        baseline=fp32_path,
        threads=threads,
        output=output,
        backends=for_techniques(),
    )
    baseline = Artifact(
        name="ort-fp32",
        runtime="onnxruntime",
        precision="fp32",
        path=fp32_path,
        size_bytes=fp32_path.stat().st_size,
        params=model_params(fp32_path),
        artifact="model.fp32.onnx",
    )
    return Prepared(loaded, splits, baseline, specs, task, output, ctx, threads, threads_source)


def build_artifacts(
    prep: Prepared, model_steps: Sequence[object], graph_steps: Sequence[object], root: Path, progress: Progress
) -> tuple[list[Artifact], list[VariantRow]]:
    """Every artifact of the run, placed in the bundle (the baseline first), and the "not built" rows."""
    from edgekit.compress.quantize_ov import ov_fp32_ir

    artifacts = [prep.baseline]
    made: list[Artifact] = []
    start = prep.baseline
    if model_steps:
        sample = prep.splits.eval.head(16).inputs
        axes = (prep.loaded.meta or {}).get("dynamic_axes")
        transformed, made = st.run_model_steps(
            model_steps, prep.loaded.module, prep.ctx, root, sample, progress, dynamic_axes=axes
        )
        if transformed is not None:
            artifacts.append(transformed)
            start = transformed

    progress("converting the fp32 model to OpenVINO IR")
    not_built: list[VariantRow] = []
    try:
        made.insert(0, ov_fp32_ir(prep.baseline.path, prep.ctx.workdir / "ov-fp32.xml"))
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:
        not_built.append(st.not_built("ov-fp32", "openvino", [], st.first_line(exc)))
        progress(f"ov-fp32: {not_built[-1].not_measured_reason}")
    graph_made, failed = st.run_graph_steps(graph_steps, start, prep.ctx)
    made.extend(graph_made)
    not_built.extend(failed)
    names = [v.name for v in made]
    if len(set(names)) != len(names):
        raise BadInputError(f"two steps made variants with the same name ({names}); keep one int8/fp16 step per mode")
    for v in made:
        v.place(root, runtime_folder(v.runtime))
    shutil.rmtree(prep.ctx.workdir)
    return artifacts + made, not_built


def measure_and_report(
    job: CompressJob,
    prep: Prepared,
    artifacts: list[Artifact],
    not_built: list[VariantRow],
    root: Path,
    target_rt: str | None,
    progress: Progress,
) -> tuple[Report, dict[str, Path]]:
    """The shape profile and TensorRT build script, the bundle's data files, and the measured report."""
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import chance_warnings, machine_info, write_all
    from edgekit.bundle.tensorrt import write_build_script
    from edgekit.bundle.verify import record_fp32_outputs
    from edgekit.export.shapes import describe as describe_shapes
    from edgekit.export.shapes import profile_from_data
    from edgekit.io.data import save_npz

    splits, m = prep.splits, job.measure
    prep_profiles = profile_from_data(prep.input_specs, [splits.calib, splits.eval], batches=m.batches,
                                      given=job.data.shapes)  # fmt: skip
    trt = [a for a in artifacts if a.runtime == "tensorrt"]
    try:
        write_build_script(root, trt, prep_profiles)
    except EdgekitError as exc:
        artifacts[:] = [a for a in artifacts if a.runtime != "tensorrt"]
        not_built.extend(st.not_built(a.name, "tensorrt", a.techniques, str(exc)) for a in trt)
        for a in trt:
            a.path.unlink(missing_ok=True)
    (root / "data").mkdir()
    _save_eval(root / EVAL_FILE, splits.eval)
    save_npz(splits.calib, root / CALIB_FILE)  # doctor, QAT and a device calibrate on these very samples
    record_fp32_outputs(root, prep.baseline.path, splits.eval.inputs, prep.threads)  # the device's smoke test

    report = Report(
        command=job.command,
        model={
            "source": str(job.model),
            "sha256": prep.loaded.sha256,
            "params": prep.baseline.params,
            "task": prep.task,
            "format": prep.loaded.format,
            "inputs": [{"name": n} for n in prep.input_names],
        },
        machine={**machine_info(prep.threads), **threads_info(prep.threads, prep.threads_source)},
        budget=job.budget.describe(_primary(prep.task) if splits.eval.labels is not None else None),
        data={**splits.info, "calib_sha256": splits.calib.sha256(), "eval_sha256": splits.eval.sha256()},
        techniques=dict(prep.ctx.records),
    )
    if splits.calib.directional_only:
        report.warnings.append("calibration and evaluation used random inputs: accuracy figures are directional only")
    harness.fill(report, artifacts, splits.eval, target_runtime=target_rt, budget=job.budget, batches=m.batches,
                 threads=prep.threads, thread_choices=report.machine["threads_tried"], budget_s=m.time_budget_s,
                 with_memory=m.with_memory, output=prep.output,
                 progress=progress)  # fmt: skip
    report.variants.extend(not_built)
    report.model["shapes"] = describe_shapes(prep_profiles)
    progress("writing the report, plot and manifest")
    report.relative_to(root, job.bundle)
    report.warnings.extend(chance_warnings(report, splits.eval))
    return report, write_all(report, root)


def write_manifest(
    job: CompressJob, prep: Prepared, artifacts: list[Artifact], report: Report, root: Path, target_rt: str | None
) -> None:
    """The manifest: provenance, recipe, calibration (with its samples' file), model, variants, hashes."""
    from edgekit.bundle import manifest as mf
    from edgekit.config import Recipe, recipe_to_dict

    calib = prep.splits.calib
    target = job.target or ""
    manifest = mf.Manifest(
        source={"path": str(job.model), "sha256": prep.loaded.sha256},
        recipe=recipe_to_dict(Recipe(steps=list(job.steps), seed=job.seed, target=target,
                                     max_drop=job.budget.max_drop)),  # fmt: skip
        calibration={
            "sha256": calib.sha256(),
            "n": len(calib),
            "seed": job.seed,
            "directional_only": calib.directional_only,
            "file": CALIB_FILE,
        },
        target=target,
        model={
            "task": prep.task,
            "inputs": prep.input_names,
            "metric": report.budget.get("metric"),
            "shapes": report.model["shapes"],
            "target_given": target_rt is not None,  # without --target, recommend across runtimes
            "output_kind": prep.output.kind,
            "decode": prep.output.decode,
            "blank": prep.output.blank,
            "user_metric": prep.output.metric,
        },
        budget=dataclasses.asdict(job.budget),
    )
    fastest = {r.name: r.threads for r in report.rows() if r.threads}
    # The thread count each variant was fastest with here: the count to deploy it with on a
    # machine like this one (bench and the device check time it again where it runs).
    manifest.variants = [{**a.manifest_entry(), **({"threads": fastest[a.name]} if a.name in fastest else {})}
                         for a in artifacts]  # fmt: skip
    mf.write_schemas(root)
    manifest.add_files(root, [p for p in root.rglob("*") if p.is_file()])
    mf.write(root, manifest)


def _primary(task: str) -> str | None:
    from edgekit.benchmarks.accuracy import PRIMARY

    return PRIMARY.get(task)


def _save_eval(path: Path, ds: Any) -> None:
    """The evaluation samples, written exactly as bundles have always held them."""
    arrays = dict(ds.inputs)
    arrays.update({f"{k}_length": v for k, v in ds.lengths.items()})
    if ds.labels is not None:
        arrays["y"] = ds.labels
    with open(path, "wb") as f:
        np.savez(f, **arrays)
