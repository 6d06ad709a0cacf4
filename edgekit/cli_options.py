"""What the CLI verbs share: number types, progress display, report output, and option groups
that reach a callback as one typed value (``option_group``) instead of a parameter per flag."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from edgekit.errors import BadInputError
from edgekit.pipeline.options import MeasureOptions, ModelOptions, OutputOptions

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


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


def command_line() -> str:
    return "edgekit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def int_list(value: str, flag: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{flag} takes comma-separated whole numbers, e.g. 1,8 (got {value!r})") from None
    if not out or any(v < 1 for v in out):
        raise BadInputError(f"{flag} takes positive whole numbers, e.g. 1,8 (got {value!r})")
    return out


@contextlib.contextmanager
def progress(enabled: bool) -> Iterator[Any]:
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


def emit(report: Any, path: Path, as_json: bool) -> None:
    if as_json:
        click.echo(report.to_json())
        return
    from edgekit.benchmarks.report import print_table

    print_table(report)
    click.echo(f"report: {path}")


def option_group(name: str, build: Callable[..., Any], fields: tuple[str, ...], *options: Decorator) -> Decorator:
    """Add ``options`` to a command; their values (named ``fields``) reach the callback as one
    argument ``name`` = ``build(**values)``."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{f: kwargs.pop(f) for f in fields})
            return fn(*args, **kwargs)

        decorated: Callable[..., Any] = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return apply


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _measure(threads: int | None, batch: str, time_budget: float, no_memory: bool) -> MeasureOptions:
    return MeasureOptions(
        batches=tuple(int_list(batch, "--batch")), time_budget_s=time_budget, threads=threads, with_memory=not no_memory
    )


def measuring_options(time_budget: float) -> Decorator:
    """The timing options every measuring verb shares, as ``measure: MeasureOptions``, and ``--json``."""
    group = option_group(
        "measure",
        _measure,
        ("threads", "batch", "time_budget", "no_memory"),
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
    )

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        return group(click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")(fn))

    return apply


output_options = option_group(
    "output",
    OutputOptions,
    _fields(OutputOptions),
    click.option(
        "--output-kind",
        "kind",
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
        "metric",
        default=None,
        metavar="MODULE:FUNCTION",
        help="Your own metric fn(fp32_outputs, variant_outputs, data) -> float or dict; it then decides.",
    ),
)
"""How fidelity is measured without labels (compress and bench), as ``output: OutputOptions``."""

model_options = option_group(
    "load",
    ModelOptions,
    _fields(ModelOptions),
    click.option("--arch", default=None, help="module:factory for a state_dict model file."),
    click.option(
        "--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file)."
    ),
    click.option("--input-shape", default=None, help="Per-sample input shape(s) when the model file has none."),
)
"""How a model file is loaded, as ``load: ModelOptions``."""
