"""The public Python API: ``train``, ``export``, ``compress`` and ``bench``. The CLI calls these.

Every stage checks what it wrote before the next one uses it: the export is compared with torch
on real samples, bundle files are hashed into the manifest, and every variant is measured against
the fp32 baseline on held-out data before it can be recommended.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmarks.gate import Budget
from edgekit.benchmarks.report import Report, VariantRow
from edgekit.errors import BadInputError, EdgekitError
from edgekit.io.data import Dataset
from edgekit.io.splits import infer_task, resolve_data

Progress = Callable[[str], None]
SHAPES_HINT = "NAME:MIN/OPT/MAX (e.g. x:1x3x48x64/1x3x48x320/1x3x48x960)"


def _quiet(_msg: str) -> None:
    return None


# --------------------------------------------------------------------------------------- train
def train(
    name: str,
    out: str | Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    threads: int = 1,
    data_out: str | Path | None = None,
    overwrite: bool = False,
) -> Any:
    """Train reference model ``name`` and save it (TorchScript with its metadata) to ``out``;
    ``data_out`` also writes its held-out split as an ``.npz`` for ``--data``.

    ``out`` is checked before training: an existing file is replaced only with ``overwrite``, and
    the folder must take files. The saved file gets the usual mode (umask), not a private one."""
    import tempfile

    from edgekit import zoo
    from edgekit.io.atomic import atomic_write_bytes
    from edgekit.io.outputs import check_output_file, write_error

    zoo.spec(name)  # validates the name before any work
    out = Path(out)
    if data_out is not None and Path(data_out).resolve() == out.resolve():
        raise BadInputError("--data-out and -o name the same file; choose another --data-out")
    check_output_file(out, overwrite=overwrite)
    if data_out is not None:
        check_output_file(Path(data_out), overwrite=overwrite, flag="--data-out")
    result = zoo.train(name, seed=seed, epochs=epochs, threads=threads)
    # torch.jit.save aborts the whole process when the disk fills up (a C++ exception in a
    # destructor), so the model is serialised in the temp dir and copied into place by Python.
    with tempfile.TemporaryDirectory(prefix="edgekit-train-") as tmp:
        zoo.save(result, Path(tmp) / "model.pt")
        try:
            atomic_write_bytes(out, (Path(tmp) / "model.pt").read_bytes())
        except OSError as exc:
            raise write_error(exc, out.parent) or exc from exc
    if data_out is not None:
        from edgekit.io.data import save_npz

        save_npz(zoo.load_data(name, seed=seed).test, data_out)
    return result


# ------------------------------------------------------------------------------------- export
def export(
    model: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Any:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch axis, checked against
    torch on real samples (reference data, ``--data``, or generated from ``--input-shape``)."""
    from edgekit.export.onnx import export_onnx
    from edgekit.io.models import load_model
    from edgekit.io.outputs import check_output_file, write_error

    check_output_file(out, inputs=[model, data], overwrite=overwrite)
    loaded = load_model(model, arch=arch, trust_pickle=trust_pickle, input_shape=input_shape)
    if loaded.format == "onnx":
        raise BadInputError(f"{model} is already ONNX; 'edgekit compress' takes it as it is")
    calib = "data" if data is not None or (loaded.meta or {}).get("zoo") else "random"
    splits = resolve_data(loaded, data, calib, seed=0)
    sample = splits.eval.head(16).inputs
    try:
        return export_onnx(loaded, Path(out), sample=sample, atol=atol)
    except Exception as exc:
        raise write_error(exc, Path(out).parent) or exc from exc


# ----------------------------------------------------------------------------------- compress
@dataclass
class CompressResult:
    bundle: Path
    report: Report
    report_path: Path
    budget_error: str | None = None  # set when a --max-drop budget was given and nothing met it (exit 3)


MODEL_STAGE = "model"


def _split_steps(steps: Sequence[object]) -> tuple[list[object], list[object]]:
    from edgekit.compress.base import handler_for  # a config's module registers its handler

    model_steps: list[object] = []
    graph_steps: list[object] = []
    for s in steps:
        stage, _ = handler_for(s)
        if stage == MODEL_STAGE:
            if graph_steps:
                raise BadInputError(
                    f"{type(s).__name__} changes the torch model, so it must come before quantization/fp16 steps; "
                    "reorder the recipe"
                )
            model_steps.append(s)
        else:
            graph_steps.append(s)
    names = [_technique(s) for s in model_steps]
    if "qat" in names:
        if names[-1] != "qat":
            raise BadInputError("QAT must be the last model step (pruning and distillation come before it)")
        if graph_steps:
            raise BadInputError("QAT already produces the INT8 variants; drop the int8/fp16 steps from this run")
    return model_steps, graph_steps


def _run_model_steps(
    steps: Sequence[object],
    module: Any,
    ctx: Any,
    root: Path,
    seed: int,
    sample: dict[str, np.ndarray],
    progress: Progress,
    dynamic_axes: Any = None,
) -> tuple[list[str], Path | None, list[Any]]:
    """Apply the torch-level techniques in order. Returns their labels, the fp32 ONNX of the
    transformed model (None after QAT), and the INT8 variants QAT made (empty otherwise)."""
    import torch

    from edgekit.compress.base import handler_for
    from edgekit.export.onnx import export_onnx

    labels: list[str] = []
    for step in steps:
        progress(f"applying {_label(step)}")
        _, fn = handler_for(step)
        torch.manual_seed(seed)
        module = fn(step, module, ctx)
        labels.append(_label(step))
    if _technique(steps[-1]) == "qat":
        from edgekit.compress.qat import qat_variants

        progress("exporting the QAT model (Q/DQ ONNX, OpenVINO IR)")
        return labels, None, qat_variants(module, ctx.workdir, sample)
    tag = "-".join(_short(lbl) for lbl in labels)
    path = root / f"model.fp32-{tag}.onnx"
    progress(f"exporting the {tag} model to ONNX (checked against torch)")
    export_onnx(module, path, sample=sample, dynamic_axes=dynamic_axes)  # the source model's dynamic axes
    return labels, path, []


def _model_step_notes(records: dict[str, Any]) -> list[str]:
    """What the torch-level techniques bought, in words, for the transformed model's row."""
    notes = []
    prune = records.get("prune") or {}
    if prune.get("runtime_benefit"):
        notes.append(f"pruning ({prune.get('label')}): {prune['runtime_benefit']}")
    distill = records.get("distill") or {}
    if distill:
        g = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in distill.items()}
        notes.append(
            f"distilled student: {g.get('student_kd_metric')} with the teacher vs {g.get('student_alone_metric')} "
            f"trained alone on the same data and epochs (teacher {g.get('teacher_metric')}, "
            f"{g.get('param_ratio')}× its parameters)"
        )
    return notes


def _technique(config: object) -> str:
    from edgekit.config import technique_name

    return technique_name(config)


def _label(config: object) -> str:
    label = getattr(config, "label", None)
    if callable(label):
        return str(label())
    from edgekit.config import technique_name

    return technique_name(config)


def _short(label: str) -> str:
    return label.split(":")[0]


def _place(variant: Any, root: Path) -> Path:
    """Move a variant's files into the bundle layout and return the model file's new path."""
    short = variant.name.split("-", 1)[1] if "-" in variant.name else variant.name
    sub = {"onnxruntime": "", "openvino": "openvino", "tensorrt": "tensorrt"}.get(variant.runtime, variant.runtime)
    folder = root / sub if sub else root
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"model.{short}{variant.path.suffix}"
    shutil.move(str(variant.path), dest)
    for extra in variant.extra_files:
        shutil.move(str(extra), dest.with_suffix(extra.suffix))
    variant.extra_files = [dest.with_suffix(e.suffix) for e in variant.extra_files]
    variant.path = dest
    return dest


def _size(variant: Any) -> int:
    return int(variant.path.stat().st_size + sum(p.stat().st_size for p in variant.extra_files))


def _onnx_sparsity(path: Path) -> float | None:
    import onnx
    from onnx import numpy_helper

    if path.suffix != ".onnx":
        return None
    zeros = total = 0
    for init in onnx.load(str(path)).graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim >= 2 and np.issubdtype(arr.dtype, np.floating):
            zeros += int(np.count_nonzero(arr == 0))
            total += arr.size
    return round(zeros / total, 4) if total else None


def compress(
    model: str | Path,
    *,
    steps: Sequence[object] = (),
    data: str | Path | None = None,
    calib: str = "data",
    calib_data: str | Path | None = None,
    target: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    threads: int | None = None,
    budget: Budget | None = None,
    batches: Sequence[int] = (1,),
    time_budget_s: float = 1.0,
    output_kind: str | None = None,
    decode: str | None = None,
    blank: int | None = None,
    metric: str | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    shapes: Mapping[str, Any] | None = None,
    with_memory: bool = True,
    command: str = "edgekit compress",
    progress: Progress = _quiet,
    extra_inputs: Sequence[str | Path] = (),
) -> CompressResult:
    """Compress ``model`` with ``steps`` (technique configs, in order), export, measure every
    variant against the fp32 baseline, and write a verified bundle atomically.

    When the user set a budget and no compressed variant met it, the bundle is still
    written (every variant is in its report) and ``result.budget_error`` says why (CLI exit 3).

    ``output_kind`` (classifier, embedding, sequence, regression, raw), ``decode`` ("ctc" or
    "none") and ``blank`` override how fidelity is measured (detected from the graph and data
    otherwise); ``metric`` ("module:function") is the user's own metric, which then decides.
    ``threads`` defaults to the machine's physical cores.
    """
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import chance_warnings, machine_info, write_all
    from edgekit.bundle import manifest as mf
    from edgekit.bundle.tensorrt import write_build_script
    from edgekit.compress.base import Context
    from edgekit.config import Recipe, recipe_to_dict
    from edgekit.devices.detect import default_target, target_runtime
    from edgekit.export.onnx import export_onnx, model_params
    from edgekit.export.shapes import describe as describe_shapes
    from edgekit.export.shapes import profile_from_data
    from edgekit.io.atomic import atomic_dir
    from edgekit.io.models import load_model

    budget = budget or Budget()
    threads, threads_source = _threads(threads)
    _check_output_options(output_kind, decode, metric)
    # Without --target, recommend the fastest deployable variant on any runtime this machine runs.
    target_rt = target_runtime(target) if target else None
    target = target or default_target()
    src = Path(model)
    bundle = Path(out) if out else src.with_name(src.stem + ".bundle")
    from edgekit.io.outputs import check_output_dir

    inputs = [src, data, calib_data, *extra_inputs]
    check_output_dir(bundle, inputs=inputs, overwrite=overwrite)

    model_steps, graph_steps = _split_steps(steps)
    progress(f"loading {src}")
    loaded = load_model(src, arch=arch, trust_pickle=trust_pickle, input_shape=input_shape)
    if model_steps and not (loaded.module is not None and loaded.eager):
        raise BadInputError(
            f"{', '.join(_label(s) for s in model_steps)} need(s) the torch model as a module; "
            "give a reference model, a state_dict with --arch, or a pickled module with --trust-pickle"
        )
    splits = resolve_data(loaded, data, calib, seed, calib_data)

    with atomic_dir(bundle, overwrite=overwrite, inputs=inputs) as root:
        work = root / ".work"
        work.mkdir()
        if loaded.format == "onnx":
            progress("checking the ONNX model (opset, shapes, dynamic batch) and running it on real samples")
        else:
            progress("exporting the fp32 model to ONNX (checked against torch)")
        fp32_path = root / "model.fp32.onnx"
        sample = splits.eval.head(16).inputs
        exported = export_onnx(loaded, fp32_path, sample=sample)
        input_names = list(exported.input_names)
        splits = splits.map(
            lambda ds: dataclasses.replace(ds, inputs=ds.bind(input_names), lengths=ds.bind_lengths(input_names))
        )
        from edgekit.runtimes import get_runtime

        probe_rt = get_runtime("onnxruntime", threads=threads).load(fp32_path)
        probe = probe_rt.run(splits.eval.head(2).inputs)[0]
        task = infer_task(splits, np.asarray(probe), (loaded.meta or {}).get("task"))
        output = _output_spec(
            harness.detect_output(probe_rt, splits.eval.head(harness.EVAL_BATCH), meta=loaded.meta),
            output_kind,
            decode,
            blank,
            metric,
        )
        task = {"embedding": "embedding", "sequence": "sequence"}.get(output.kind, task)
        progress(f"output kind: {output.summary()}")
        splits = splits.map(lambda ds: dataclasses.replace(ds, task=task))
        from edgekit.io.data import check_labels

        width = int(np.prod(np.asarray(probe).shape[1:])) if np.asarray(probe).ndim > 1 else 1
        for part in (splits.train, splits.eval):
            if part is not None:
                check_labels(part, task, width, source=str(data) if data is not None else "data")
        ctx = Context(
            workdir=work,
            calib=splits.calib,
            eval=splits.eval,
            train=splits.train,
            seed=seed,
            task=task,
            budget=budget if budget.explicit else None,
            progress=progress,
            baseline=fp32_path,
            threads=threads,
            output=output,
        )

        model_labels: list[str] = []
        graph_input = fp32_path
        candidates: list[harness.Candidate] = []
        baseline = harness.Candidate(
            name="ort-fp32",
            runtime="onnxruntime",
            precision="fp32",
            path=fp32_path,
            size_bytes=fp32_path.stat().st_size,
            params=model_params(fp32_path),
            artifact="model.fp32.onnx",
        )
        candidates.append(baseline)
        variants: list[Any] = []
        if model_steps:
            sample = splits.eval.head(16).inputs
            model_labels, transformed, qat_made = _run_model_steps(
                model_steps, loaded.module, ctx, root, seed, sample, progress,
                dynamic_axes=(loaded.meta or {}).get("dynamic_axes"),
            )
            if transformed is not None:
                graph_input = transformed
                candidates.append(
                    harness.Candidate(
                        name=f"ort-{transformed.stem.removeprefix('model.')}",
                        runtime="onnxruntime",
                        precision="fp32",
                        path=transformed,
                        techniques=list(model_labels),
                        size_bytes=transformed.stat().st_size,
                        params=model_params(transformed),
                        sparsity=_onnx_sparsity(transformed),
                        artifact=transformed.name,
                        notes=_model_step_notes(ctx.records),
                    )
                )
            for v in qat_made:
                v.techniques = model_labels + list(v.techniques)
            variants.extend(qat_made)

        from edgekit.compress.quantize_ov import ov_fp32_ir

        progress("converting the fp32 model to OpenVINO IR")
        not_built: list[VariantRow] = []
        try:
            variants.insert(0, ov_fp32_ir(fp32_path, work / "ov-fp32.xml"))
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:
            not_built.append(_not_built("ov-fp32", "openvino", [], _first_line(exc)))
            progress(f"ov-fp32: {not_built[-1].not_measured_reason}")
        for step in graph_steps:
            progress(f"applying {_label(step)}")
            made, failed = _apply_graph_step(step, graph_input, ctx)
            not_built.extend(failed)
            for v in made:
                v.techniques = model_labels + list(v.techniques)
            variants.extend(made)
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise BadInputError(
                f"two steps made variants with the same name ({names}); keep one int8/fp16 step per mode"
            )
        for v in variants:
            _place(v, root)
            candidates.append(
                harness.Candidate(
                    name=v.name,
                    runtime=v.runtime,
                    precision=v.precision,
                    path=v.path,
                    techniques=list(v.techniques),
                    notes=list(v.notes),
                    size_bytes=_size(v),
                    artifact=v.path.relative_to(root).as_posix(),
                )
            )
        shutil.rmtree(work)

        profiles = profile_from_data(
            exported_inputs(fp32_path), [splits.calib, splits.eval], batches=batches, given=shapes
        )
        trt = [c for c in candidates if c.runtime == "tensorrt"]
        try:
            write_build_script(root, trt, profiles)
        except EdgekitError as exc:
            candidates = [c for c in candidates if c.runtime != "tensorrt"]
            not_built.extend(_not_built(c.name, "tensorrt", c.techniques, str(exc)) for c in trt)
            for c in trt:
                c.path.unlink(missing_ok=True)

        data_dir = root / "data"
        data_dir.mkdir()
        _save_npz(data_dir / "eval.npz", splits.eval)
        from edgekit.bundle.verify import record_fp32_outputs

        record_fp32_outputs(root, fp32_path, splits.eval.inputs, threads)  # the device's smoke test compares with it

        report = Report(
            command=command,
            model={
                "source": str(src),
                "sha256": loaded.sha256,
                "params": baseline.params,
                "task": task,
                "format": loaded.format,
                "inputs": [{"name": n} for n in input_names],
            },
            machine={**machine_info(threads), **_threads_info(threads_source)},
            budget=budget.describe(_primary(task) if splits.eval.labels is not None else None),
            data={**splits.info, "calib_sha256": splits.calib.sha256(), "eval_sha256": splits.eval.sha256()},
            techniques=dict(ctx.records),
        )
        if splits.calib.directional_only:
            report.warnings.append(
                "calibration and evaluation used random inputs: accuracy figures are directional only"
            )
        harness.fill(
            report,
            candidates,
            splits.eval,
            target_runtime=target_rt,
            budget=budget,
            batches=batches,
            threads=threads,
            budget_s=time_budget_s,
            with_memory=with_memory,
            output=output,
            progress=progress,
        )
        report.variants.extend(not_built)
        report.model["shapes"] = describe_shapes(profiles)
        progress("writing the report, plot and manifest")
        report.relative_to(root, bundle)
        report.warnings.extend(chance_warnings(report, splits.eval))
        paths = write_all(report, root)

        manifest = mf.Manifest(
            source={"path": str(src), "sha256": loaded.sha256},
            recipe=recipe_to_dict(Recipe(steps=list(steps), seed=seed, target=target, max_drop=budget.max_drop)),
            calibration={
                "sha256": splits.calib.sha256(),
                "n": len(splits.calib),
                "seed": seed,
                "directional_only": splits.calib.directional_only,
            },
            target=target,
            model={
                "task": task,
                "inputs": input_names,
                "metric": report.budget.get("metric"),
                "shapes": describe_shapes(profiles),
                "target_given": target_rt is not None,  # without --target, recommend across runtimes
                "output_kind": output.kind,
                "decode": output.decode,
                "blank": output.blank,
                "user_metric": output.metric,
            },
            budget=dataclasses.asdict(budget),
        )
        manifest.variants = [
            {
                "name": c.name,
                "runtime": c.runtime,
                "precision": c.precision,
                "artifact": c.artifact,
                "techniques": c.techniques,
                "notes": c.notes,
                "params": c.params,
                "sparsity": c.sparsity,
            }
            for c in candidates
        ]
        mf.write_schemas(root)
        files = [p for p in root.rglob("*") if p.is_file()]
        manifest.add_files(root, files)
        mf.write(root, manifest)
    result = CompressResult(bundle=bundle, report=report, report_path=bundle / paths["json"].name)
    compressed = [r for r in report.variants if r.measured and (r.techniques or r.precision != "fp32")]
    if budget.explicit and not any(r.deployable for r in compressed):
        best = _closest(compressed)
        detail = f"best was {best.name}: {best.rejected_reason}" if best else "none could be measured"
        result.budget_error = f"no compressed variant met the budget ({detail}); all are listed in {result.report_path}"
    return result


def exported_inputs(onnx_path: Path) -> list[Any]:
    from edgekit.runtimes.base import specs_from_onnx

    return specs_from_onnx(onnx_path)[0]


_PREFIX = {"onnxruntime": "ort", "openvino": "ov", "tensorrt": "trt"}


def _not_built(name: str, runtime: str, techniques: Sequence[str], reason: str) -> VariantRow:
    """A report row for a variant its runtime could not prepare: the others are still delivered."""
    fix = f"the other runtimes are delivered; {runtime} is skipped"
    if "--shapes" in reason:
        fix = f"give --shapes {SHAPES_HINT}"
    why = reason or "unknown error"
    return VariantRow(
        name=name,
        runtime=runtime,
        precision="unknown",
        techniques=list(techniques),
        artifact=None,
        size_bytes=None,
        deployable=False,
        measured=False,
        not_measured_reason=f"not built: {why}" + ("" if "--shapes" in why else f" ({fix})"),
        rejected_reason="not built",
    )


def _first_line(exc: BaseException) -> str:
    """One readable line of a library's error: the line that names what is unsupported, when the
    message has one (OpenVINO puts it after several lines of source locations)."""
    text = str(exc) if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {exc}"
    lines = [ln.strip(" -") for ln in text.splitlines() if ln.strip(" -")]
    telling = [ln for ln in lines if any(w in ln.lower() for w in ("not support", "no conversion rule", "unsupported"))]
    plain = [ln for ln in lines if not ln.startswith(("Check ", "Exception from"))]
    return (telling or plain or [type(exc).__name__])[0][:300]


def _apply_graph_step(step: Any, graph_input: Path, ctx: Any) -> tuple[list[Any], list[VariantRow]]:
    """Run a graph-level technique. When it fails and it targets several runtimes, each runtime is
    tried on its own: one that cannot be prepared becomes a "not built" row, never the end of the
    run. A bad input that every runtime rejects is still the user's error (exit 2)."""
    from edgekit.compress.base import handler_for

    _, fn = handler_for(step)
    runtimes = tuple(getattr(step, "runtimes", ()) or ())
    try:
        return list(fn(step, graph_input, ctx)), []
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:
        if len(runtimes) < 2:
            raise
        first = exc
    made: list[Any] = []
    failed: list[tuple[str, BaseException]] = []
    for runtime in runtimes:
        try:
            made.extend(fn(dataclasses.replace(step, runtimes=(runtime,)), graph_input, ctx))
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:
            failed.append((runtime, exc))
    if not made:
        raise first
    label = _short(_label(step))
    rows = [_not_built(f"{_PREFIX.get(rt, rt)}-{label}", rt, [_label(step)], _first_line(e)) for rt, e in failed]
    for row in rows:
        ctx.progress(f"{row.name}: {row.not_measured_reason}")
    return made, rows


def _closest(rows: Sequence[Any]) -> Any:
    """The variant closest to passing: smallest metric drop, else best fidelity (top-1, cosine, SQNR)."""

    def key(r: Any) -> tuple[float, ...]:
        f = r.fidelity or {}
        drop = r.metric_drop if r.metric_drop is not None else 0.0
        return (drop, -(f.get("top1_agreement") or 0.0), -(f.get("cosine") or 0.0), -(f.get("sqnr_db") or 0.0))

    scored = [r for r in rows if r.fidelity]
    return min(scored, key=key) if scored else None


def _primary(task: str) -> str | None:
    from edgekit.benchmarks.accuracy import PRIMARY

    return PRIMARY.get(task)


def _save_npz(path: Path, ds: Dataset) -> None:
    arrays = dict(ds.inputs)
    arrays.update({f"{k}_length": v for k, v in ds.lengths.items()})
    if ds.labels is not None:
        arrays["y"] = ds.labels
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def build(
    bundle: str | Path,
    *,
    runtime: str = "tensorrt",
    shapes: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> list[Path]:
    """On the device: verify the bundle, then build a TensorRT engine for every TensorRT variant,
    sharing one timing cache (``tensorrt/timing.cache``) so rebuilds skip kernel timing. The
    optimization profile is the one compress derived from the data (the manifest's
    ``model.shapes``); ``shapes`` overrides it per input."""
    from edgekit.bundle import manifest as mf
    from edgekit.bundle.tensorrt import build_plan
    from edgekit.export.shapes import from_described
    from edgekit.runtimes.tensorrt import build_engine

    if runtime != "tensorrt":
        raise BadInputError(
            f"'edgekit build' compiles TensorRT engines; got --runtime {runtime} (ONNX Runtime and "
            "OpenVINO load the bundle's files directly)"
        )
    root = Path(bundle)
    manifest = mf.read(root, verify=True)
    trt = [v for v in manifest.variants if v["runtime"] == "tensorrt"]
    if not trt:
        raise BadInputError(
            f"{root} has no TensorRT variants; compress with --runtime tensorrt (the default) or --fp16"
        )
    profiles = {**from_described(manifest.model.get("shapes")), **dict(shapes or {})}
    from edgekit.bundle.candidates import write_engine_meta
    from edgekit.runtimes.tensorrt import device_identity

    identity = device_identity()
    engines = []
    for v in trt:
        plan = build_plan(v, root, profiles)
        progress(f"building {plan['engine'].name} (TensorRT, fp16={plan['fp16']}, int8={plan['int8']})")
        engines.append(
            build_engine(
                plan["onnx"],
                plan["engine"],
                fp16=plan["fp16"],
                int8=plan["int8"],
                timing_cache=root / "tensorrt" / "timing.cache",
                shapes=plan["shapes"],
            )
        )
        if identity:
            write_engine_meta(engines[-1], identity)
    return engines


# -------------------------------------------------------------------------------------- bench
def bench(
    bundle: str | Path,
    *,
    runtimes: Sequence[str] | None = None,
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    time_budget_s: float = 2.0,
    budget: Budget | None = None,
    output_kind: str | None = None,
    decode: str | None = None,
    blank: int | None = None,
    metric: str | None = None,
    out: str | Path | None = None,
    with_memory: bool = True,
    command: str = "edgekit bench",
    progress: Progress = _quiet,
    calibrate_timer: bool = False,
    shapes: Mapping[str, Any] | None = None,
) -> tuple[Report, Path]:
    """Verify a bundle's hashes, then measure its variants (all, or those on ``runtimes``).
    ``shapes`` (``{input: (min, opt, max)}``, as :func:`edgekit.export.shapes.parse_shapes`
    gives) adds timings at each of those shapes (``latency_by_shape`` of every row)."""
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import machine_info, write_all
    from edgekit.bundle import manifest as mf
    from edgekit.devices.detect import target_runtime
    from edgekit.io.data import load_npz

    threads, threads_source = _threads(threads)
    _check_output_options(output_kind, decode, metric)
    root = Path(bundle)
    manifest = mf.read(root, verify=True)
    variants = manifest.variants
    if not variants:
        raise BadInputError(f"{root}/manifest.json lists no variants; rebuild the bundle with this edgekit")
    from edgekit.io.outputs import check_output_dir

    out_dir = Path(out) if out else root / "bench"
    inputs = [root / mf.MANIFEST, *(root / f.path for f in manifest.files)]
    check_output_dir(out_dir, inputs=inputs, overwrite=True)
    known = {v["runtime"] for v in variants}
    if runtimes:
        bad = sorted(set(runtimes) - {"onnxruntime", "openvino", "tensorrt", "torch"})
        if bad:
            raise BadInputError(f"unknown runtime(s) {', '.join(bad)}; choose from onnxruntime, openvino, tensorrt")
    wanted = set(runtimes) if runtimes else known
    task = manifest.model.get("task", "unknown")
    ds = load_npz(root / "data" / "eval.npz", task=task)
    bound = manifest.model.get("inputs") or ds.names
    ds = Dataset(
        inputs=ds.bind(bound), labels=ds.labels, task=task, name="eval", lengths=ds.bind_lengths(bound)
    )
    from edgekit.bundle.candidates import candidates as bundle_candidates
    from edgekit.devices import probe

    candidates = bundle_candidates(root, manifest, wanted)
    if shapes and candidates:
        from edgekit.benchmarks.at_shapes import check

        check(candidates, ds, shapes)
    budget = budget or Budget(**manifest.budget)
    report = Report(
        command=command,
        model={
            "source": manifest.source.get("path"),
            "sha256": manifest.source.get("sha256"),
            "params": next((v.get("params") for v in variants if v["name"] == "ort-fp32"), None),
            "task": task,
        },
        machine={**machine_info(threads), **_threads_info(threads_source)},
        budget=budget.describe(manifest.model.get("metric") if ds.labels is not None else None),
        data={"source": "bundle data/eval.npz", "eval_n": len(ds), "eval_sha256": ds.sha256()},
    )
    output = _bundle_output_spec(manifest.model, output_kind, decode, blank, metric)
    if output is not None:
        progress(f"output kind: {output.summary()}")
    if output is not None and manifest.model.get("user_metric") and not metric:
        report.warnings.append(
            f"compress judged with --metric {manifest.model['user_metric']}; bench does not import code named "
            "in a bundle: pass --metric again to use it"
        )
    before = probe.sensors()
    harness.fill(
        report,
        candidates,
        ds,
        target_runtime=target_runtime(manifest.target) if manifest.model.get("target_given", True) else None,
        budget=budget,
        batches=batches,
        threads=threads,
        budget_s=time_budget_s,
        with_memory=with_memory,
        output=output,
        progress=progress,
    )
    report.warnings.extend(f"{f} is in the bundle but not in its manifest; ignored" for f in manifest.extra_files)
    if shapes:
        from edgekit.benchmarks.at_shapes import time_at_shapes
        from edgekit.export.shapes import describe

        report.data["shapes"] = describe(shapes)
        time_at_shapes(
            report.rows(), candidates, ds, shapes, threads=threads, budget_s=time_budget_s, progress=progress
        )
    if calibrate_timer:
        from edgekit.benchmarks.calibrate import calibrate

        progress("calibrating the timer against benchmark_app / onnxruntime_perf_test")
        chosen = [v for v in variants if v["name"] in {c.name for c in candidates}]
        report.timer_calibration = calibrate(chosen, root, ds, threads=threads, seconds=time_budget_s)
    probe.profile(report, candidates, ds, threads=threads, before=before, progress=progress)
    from edgekit.io.atomic import atomic_dir

    with atomic_dir(out_dir, overwrite=True, inputs=inputs) as tmp:
        write_all(report, tmp)
    return report, out_dir / "report.json"


# ------------------------------------------------------------------------ output kind, threads
def _threads(threads: int | None) -> tuple[int, str]:
    """``threads`` or the default (``EDGEKIT_THREADS``/``OMP_NUM_THREADS``, else physical cores)."""
    from edgekit.benchmarks.latency import default_threads

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BadInputError(f"--threads must be a positive whole number (got {threads!r})")
        return threads, "--threads"
    return default_threads()


def _threads_info(source: str) -> dict[str, Any]:
    from edgekit.benchmarks.latency import physical_cores

    return {"physical_cores": physical_cores(), "threads_source": source}


def _check_output_options(kind: str | None, decode: str | None, metric: str | None) -> None:
    """Fail early, before any work, on a bad --output-kind, --decode or --metric."""
    from edgekit.benchmarks.accuracy import DECODERS, KIND_NAMES, load_metric

    if kind is not None and kind not in KIND_NAMES:
        raise BadInputError(f"--output-kind must be one of {', '.join(KIND_NAMES)} (got {kind!r})")
    if decode is not None and decode not in DECODERS:
        raise BadInputError(f"--decode must be one of {', '.join(DECODERS)} (got {decode!r})")
    if metric is not None:
        load_metric(metric)


def _output_spec(detected: Any, kind: str | None, decode: str | None, blank: int | None, metric: str | None) -> Any:
    from edgekit.benchmarks.accuracy import resolve

    return resolve(detected, kind=kind, decode=decode, blank=blank, metric=metric)


def _bundle_output_spec(
    model: dict[str, Any], kind: str | None, decode: str | None, blank: int | None, metric: str | None
) -> Any:
    """The output spec compress recorded in the manifest, with the user's overrides; None for a
    bundle made before output kinds (then it is detected again)."""
    from edgekit.benchmarks.accuracy import OutputSpec, resolve

    if not model.get("output_kind") and not kind:
        return None
    recorded = OutputSpec(
        kind=model.get("output_kind") or kind or "raw",
        decode=model.get("decode"),
        blank=int(model.get("blank") or 0),
        source="bundle manifest",
    )
    return resolve(recorded, kind=kind, decode=decode, blank=blank, metric=metric)


# ------------------------------------------------------------------------------------- search
def search(model: str | Path, **options: Any) -> Any:
    """Build and measure candidate variants of ``model`` and bundle the fastest faithful one;
    see :func:`edgekit.search.search` for the options. Returns a ``SearchResult``."""
    from edgekit.search import search as run

    return run(model, **options)


# ------------------------------------------------------------------------------------ devices
def bench_remote(
    host: str,
    bundle: str,
    args: Sequence[str],
    *,
    out: str | Path | None = None,
    ssh_options: Sequence[str] = (),
    remote_edgekit: str | None = None,
) -> tuple[Report, Path]:
    """Run ``edgekit bench BUNDLE ARGS --json`` on the device ``host`` (``bundle`` is a path
    there), bring its report back and write it (JSON, Markdown, plot) to ``out`` here."""
    from edgekit.benchmarks.report import write_all
    from edgekit.devices import remote
    from edgekit.io.atomic import atomic_dir

    lch = remote.launcher(host, ssh_options=ssh_options, remote_edgekit=remote_edgekit)
    report = Report.from_dict(lch.run(["bench", bundle, *args, "--json"]).json())
    report.device["address"] = lch.where
    report.device["bundle_on_device"] = bundle
    assert lch.host is not None
    out_dir = Path(out) if out else Path(f"{Path(bundle).name}.bench-{lch.host.host}")
    with atomic_dir(out_dir, overwrite=True) as tmp:
        write_all(report, tmp)
    return report, out_dir / "report.json"


def ship(bundle: str | Path, destination: str, **kw: Any) -> dict[str, Any]:
    """Copy a verified bundle to ``ssh://[user@]host[:port]:/path`` and verify it there
    (see :mod:`edgekit.bundle.ship`)."""
    from edgekit.bundle.ship import ship as _ship

    return _ship(bundle, destination, **kw)


def sign(bundle: str | Path, key: str | Path) -> Path:
    """Sign a bundle's manifest with an EC private key (OpenSSF model-signing); returns the signature."""
    from edgekit.bundle.sign import sign as _sign

    return _sign(bundle, key)
