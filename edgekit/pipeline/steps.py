"""The techniques of a run, applied in order.

Model steps (pruning, distillation, QAT) change the torch module before export; graph steps
(INT8, FP16, …) turn an ONNX file into deployable artifacts. Graph steps chain: each takes the
latest fp32 ONNX artifact — the export, the transformed model, or an fp32 ONNX a previous graph
step made (e.g. SmoothQuant before INT8) — so one step can feed the next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import Artifact, PartialBuild
from edgekit.benchmarks.report import VariantRow
from edgekit.errors import BadInputError, EdgekitError
from edgekit.pipeline.options import SHAPES_HINT, Progress
from edgekit.runtimes.table import prefix as runtime_prefix

MODEL_STAGE = "model"


def technique(config: object) -> str:
    from edgekit.config import technique_name

    return technique_name(config)


def label(config: object) -> str:
    lbl = getattr(config, "label", None)
    if callable(lbl):
        return str(lbl())
    return technique(config)


def short(lbl: str) -> str:
    return lbl.split(":")[0]


def split_steps(steps: Sequence[object]) -> tuple[list[object], list[object]]:
    """The model steps and the graph steps of ``steps``, checking their order."""
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
    names = [technique(s) for s in model_steps]
    if "qat" in names:
        if names[-1] != "qat":
            raise BadInputError("QAT must be the last model step (pruning and distillation come before it)")
        if graph_steps:
            raise BadInputError("QAT already produces the INT8 variants; drop the int8/fp16 steps from this run")
    return model_steps, graph_steps


def run_model_steps(
    steps: Sequence[object], module: Any, ctx: Any, root: Path, sample: dict[str, np.ndarray], progress: Progress,
    dynamic_axes: Any = None,
) -> tuple[Artifact | None, list[Artifact]]:
    """Apply the torch-level techniques in order. Returns the fp32 ONNX artifact of the
    transformed model (None after QAT) and the INT8 artifacts QAT made (empty otherwise); the
    export keeps the source model's ``dynamic_axes``."""
    import torch

    from edgekit.compress.base import handler_for
    from edgekit.export.onnx import export_onnx, model_params

    labels: list[str] = []
    for step in steps:
        progress(f"applying {label(step)}")
        _, fn = handler_for(step)
        torch.manual_seed(ctx.seed)
        module = fn(step, module, ctx)
        labels.append(label(step))
    if technique(steps[-1]) == "qat":
        from edgekit.compress.qat import qat_variants

        progress("exporting the QAT model (Q/DQ ONNX, OpenVINO IR)")
        made = qat_variants(module, ctx.workdir, sample)
        for v in made:
            v.techniques = labels + list(v.techniques)
        return None, made
    tag = "-".join(short(lbl) for lbl in labels)
    path = root / f"model.fp32-{tag}.onnx"
    progress(f"exporting the {tag} model to ONNX (checked against torch)")
    export_onnx(module, path, sample=sample, dynamic_axes=dynamic_axes)
    transformed = Artifact(
        name=f"ort-{path.stem.removeprefix('model.')}",
        runtime="onnxruntime",
        precision="fp32",
        path=path,
        techniques=labels,
        size_bytes=path.stat().st_size,
        params=model_params(path),
        sparsity=onnx_sparsity(path),
        artifact=path.name,
        notes=model_step_notes(ctx.records),
    )
    return transformed, []


def run_graph_steps(steps: Sequence[object], start: Artifact, ctx: Any) -> tuple[list[Artifact], list[VariantRow]]:
    """Apply the graph techniques in order, each on the latest fp32 ONNX artifact (``start``,
    then any fp32 ONNX a step made). Returns the artifacts made and the "not built" rows."""
    made_all: list[Artifact] = []
    not_built: list[VariantRow] = []
    current = start
    for step in steps:
        ctx.progress(f"applying {label(step)}")
        made, failed = apply_graph_step(step, current.path, ctx)
        not_built.extend(failed)
        for v in made:
            v.techniques = list(current.techniques) + list(v.techniques)
        made_all.extend(made)
        current = next((v for v in made if feeds_next(v)), current)
    return made_all, not_built


def feeds_next(artifact: Artifact) -> bool:
    """An fp32 ONNX for ONNX Runtime: a graph-level transform whose output the next step takes."""
    return artifact.runtime == "onnxruntime" and artifact.precision == "fp32" and artifact.path.suffix == ".onnx"


def apply_graph_step(step: Any, graph_input: Path, ctx: Any) -> tuple[list[Artifact], list[VariantRow]]:
    """Run a graph-level technique. One runtime that cannot be prepared becomes a "not built"
    row, never the end of the run; a bad input that every runtime rejects is still the user's
    error (exit 2). A technique reporting :class:`PartialBuild` keeps what it made; one that
    raises a plain error is tried once more per runtime, to find which runtimes work."""
    from edgekit.compress.base import handler_for

    _, fn = handler_for(step)
    runtimes = tuple(getattr(step, "runtimes", ()) or ())
    made: list[Artifact] = []
    failed: list[tuple[str, BaseException]] = []
    try:
        return list(fn(step, graph_input, ctx)), []
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except PartialBuild as partial:
        first: BaseException = partial
        made, failed = list(partial.made), list(partial.failed.items())
    except Exception as exc:
        if len(runtimes) < 2:
            raise
        first = exc
        for runtime in runtimes:
            try:
                made.extend(fn(dataclasses.replace(step, runtimes=(runtime,)), graph_input, ctx))
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as err:
                failed.append((runtime, err))
    if not made:
        raise first
    tag = short(label(step))
    rows = [not_built(f"{runtime_prefix(rt)}-{tag}", rt, [label(step)], first_line(e)) for rt, e in failed]
    for row in rows:
        ctx.progress(f"{row.name}: {row.not_measured_reason}")
    return made, rows


def not_built(name: str, runtime: str, techniques: Sequence[str], reason: str) -> VariantRow:
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


def first_line(exc: BaseException) -> str:
    """One readable line of a library's error: the line that names what is unsupported, when the
    message has one (OpenVINO puts it after several lines of source locations)."""
    text = str(exc) if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {exc}"
    lines = [ln.strip(" -") for ln in text.splitlines() if ln.strip(" -")]
    telling = [ln for ln in lines if any(w in ln.lower() for w in ("not support", "no conversion rule", "unsupported"))]
    plain = [ln for ln in lines if not ln.startswith(("Check ", "Exception from"))]
    return (telling or plain or [type(exc).__name__])[0][:300]


def model_step_notes(records: dict[str, Any]) -> list[str]:
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


def onnx_sparsity(path: Path) -> float | None:
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


def check_step_runtimes(steps: Sequence[object]) -> None:
    """Fail before any work on a step naming a runtime compress cannot target."""
    from edgekit.runtimes import table

    targets = table.targets()
    for step in steps:
        for rt in getattr(step, "runtimes", ()) or ():
            if rt not in targets:
                raise BadInputError(f"runtimes={rt!r} is not valid; choose one of: {', '.join(targets)}")
