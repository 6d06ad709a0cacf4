"""``edgekit compress``: technique flags (or a recipe), data, budget, and the shared option groups."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgekit.cli_options import Finite, emit, measuring_options, model_options, option_group, output_options
from edgekit.cli_options import command_line as _command_line
from edgekit.cli_options import progress as _progress
from edgekit.errors import BadInputError
from edgekit.pipeline.options import MeasureOptions, ModelOptions, OutputOptions


@dataclass(frozen=True)
class TechniqueFlags:
    """The technique flags of ``compress`` (each one a step; ``--recipe`` replaces them all)."""

    int8: bool = False
    int8_dynamic: bool = False
    fp16: bool = False
    prune: str | None = None
    distill: bool = False
    student: str | None = None
    qat: bool = False
    runtimes: str = "onnxruntime,openvino,tensorrt"

    def steps(self) -> list[object]:
        rts = [r.strip() for r in self.runtimes.split(",") if r.strip()]
        return _steps_from_flags(
            self.int8, self.int8_dynamic, self.fp16, self.prune, self.distill, self.student, self.qat, rts
        )


@dataclass(frozen=True)
class BudgetFlags:
    """The accuracy/fidelity budget flags (exit 3 when no compressed variant meets them)."""

    max_drop: float | None = None
    min_top1: float | None = None
    min_cosine: float | None = None
    min_sqnr: float | None = None

    def budget(self, max_drop: float | None) -> Any:
        return _budget(max_drop, self.min_top1, self.min_cosine, self.min_sqnr)


@dataclass(frozen=True)
class DataFlags:
    data: Path | None = None
    calib: str = "data"
    calib_data: Path | None = None
    shapes: tuple[str, ...] = ()


def _steps_from_flags(
    int8: bool,
    int8_dynamic: bool,
    fp16: bool,
    prune: str | None,
    distill: bool,
    student: str | None,
    qat: bool,
    runtimes: list[str],
) -> list[object]:
    from edgekit.config import build_step

    steps: list[object] = []
    if prune:
        kind, _, amount = prune.partition(":")
        try:
            steps.append(build_step("prune", {"kind": kind, "amount": float(amount)}))
        except ValueError:
            raise BadInputError(f"--prune takes KIND:AMOUNT, e.g. structured:0.5 (got {prune!r})") from None
    if distill or student:
        steps.append(build_step("distill", {"student": student} if student else {}))
    if qat:
        steps.append(build_step("qat", {}))
    if int8:
        steps.append(build_step("int8", {"runtimes": [r for r in runtimes]}))
    if int8_dynamic:
        steps.append(build_step("int8", {"mode": "dynamic", "runtimes": ["onnxruntime"]}))
    if fp16:
        steps.append(build_step("fp16", {}))
    return steps


def _with_search_minutes(steps: list[object], minutes: float) -> list[object]:
    """The INT8 steps of ``steps`` with the budget search limited to ``minutes``."""
    from edgekit.compress.quantize import Int8Config

    if minutes <= 0:
        raise BadInputError(f"--search-minutes must be a positive number of minutes (got {minutes:g})")
    return [dataclasses.replace(s, search_minutes=minutes) if isinstance(s, Int8Config) else s for s in steps]


def _budget(max_drop: float | None, min_top1: float | None, min_cosine: float | None, min_sqnr: float | None) -> Any:
    from edgekit.benchmarks.gate import Budget

    fields: dict[str, float] = {}
    if min_top1 is not None:
        fields["min_top1_agreement"] = min_top1
    if min_cosine is not None:
        fields["min_cosine"] = min_cosine
    return Budget(max_drop=max_drop, min_sqnr_db=min_sqnr, **fields)


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


technique_options = option_group(
    "techniques",
    TechniqueFlags,
    _fields(TechniqueFlags),
    click.option("--int8", is_flag=True, help="Static INT8: ONNX Runtime QDQ, OpenVINO via NNCF, TensorRT Q/DQ."),
    click.option("--int8-dynamic", is_flag=True, help="Dynamic INT8 on ONNX Runtime (MatMul/Gemm only)."),
    click.option("--fp16", is_flag=True, help="FP16 variants (ONNX Runtime, OpenVINO, TensorRT)."),
    click.option("--prune", default=None, metavar="KIND:AMOUNT", help="Prune before export, e.g. structured:0.5."),
    click.option("--distill", is_flag=True, help="Distil into a student slimmed from the model."),
    click.option("--student", default=None, help="module:factory of the student for --distill."),
    click.option("--qat", is_flag=True, help="Quantization-aware fine-tuning before export."),
    click.option(
        "--runtime",
        "runtimes",
        default="onnxruntime,openvino,tensorrt",
        show_default=True,
        help="Runtimes to build INT8 variants for.",
    ),
)

data_options = option_group(
    "data",
    DataFlags,
    _fields(DataFlags),
    click.option("--data", type=click.Path(path_type=Path), default=None, help=".npz with x (and optional y)."),
    click.option(
        "--calib",
        type=click.Choice(["data", "random"]),
        default="data",
        show_default=True,
        help="'random' calibrates on generated inputs (directional figures only).",
    ),
    click.option(
        "--calib-data",
        type=click.Path(path_type=Path),
        default=None,
        help=".npz used for calibration only (evaluation stays on the held-out data).",
    ),
    click.option(
        "--shapes",
        "shapes",
        multiple=True,
        metavar="NAME:MIN/OPT/MAX",
        help="Shapes of a dynamic input, e.g. x:1x3x48x64/1x3x48x320/1x3x48x960 (default: from the data).",
    ),
)

budget_options = option_group(
    "budget",
    BudgetFlags,
    _fields(BudgetFlags),
    click.option(
        "--max-drop",
        type=Finite(0.0),
        default=None,
        help="Accuracy budget in metric points (without labels: points of top-1 agreement); exit 3 if unmet.",
    ),
    click.option(
        "--min-top1", type=Finite(0.0, 1.0), default=None, help="Fidelity budget without labels: top-1 agreement (0-1)."
    ),
    click.option(
        "--min-cosine", type=Finite(-1.0, 1.0), default=None, help="Fidelity budget without labels: cosine similarity."
    ),
    click.option("--min-sqnr", type=Finite(), default=None, help="Fidelity budget: SQNR in dB vs fp32."),
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@technique_options
@click.option("--recipe", type=click.Path(path_type=Path), default=None, help="TOML recipe of steps to run.")
@click.option(
    "--save-recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the recipe this call runs, to re-run it with --recipe.",
)
@data_options
@click.option("--target", default=None, help="Deployment target, e.g. x86-openvino (see 'edgekit targets').")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory. Default: MODEL.bundle beside the model.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory (and --save-recipe file).")
@click.option("--seed", type=int, default=None, help="Seed for calibration sampling and fine-tuning (default 0).")
@budget_options
@click.option(
    "--search-minutes",
    type=Finite(0.0),
    default=None,
    help="Time limit of the accuracy-budget search, all runtimes together (default 10).",
)
@model_options
@output_options
@measuring_options(time_budget=1.0)
def compress(
    model: Path,
    techniques: TechniqueFlags,
    recipe: Path | None,
    save_recipe: Path | None,
    data: DataFlags,
    target: str | None,
    out: Path | None,
    overwrite: bool,
    seed: int | None,
    budget: BudgetFlags,
    search_minutes: float | None,
    load: ModelOptions,
    output: OutputOptions,
    measure: MeasureOptions,
    as_json: bool,
) -> None:
    """Compress MODEL, export it, measure every variant and write a verified bundle."""
    from edgekit import api
    from edgekit.config import save_recipe as write_recipe
    from edgekit.export.shapes import parse_shapes
    from edgekit.io.outputs import check_output_file

    profiles = parse_shapes(data.shapes)
    if save_recipe is not None:  # checked before any work: it may not replace an input
        check_output_file(
            save_recipe, inputs=[model, data.data, data.calib_data, recipe], overwrite=overwrite, flag="--save-recipe"
        )
    plan = _plan(techniques.steps(), recipe, seed, target, budget.max_drop)
    if search_minutes is not None:
        plan.steps = _with_search_minutes(plan.steps, search_minutes)
    with _progress(not as_json) as step:
        result = api.compress(
            model,
            steps=plan.steps, data=data.data, calib=data.calib, calib_data=data.calib_data, target=plan.target,
            out=out, overwrite=overwrite, seed=plan.seed, threads=measure.threads,
            budget=budget.budget(plan.max_drop), batches=measure.batches, time_budget_s=measure.time_budget_s,
            output_kind=output.kind, decode=output.decode, blank=output.blank, metric=output.metric,
            **dataclasses.asdict(load), shapes=profiles, with_memory=measure.with_memory, command=_command_line(),
            progress=step, extra_inputs=[recipe] if recipe is not None else [],
        )  # fmt: skip
    if save_recipe is not None:  # only once the bundle exists: a failed call leaves nothing behind
        write_recipe(plan, save_recipe)
    emit(result.report, result.report_path, as_json)
    if not as_json:
        click.echo(f"bundle: {result.bundle}")
    if result.budget_error:
        from edgekit.errors import BudgetError

        raise BudgetError(result.budget_error)


def _plan(flag_steps: list[object], recipe: Path | None, seed: int | None, target: str | None,
          max_drop: float | None) -> Any:  # fmt: skip
    """The recipe this call runs: the technique flags, or ``--recipe`` with the flags that override it."""
    from edgekit.config import Recipe, load_recipe

    if recipe is not None:
        if flag_steps:
            raise BadInputError("give either --recipe or technique flags (--int8, --prune, …), not both")
        plan = load_recipe(recipe)
        plan.seed = plan.seed if seed is None else seed
        plan.target = target or plan.target
        plan.max_drop = plan.max_drop if max_drop is None else max_drop
        return plan
    if not flag_steps:
        raise BadInputError("nothing to do: pass --int8 (or --fp16, --prune KIND:AMOUNT, --recipe FILE)")
    return Recipe(steps=flag_steps, seed=seed or 0, target=target, max_drop=max_drop)
