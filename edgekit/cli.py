"""The ``edgekit`` command: a thin shell over :mod:`edgekit.api`.

Callbacks parse options, build configs and call the API; heavy packages are imported inside the
callbacks so that ``edgekit --help`` is instant. User-facing failures print one line on stderr and
exit with the code of their :class:`~edgekit.errors.EdgekitError` (2 bad input, 3 budget not met).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.cli_device import split_ssh_options, ssh_options
from edgekit.errors import BadInputError, EdgekitError

REFERENCE_MODELS = (
    "digits-cnn",
    "tabular-mlp",
    "house-regressor",
    "text-classifier",
    "edge-cnn",
    "text-encoder",
    "text-recognizer",
)


class Finite(click.ParamType):
    """A finite float (NaN and infinity refused), optionally within bounds."""

    name = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None, *, positive: bool = False) -> None:
        self.lo, self.hi, self.positive = lo, hi, positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import math

        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.positive and x <= 0:
            self.fail(f"{value!r} must be greater than 0", param, ctx)
        if (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
            lo = "" if self.lo is None else f"{self.lo:g}"
            hi = "" if self.hi is None else f"{self.hi:g}"
            self.fail(f"{value!r} is outside {lo}..{hi}", param, ctx)
        return x


def _command_line() -> str:
    return "edgekit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _int_list(value: str, flag: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{flag} takes comma-separated whole numbers, e.g. 1,8 (got {value!r})") from None
    if not out or any(v < 1 for v in out):
        raise BadInputError(f"{flag} takes positive whole numbers, e.g. 1,8 (got {value!r})")
    return out


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich spinner on stderr for the running step; each finished step stays as one line with
    its duration. On failure the spinner vanishes, so the error is the last line printed."""
    if not enabled:
        # --json: stdout carries only the JSON, so whatever the libraries print (NNCF's progress
        # bars, say) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            yield lambda _msg: None
        return
    import time

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    # The live spinner is for terminals; in a pipe or CI only the finished steps are printed.
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    state: dict[str, Any] = {"task": None, "msg": "", "t0": 0.0}

    def finish() -> None:
        if state["task"] is not None:
            bar.remove_task(state["task"])
            console.print(
                f"[green]✓[/green] {escape(state['msg'])} [dim]({time.perf_counter() - state['t0']:.1f} s)[/dim]"
            )
            state["task"] = None

    def step(msg: str) -> None:
        finish()
        state.update(task=bar.add_task(escape(msg), total=None), msg=msg, t0=time.perf_counter())

    with bar:
        yield step
        finish()


def _emit(report: Any, path: Path, as_json: bool) -> None:
    if as_json:
        click.echo(report.to_json())
        return
    from edgekit.benchmarks.report import print_table

    print_table(report)
    click.echo(f"report: {path}")


def measuring_options(time_budget: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every measuring verb shares (threads, batch sizes, timing, memory, JSON)."""
    options = [
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="Threads each runtime may use (default: EDGEKIT_THREADS or OMP_NUM_THREADS, else physical cores).",
        ),
        click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes to time, e.g. 1,8."),
        click.option(
            "--time-budget",
            type=Finite(positive=True),
            default=time_budget,
            show_default=True,
            help="Seconds of timing per variant and batch.",
        ),
        click.option(
            "--no-memory", is_flag=True, help="Skip the peak-memory measurement (a child process per variant)."
        ),
        click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout."),
    ]

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How fidelity is measured without labels (compress and bench): the output kind and its decoding."""
    options = [
        click.option(
            "--output-kind",
            default=None,
            metavar="KIND",
            help="classifier|embedding|sequence|regression|raw (default: detected from the graph and data).",
        ),
        click.option(
            "--decode",
            default=None,
            metavar="ctc|none",
            help="Read sequence outputs by CTC collapse (default: ctc when the model metadata says so).",
        ),
        click.option("--blank", type=int, default=None, help="CTC blank class index (default: model metadata, or 0)."),
        click.option(
            "--metric",
            "user_metric",
            default=None,
            metavar="MODULE:FUNCTION",
            help="Your own metric fn(fp32_outputs, variant_outputs, data) -> float or dict; it then decides.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Compress a trained model, export it, compile it per target, measure it honestly, ship it.

    Model files are loaded without running code from them: a whole pickled module (which runs code
    when loaded) only with --trust-pickle, and a factory named inside a file only if edgekit ships
    it (otherwise give --arch module:factory). Outputs never replace an input or files edgekit did
    not write. Exit codes: 0 ok, 1 internal error, 2 bad input, 3 budget not met, 130/143 interrupted.
    """


@cli.command()
@click.argument("name", type=click.Choice(REFERENCE_MODELS))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the model (TorchScript). Default: NAME.pt",
)
@click.option("--seed", default=0, show_default=True, help="Seed for data split, init and shuffling.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the default epochs.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--data-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the held-out split as an .npz for --data (inputs, <input>_length, y).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file (and --data-out file).")
def train(
    name: str,
    out: Path | None,
    seed: int,
    epochs: int | None,
    threads: int,
    as_json: bool,
    data_out: Path | None,
    overwrite: bool,
) -> None:
    """Train reference model NAME on its offline data set and save it."""
    from edgekit import api

    out = out or Path(f"{name}.pt")
    with _progress(not as_json) as step:
        step(f"training {name} (seed {seed})")
        result = api.train(
            name, out, seed=seed, epochs=epochs, threads=threads, data_out=data_out, overwrite=overwrite
        )
    payload = {
        "model": name,
        "path": str(out),
        "seed": seed,
        "metric": result.metric,
        "value": result.value,
        "metrics": result.metrics,
        "seconds": round(result.seconds, 2),
    }
    if data_out is not None:
        payload["data"] = str(data_out)
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        extra = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        click.echo(f"{name}: held-out {extra} ({result.seconds:.1f} s) → {out}")
        if data_out is not None:
            click.echo(f"held-out data → {data_out}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file to write.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help=".npz of real inputs for the parity check.")
@click.option("--arch", default=None, help="module:factory that builds the model, for a state_dict file.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--input-shape", default=None, help="Per-sample input shape(s), e.g. 3x32x32 or ids:64:int64,mask:64.")
@click.option(
    "--atol",
    type=Finite(positive=True),
    default=1e-4,
    show_default=True,
    help="Max abs error allowed between torch and ONNX.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing ONNX file.")
def export(
    model: Path,
    out: Path,
    data: Path | None,
    arch: str | None,
    trust_pickle: bool,
    input_shape: str | None,
    atol: float,
    overwrite: bool,
) -> None:
    """Export MODEL to ONNX (dynamic batch), checked against torch on real inputs."""
    from edgekit import api

    if out.exists() and out.resolve() == model.resolve():
        raise BadInputError("the output would overwrite the input model; choose another -o")
    with _progress(True) as step:
        step(f"exporting {model}")
        res = api.export(
            model,
            out,
            data=data,
            arch=arch,
            trust_pickle=trust_pickle,
            input_shape=input_shape,
            atol=atol,
            overwrite=overwrite,
        )
    click.echo(f"{res.path}: opset {res.opset}, inputs {res.input_names}, max |torch − onnx| = {res.max_abs_err:.2e}")


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
    import dataclasses

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


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--int8", is_flag=True, help="Static INT8: ONNX Runtime QDQ, OpenVINO via NNCF, TensorRT Q/DQ.")
@click.option("--int8-dynamic", is_flag=True, help="Dynamic INT8 on ONNX Runtime (MatMul/Gemm only).")
@click.option("--fp16", is_flag=True, help="FP16 variants (ONNX Runtime, OpenVINO, TensorRT).")
@click.option("--prune", default=None, metavar="KIND:AMOUNT", help="Prune before export, e.g. structured:0.5.")
@click.option("--distill", is_flag=True, help="Distil into a student slimmed from the model.")
@click.option("--student", default=None, help="module:factory of the student for --distill.")
@click.option("--qat", is_flag=True, help="Quantization-aware fine-tuning before export.")
@click.option("--recipe", type=click.Path(path_type=Path), default=None, help="TOML recipe of steps to run.")
@click.option(
    "--save-recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the recipe this call runs, to re-run it with --recipe.",
)
@click.option("--data", type=click.Path(path_type=Path), default=None, help=".npz with x (and optional y).")
@click.option(
    "--calib",
    type=click.Choice(["data", "random"]),
    default="data",
    show_default=True,
    help="'random' calibrates on generated inputs (directional figures only).",
)
@click.option(
    "--calib-data",
    type=click.Path(path_type=Path),
    default=None,
    help=".npz used for calibration only (evaluation stays on the held-out data).",
)
@click.option("--target", default=None, help="Deployment target, e.g. x86-openvino (see 'edgekit targets').")
@click.option(
    "--runtime",
    "runtimes",
    default="onnxruntime,openvino,tensorrt",
    show_default=True,
    help="Runtimes to build INT8 variants for.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory. Default: MODEL.bundle beside the model.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory (and --save-recipe file).")
@click.option("--seed", type=int, default=None, help="Seed for calibration sampling and fine-tuning (default 0).")
@click.option(
    "--max-drop",
    type=Finite(0.0),
    default=None,
    help="Accuracy budget in metric points (without labels: points of top-1 agreement); exit 3 if unmet.",
)
@click.option(
    "--min-top1", type=Finite(0.0, 1.0), default=None, help="Fidelity budget without labels: top-1 agreement (0-1)."
)
@click.option(
    "--min-cosine", type=Finite(-1.0, 1.0), default=None, help="Fidelity budget without labels: cosine similarity."
)
@click.option("--min-sqnr", type=Finite(), default=None, help="Fidelity budget: SQNR in dB vs fp32.")
@click.option(
    "--search-minutes",
    type=Finite(0.0),
    default=None,
    help="Time limit of the accuracy-budget search, all runtimes together (default 10).",
)
@click.option("--arch", default=None, help="module:factory for a state_dict model file.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--input-shape", default=None, help="Per-sample input shape(s) when the model file has none.")
@click.option(
    "--shapes",
    "shapes",
    multiple=True,
    metavar="NAME:MIN/OPT/MAX",
    help="Shapes of a dynamic input, e.g. x:1x3x48x64/1x3x48x320/1x3x48x960 (default: from the data).",
)
@output_options
@measuring_options(time_budget=1.0)
def compress(
    model: Path,
    int8: bool,
    int8_dynamic: bool,
    fp16: bool,
    prune: str | None,
    distill: bool,
    student: str | None,
    qat: bool,
    recipe: Path | None,
    save_recipe: Path | None,
    data: Path | None,
    calib: str,
    calib_data: Path | None,
    target: str | None,
    runtimes: str,
    out: Path | None,
    overwrite: bool,
    seed: int | None,
    threads: int | None,
    max_drop: float | None,
    min_top1: float | None,
    min_cosine: float | None,
    min_sqnr: float | None,
    search_minutes: float | None,
    batch: str,
    time_budget: float,
    arch: str | None,
    trust_pickle: bool,
    input_shape: str | None,
    shapes: tuple[str, ...],
    output_kind: str | None,
    decode: str | None,
    blank: int | None,
    user_metric: str | None,
    no_memory: bool,
    as_json: bool,
) -> None:
    """Compress MODEL, export it, measure every variant and write a verified bundle."""
    from edgekit import api
    from edgekit.config import Recipe, load_recipe
    from edgekit.config import save_recipe as write_recipe
    from edgekit.export.shapes import parse_shapes
    from edgekit.io.outputs import check_output_file

    profiles = parse_shapes(shapes)
    if save_recipe is not None:  # checked before any work: it may not replace an input
        check_output_file(
            save_recipe, inputs=[model, data, calib_data, recipe], overwrite=overwrite, flag="--save-recipe"
        )
    rts = [r.strip() for r in runtimes.split(",") if r.strip()]
    flag_steps = _steps_from_flags(int8, int8_dynamic, fp16, prune, distill, student, qat, rts)
    if recipe is not None:
        if flag_steps:
            raise BadInputError("give either --recipe or technique flags (--int8, --prune, …), not both")
        plan = load_recipe(recipe)
        plan.seed = plan.seed if seed is None else seed
        plan.target = target or plan.target
        plan.max_drop = plan.max_drop if max_drop is None else max_drop
    else:
        if not flag_steps:
            raise BadInputError("nothing to do: pass --int8 (or --fp16, --prune KIND:AMOUNT, --recipe FILE)")
        plan = Recipe(steps=flag_steps, seed=seed or 0, target=target, max_drop=max_drop)
    if search_minutes is not None:
        plan.steps = _with_search_minutes(plan.steps, search_minutes)
    with _progress(not as_json) as step:
        result = api.compress(
            model,
            steps=plan.steps,
            data=data,
            calib=calib,
            calib_data=calib_data,
            target=plan.target,
            out=out,
            overwrite=overwrite,
            seed=plan.seed,
            threads=threads,
            budget=_budget(plan.max_drop, min_top1, min_cosine, min_sqnr),
            batches=_int_list(batch, "--batch"),
            time_budget_s=time_budget,
            output_kind=output_kind,
            decode=decode,
            blank=blank,
            metric=user_metric,
            arch=arch,
            trust_pickle=trust_pickle,
            input_shape=input_shape,
            shapes=profiles,
            with_memory=not no_memory,
            command=_command_line(),
            progress=step,
            extra_inputs=[recipe] if recipe is not None else [],
        )
    if save_recipe is not None:  # only once the bundle exists: a failed call leaves nothing behind
        write_recipe(plan, save_recipe)
    _emit(result.report, result.report_path, as_json)
    if not as_json:
        click.echo(f"bundle: {result.bundle}")
    if result.budget_error:
        from edgekit.errors import BudgetError

        raise BudgetError(result.budget_error)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--runtime", "runtimes", default=None, help="Runtimes to measure, e.g. ort,openvino (default: all in the bundle)."
)
@click.option("--max-drop", type=Finite(0.0), default=None, help="Override the bundle's accuracy budget.")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory. Default: BUNDLE/bench.",
)
@output_options
@click.option(
    "--calibrate-timer",
    is_flag=True,
    help="Also time each OpenVINO IR with benchmark_app (and ONNX with onnxruntime_perf_test) and report the ratio.",
)
@click.option(
    "--shapes",
    "shapes",
    multiple=True,
    metavar="NAME:MIN/OPT/MAX",
    help="Also time at each of these shapes, e.g. x:1x1x32x64/1x1x32x96/1x1x32x160 (always: the median real shape).",
)
@click.option(
    "--host",
    default=None,
    metavar="ssh://[user@]host[:port]",
    help="Measure on this device (BUNDLE is a path there).",
)
@ssh_options
@measuring_options(time_budget=2.0)
def bench(
    bundle: Path,
    runtimes: str | None,
    calibrate_timer: bool,
    batch: str,
    threads: int | None,
    time_budget: float,
    max_drop: float | None,
    out: Path | None,
    output_kind: str | None,
    decode: str | None,
    blank: int | None,
    user_metric: str | None,
    no_memory: bool,
    as_json: bool,
    host: str | None = None,
    ssh_opts: tuple[str, ...] = (),
    remote_edgekit: str | None = None,
    shapes: tuple[str, ...] = (),
) -> None:
    """Verify BUNDLE's hashes and measure its variants: latency, memory, size, accuracy, fidelity."""
    from edgekit import api
    from edgekit.benchmarks.gate import Budget
    from edgekit.export.shapes import parse_shapes

    profiles = parse_shapes(shapes)

    if host:
        args = ["--batch", batch, "--time-budget", str(time_budget)]
        args += ["--threads", str(threads)] if threads is not None else []  # default: the device's own cores
        args += ["--runtime", runtimes] if runtimes else []
        args += ["--max-drop", str(max_drop)] if max_drop is not None else []
        args += ["--no-memory"] if no_memory else []
        args += [a for spec in shapes for a in ("--shapes", spec)]
        with _progress(not as_json) as step:
            step(f"measuring {bundle} on {host}")
            report, path = api.bench_remote(
                host, bundle.as_posix(), args, out=out, ssh_options=split_ssh_options(ssh_opts),
                remote_edgekit=remote_edgekit,
            )
        _emit(report, path, as_json)
        if not as_json:
            d = report.device
            click.echo(
                f"device: {d.get('hostname')} ({d.get('cpu')}, {d.get('cores')} cores, {d.get('os')}); "
                f"energy {d.get('energy') if isinstance(d.get('energy'), str) else 'measured'}, "
                f"throttled {d.get('throttled')}"
            )
        return

    alias = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
    rts = [alias.get(r.strip(), r.strip()) for r in runtimes.split(",")] if runtimes else None
    budget = None
    if max_drop is not None:
        from edgekit.bundle.manifest import read

        budget = Budget(**{**read(bundle, verify=False).budget, "max_drop": max_drop})
    with _progress(not as_json) as step:
        report, path = api.bench(
            bundle,
            runtimes=rts,
            batches=_int_list(batch, "--batch"),
            threads=threads,
            time_budget_s=time_budget,
            budget=budget,
            output_kind=output_kind,
            decode=decode,
            blank=blank,
            metric=user_metric,
            out=out,
            with_memory=not no_memory,
            command=_command_line(),
            progress=step,
            calibrate_timer=calibrate_timer,
            shapes=profiles,
        )
    _emit(report, path, as_json)
    for name, cal in report.timer_calibration.get("variants", {}).items():
        if not as_json:
            detail = f"edgekit/{cal['tool']} p50 ratio {cal['ratio']:.2f}" if "ratio" in cal else cal["reason"]
            click.echo(f"timer calibration, {name}: {detail}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runtime", default="tensorrt", show_default=True, help="Runtime to compile for (tensorrt).")
@click.option(
    "--shapes",
    "shapes",
    multiple=True,
    metavar="NAME:MIN/OPT/MAX",
    help="Shapes of a dynamic input, e.g. x:1x3x48x64/1x3x48x320/1x3x48x960 (default: the bundle's, from its data).",
)
def build(bundle: Path, runtime: str, shapes: tuple[str, ...]) -> None:
    """On the device: build TensorRT engines from BUNDLE's ONNX (Q/DQ INT8, FP16) with a timing cache."""
    from edgekit import api
    from edgekit.export.shapes import parse_shapes

    profiles = parse_shapes(shapes)
    with _progress(True) as step:
        engines = api.build(bundle, runtime=runtime, shapes=profiles, progress=step)
    for e in engines:
        click.echo(f"engine: {e}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--variant", "variants", multiple=True, help="Variant(s) to diagnose (default: all compressed ones).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--no-layers", is_flag=True, help="Skip the per-layer sensitivity ranking.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
@click.option("--host", default=None, metavar="ssh://[user@]host[:port]", help="Diagnose on this device.")
@ssh_options
def doctor(
    bundle: Path,
    variants: tuple[str, ...],
    threads: int,
    no_layers: bool,
    as_json: bool,
    host: str | None = None,
    ssh_opts: tuple[str, ...] = (),
    remote_edgekit: str | None = None,
) -> None:
    """Why a variant of BUNDLE loses accuracy or speed: per-layer error, what really runs in INT8."""
    from edgekit.benchmarks.doctor import diagnose, print_diagnosis
    from edgekit.io.atomic import atomic_write_text

    if host:
        from edgekit.devices.remote import launcher

        args = ["doctor", bundle.as_posix(), "--json", "--threads", str(threads), *(["--no-layers"] * no_layers)]
        args += [a for v in variants for a in ("--variant", v)]
        lch = launcher(host, ssh_options=split_ssh_options(ssh_opts), remote_edgekit=remote_edgekit)
        remote_result = lch.run(args).json()
        return click.echo(json.dumps(remote_result, indent=2)) if as_json else print_diagnosis(remote_result)

    with _progress(not as_json) as step:
        result = diagnose(bundle, variants=variants or None, threads=threads, rank_layers=not no_layers, progress=step)
    path = bundle / "doctor" / "doctor.json"
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        print_diagnosis(result)
        click.echo(f"diagnosis: {path}")


@cli.command()
def targets() -> None:
    """Deployment targets, and whether this machine can run each."""
    from edgekit.devices.detect import TARGETS, runnable_targets

    status = runnable_targets()
    for name, (runtime, arch) in TARGETS.items():
        click.echo(f"{name:<20} {runtime:<12} {arch:<8} {status[name]}")


@cli.command()
def devices() -> None:
    """Known device profiles, and the one closest to this machine."""
    from edgekit.devices.detect import closest_profile, machine, profiles

    here = closest_profile()
    for p in profiles().values():
        mark = "*" if here and p.name == here.name else " "
        click.echo(f"{mark} {p.name:<18} {p.arch:<8} {','.join(p.runtimes):<24} {','.join(p.precisions)}")
    info = machine()
    click.echo(f"this machine: {info['cpu']}, {info['cores']} cores, ISA {', '.join(info['isa'])}")  # type: ignore[arg-type]


from edgekit.cli_search import search as _search  # noqa: E402

cli.add_command(_search)

from edgekit import cli_device  # noqa: E402

for _cmd in (cli_device.ship, cli_device.sign, cli_device.verify, cli_device.receive):
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn :class:`EdgekitError` into a one-line message and exit code.

    SIGINT and SIGTERM go through the same clean-up (nothing half-written is left) and exit with
    130 / 143; usage errors and write failures are one line each, exit 2."""
    from edgekit.io.interrupts import Interrupted, install
    from edgekit.io.outputs import private_tempdir, write_error

    restore = install()
    try:
        with private_tempdir(), warnings.catch_warnings():
            if not sys.warnoptions:  # library warnings (numpy overflow in a calibrator …) are not the user's
                warnings.simplefilter("ignore")  # to act on; `python -W default -m edgekit` shows them
            cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as exc:
        click.echo(f"edgekit: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__ or exc.__context__
        if isinstance(cause, Interrupted):
            click.echo(f"edgekit: interrupted ({cause}); nothing half-written was left behind", err=True)
            return cause.exit_code
        click.echo("edgekit: interrupted; nothing half-written was left behind", err=True)
        return 130
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"edgekit: error: {_one_line(exc.format_message())}{where}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"edgekit: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except OSError as exc:
        mapped = write_error(exc)
        if mapped is None:
            raise
        click.echo(f"edgekit: error: {mapped}", err=True)
        return mapped.exit_code
    finally:
        restore()
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
