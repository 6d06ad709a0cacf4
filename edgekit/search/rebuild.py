"""The winner's bundle: the candidate rebuilt through ``compress`` (same handlers, same seed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.benchmarks.gate import Budget
from edgekit.search.space import SCHEME, Spec

Progress = Callable[[str], None]


def torch_step(spec: Spec) -> Any:
    """The model-level step of ``spec``: structured pruning or distillation (the compress defaults)."""
    from edgekit.compress.distill import DistillConfig
    from edgekit.compress.prune import PruneConfig

    if spec.distill:
        return DistillConfig(width=spec.distill)
    if spec.prune_lr:
        return PruneConfig(kind="structured", amount=float(spec.prune or 0), lr=spec.prune_lr)
    return PruneConfig(kind="structured", amount=float(spec.prune or 0))


def steps_for(spec: Spec) -> list[object]:
    """The compress steps that rebuild ``spec`` (the same handlers, the same seed)."""
    from edgekit.compress.fp16 import Fp16Config
    from edgekit.compress.quantize import Int8Config

    steps: list[object] = [torch_step(spec)] if spec.stem else []
    if spec.graph == "fp16":
        steps.append(Fp16Config(runtimes=(spec.runtime,)))
    elif spec.graph == "int8-dynamic":
        steps.append(Int8Config(runtimes=("onnxruntime",), mode="dynamic"))
    elif spec.graph == "bf16":  # compress makes ov-bf16 beside OpenVINO's INT8, on a CPU with bf16
        steps.append(Int8Config(runtimes=("openvino",)))
    elif spec.graph in ("int8-static", "int8-cnn", "int8-mixed"):
        steps.append(Int8Config(runtimes=(spec.runtime,), scheme=SCHEME.get(spec.graph, "auto")))
    return steps


def _target_for(runtime: str, target: str | None) -> str | None:
    import platform

    from edgekit.devices.detect import TARGETS

    if target:
        return target
    arch = platform.machine()
    return next((t for t, (rt, a) in TARGETS.items() if rt == runtime and a == arch), None)


def bundle_of(
    spec: Spec,
    src: Path,
    dest: Path,
    data: Any,
    target: str | None,
    budget: Budget,
    seed: int,
    threads: int | None,
    load_options: dict[str, Any],
    progress: Progress,
    candidate_file: Path | None = None,
) -> dict[str, Any]:
    """Rebuild the candidate through ``compress`` (same handlers, same seed) into a verified bundle."""
    from edgekit.pipeline import compress as pipeline
    from edgekit.pipeline.options import DataOptions, MeasureOptions, ModelOptions

    job = pipeline.CompressJob(
        model=Path(src),
        steps=steps_for(spec),
        out=Path(dest),
        overwrite=True,
        seed=seed,
        target=_target_for(spec.runtime, target),
        budget=budget,
        load=ModelOptions(**load_options),
        data=DataOptions(data=data),
        measure=MeasureOptions(time_budget_s=0.2, threads=threads, with_memory=False),
        command=f"edgekit search (bundle of {spec.name})",
    )
    result = pipeline.run(job, progress)
    match = [
        r.name
        for r in result.report.rows()
        if r.runtime == spec.runtime
        and (r.precision == spec.precision or spec.graph == "int8-mixed")
        and bool(spec.prune) == any(t.startswith("prune") for t in r.techniques)
        and bool(spec.distill) == any(t.startswith("distill") for t in r.techniques)
        and (spec.graph != "fp32" or r.precision == "fp32")
    ]
    identical: dict[str, bool] = {}
    if candidate_file is not None:
        from edgekit.io.atomic import sha256_file

        # Same handlers, same seed: the bundle's file should be the searched file, byte for byte.
        want = sha256_file(candidate_file)
        identical = {n: sha256_file(dest / str(result.report.row(n).artifact)) == want for n in match}
    # A step may make several variants of one precision for a runtime (the transformer scheme adds
    # dynamic MatMul INT8 beside static): the searched one is the one with the same bytes.
    variant = next((n for n in match if identical.get(n)), match[0] if match else None)
    info: dict[str, Any] = {"variant": variant, "recommended": result.report.recommended}
    if variant is not None and candidate_file is not None:
        info["identical_to_candidate"] = identical[variant]
    return info
