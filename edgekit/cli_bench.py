"""``edgekit bench``, ``build`` and ``doctor``: the verbs that read a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli_device import split_ssh_options, ssh_options
from edgekit.cli_options import Finite, emit, measuring_options, output_options
from edgekit.cli_options import command_line as _command_line
from edgekit.cli_options import progress as _progress
from edgekit.pipeline.options import MeasureOptions, OutputOptions


@click.command()
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
    max_drop: float | None,
    out: Path | None,
    output: OutputOptions,
    measure: MeasureOptions,
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
        args = ["--batch", ",".join(map(str, measure.batches)), "--time-budget", str(measure.time_budget_s)]
        args += ["--threads", str(measure.threads)] if measure.threads is not None else []  # default: the device's
        args += ["--runtime", runtimes] if runtimes else []
        args += ["--max-drop", str(max_drop)] if max_drop is not None else []
        args += ["--no-memory"] if not measure.with_memory else []
        args += [a for spec in shapes for a in ("--shapes", spec)]
        with _progress(not as_json) as step:
            step(f"measuring {bundle} on {host}")
            report, path = api.bench_remote(
                host, bundle.as_posix(), args, out=out, ssh_options=split_ssh_options(ssh_opts),
                remote_edgekit=remote_edgekit,
            )
        emit(report, path, as_json)
        if not as_json:
            d = report.device
            click.echo(
                f"device: {d.get('hostname')} ({d.get('cpu')}, {d.get('cores')} cores, {d.get('os')}); "
                f"energy {d.get('energy') if isinstance(d.get('energy'), str) else 'measured'}, "
                f"throttled {d.get('throttled')}"
            )
        return

    from edgekit.runtimes import canonical

    rts = [canonical(r) for r in runtimes.split(",")] if runtimes else None
    budget = None
    if max_drop is not None:
        from edgekit.bundle.manifest import read

        budget = Budget(**{**read(bundle, verify=False).budget, "max_drop": max_drop})
    with _progress(not as_json) as step:
        report, path = api.bench(
            bundle,
            runtimes=rts,
            batches=measure.batches,
            threads=measure.threads,
            time_budget_s=measure.time_budget_s,
            budget=budget,
            output_kind=output.kind,
            decode=output.decode,
            blank=output.blank,
            metric=output.metric,
            out=out,
            with_memory=measure.with_memory,
            command=_command_line(),
            progress=step,
            calibrate_timer=calibrate_timer,
            shapes=profiles,
        )
    emit(report, path, as_json)
    for name, cal in report.timer_calibration.get("variants", {}).items():
        if not as_json:
            ref = cal.get("reference", cal["tool"])
            detail = f"edgekit/{ref} p50 ratio {cal['ratio']:.2f}" if "ratio" in cal else cal["reason"]
            click.echo(f"timer calibration, {name}: {detail}")


@click.command()
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


@click.command()
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
