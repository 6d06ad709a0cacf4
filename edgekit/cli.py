"""The ``edgekit`` command: a thin shell over :mod:`edgekit.api`.

Callbacks parse options, build configs and call the API; heavy packages are imported inside the
callbacks so that ``edgekit --help`` is instant. User-facing failures print one line on stderr and
exit with the code of their :class:`~edgekit.errors.EdgekitError` (2 bad input, 3 budget not met).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from edgekit import __version__
from edgekit.cli_options import Finite, command_line, emit, int_list, progress
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


# Shared helpers (imported under their old names by the other CLI modules and by callers).
_command_line = command_line
_int_list = int_list
_progress = progress
_emit = emit


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

from edgekit.cli_bench import bench, build, doctor  # noqa: E402
from edgekit.cli_compress import _budget, compress  # noqa: E402,F401 - _budget: used by cli_search

for _cmd in (compress, bench, build, doctor):
    cli.add_command(_cmd)

from edgekit import cli_device  # noqa: E402

for _cmd in (cli_device.ship, cli_device.sign, cli_device.verify, cli_device.receive, cli_device.measure_stage):
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
