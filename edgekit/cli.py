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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.cli_device import split_ssh_options, ssh_options
from edgekit.errors import BadInputError, EdgekitError

REFERENCE_MODELS = ("digits-cnn", "tabular-mlp", "house-regressor", "text-classifier", "edge-cnn")


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
            "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads each runtime may use."
        ),
        click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes to time, e.g. 1,8."),
        click.option(
            "--time-budget",
            type=float,
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Compress a trained model, export it, compile it per target, measure it honestly, ship it."""


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
def train(name: str, out: Path | None, seed: int, epochs: int | None, threads: int, as_json: bool) -> None:
    """Train reference model NAME on its offline data set and save it."""
    from edgekit import api

    out = out or Path(f"{name}.pt")
    with _progress(not as_json) as step:
        step(f"training {name} (seed {seed})")
        result = api.train(name, out, seed=seed, epochs=epochs, threads=threads)
    payload = {
        "model": name,
        "path": str(out),
        "seed": seed,
        "metric": result.metric,
        "value": result.value,
        "metrics": result.metrics,
        "seconds": round(result.seconds, 2),
    }
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        extra = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        click.echo(f"{name}: held-out {extra} ({result.seconds:.1f} s) → {out}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file to write.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help=".npz of real inputs for the parity check.")
@click.option("--arch", default=None, help="module:factory that builds the model, for a state_dict file.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--input-shape", default=None, help="Per-sample input shape(s), e.g. 3x32x32 or ids:64:int64,mask:64.")
@click.option("--atol", default=1e-4, show_default=True, help="Max abs error allowed between torch and ONNX.")
def export(
    model: Path,
    out: Path,
    data: Path | None,
    arch: str | None,
    trust_pickle: bool,
    input_shape: str | None,
    atol: float,
) -> None:
    """Export MODEL to ONNX (dynamic batch), checked against torch on real inputs."""
    from edgekit import api

    if out.exists() and out.resolve() == model.resolve():
        raise BadInputError("the output would overwrite the input model; choose another -o")
    with _progress(True) as step:
        step(f"exporting {model}")
        res = api.export(
            model, out, data=data, arch=arch, trust_pickle=trust_pickle, input_shape=input_shape, atol=atol
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
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory.")
@click.option("--seed", type=int, default=None, help="Seed for calibration sampling and fine-tuning (default 0).")
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Accuracy budget in metric points (without labels: points of top-1 agreement); exit 3 if unmet.",
)
@click.option("--min-top1", type=float, default=None, help="Fidelity budget without labels: top-1 agreement (0-1).")
@click.option("--min-cosine", type=float, default=None, help="Fidelity budget without labels: cosine similarity.")
@click.option("--min-sqnr", type=float, default=None, help="Fidelity budget: SQNR in dB vs fp32.")
@click.option("--arch", default=None, help="module:factory for a state_dict model file.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--input-shape", default=None, help="Per-sample input shape(s) when the model file has none.")
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
    threads: int,
    max_drop: float | None,
    min_top1: float | None,
    min_cosine: float | None,
    min_sqnr: float | None,
    batch: str,
    time_budget: float,
    arch: str | None,
    trust_pickle: bool,
    input_shape: str | None,
    no_memory: bool,
    as_json: bool,
) -> None:
    """Compress MODEL, export it, measure every variant and write a verified bundle."""
    from edgekit import api
    from edgekit.config import Recipe, load_recipe
    from edgekit.config import save_recipe as write_recipe

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
            arch=arch,
            trust_pickle=trust_pickle,
            input_shape=input_shape,
            with_memory=not no_memory,
            command=_command_line(),
            progress=step,
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
@click.option("--max-drop", type=float, default=None, help="Override the bundle's accuracy budget.")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory. Default: BUNDLE/bench.",
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
    batch: str,
    threads: int,
    time_budget: float,
    max_drop: float | None,
    out: Path | None,
    no_memory: bool,
    as_json: bool,
    host: str | None = None,
    ssh_opts: tuple[str, ...] = (),
    remote_edgekit: str | None = None,
) -> None:
    """Verify BUNDLE's hashes and measure its variants: latency, memory, size, accuracy, fidelity."""
    from edgekit import api
    from edgekit.benchmarks.gate import Budget

    if host:
        args = ["--batch", batch, "--threads", str(threads), "--time-budget", str(time_budget)]
        args += ["--runtime", runtimes] if runtimes else []
        args += ["--max-drop", str(max_drop)] if max_drop is not None else []
        args += ["--no-memory"] if no_memory else []
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
            out=out,
            with_memory=not no_memory,
            command=_command_line(),
            progress=step,
        )
    _emit(report, path, as_json)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runtime", default="tensorrt", show_default=True, help="Runtime to compile for (tensorrt).")
def build(bundle: Path, runtime: str) -> None:
    """On the device: build TensorRT engines from BUNDLE's ONNX (Q/DQ INT8, FP16) with a timing cache."""
    from edgekit import api

    with _progress(True) as step:
        engines = api.build(bundle, runtime=runtime, progress=step)
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


from edgekit import cli_device  # noqa: E402

for _cmd in (cli_device.ship, cli_device.sign, cli_device.verify, cli_device.receive):
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn :class:`EdgekitError` into a one-line message and exit code."""
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as exc:
        click.echo(f"edgekit: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("edgekit: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
