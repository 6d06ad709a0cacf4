"""``edgekit search``: a thin shell over :func:`edgekit.search.search`."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli_device import split_ssh_options, ssh_options


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None, help=".npz with x (and optional y).")
@click.option("--target", default=None, help="Search within this target's runtimes (default: every runtime here).")
@click.option("--max-drop", type=float, default=None, help="Accuracy budget in metric points; adds the mixed INT8.")
@click.option("--min-top1", type=float, default=None, help="Fidelity budget without labels: top-1 agreement (0-1).")
@click.option("--min-cosine", type=float, default=None, help="Fidelity budget without labels: cosine similarity.")
@click.option("--min-sqnr", type=float, default=None, help="Fidelity budget: SQNR in dB vs fp32.")
@click.option(
    "--minutes",
    type=float,
    default=10.0,
    show_default=True,
    help="Time budget of the whole search: builds, then the timing run is shortened to fit.",
)
@click.option(
    "-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: MODEL.search."
)
@click.option("--keep", type=click.IntRange(min=0), default=0, show_default=True, help="Also bundle the N next best.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search from OUT/journal.jsonl.")
@click.option("--peers", is_flag=True, help="Also build and measure the stock pipelines' defaults, side by side.")
@click.option("--prune", "prune", default=None, help="Structured pruning ratios, e.g. 0.3,0.5 (0 to skip).")
@click.option("--no-fp16", is_flag=True, help="Leave out the FP16 candidates.")
@click.option("--distill", "distill", default=None, help="Distilled-student widths, e.g. 0.45 (0 to skip).")
@click.option(
    "--strategy",
    type=click.Choice(["auto", "exhaustive", "optuna"]),
    default="auto",
    show_default=True,
    help="Who proposes the combined candidates: all of them, or Optuna's ask/tell sampler (auto: by size).",
)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Builds the Optuna sampler may propose.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel builds (local).")
@click.option("--ray-address", default=None, help="Address of an existing Ray cluster (default: start a local one).")
@click.option("--device", default="local", show_default=True, help="Ray custom resource device:NAME to measure on.")
@click.option(
    "--host",
    default=None,
    metavar="ssh://[user@]host[:port]",
    help="Measure every candidate on this device (built here); it needs edgekit and the runtimes.",
)
@ssh_options
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Threads per runtime (default: physical cores)."
)
@click.option("--time-budget", type=float, default=0.5, show_default=True, help="Seconds of timing per candidate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--arch", default=None, help="module:factory for a state_dict model file.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a whole pickled module (runs code from the file).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
def search(
    model: Path,
    data: Path | None,
    target: str | None,
    max_drop: float | None,
    min_top1: float | None,
    min_cosine: float | None,
    min_sqnr: float | None,
    minutes: float,
    out: Path | None,
    keep: int,
    resume: bool,
    peers: bool,
    prune: str | None,
    no_fp16: bool,
    distill: str | None,
    strategy: str,
    trials: int | None,
    executor: str,
    jobs: int,
    ray_address: str | None,
    device: str,
    host: str | None,
    ssh_opts: tuple[str, ...],
    remote_edgekit: str | None,
    threads: int | None,
    time_budget: float,
    seed: int,
    arch: str | None,
    trust_pickle: bool,
    as_json: bool,
) -> None:
    """Build and measure candidate variants of MODEL; keep the fastest that passes the fidelity gate."""
    import json

    from edgekit.cli import _budget, _command_line, _progress
    from edgekit.errors import BudgetError
    from edgekit.search import search as run

    ratios = _floats("--prune", prune, "0.3,0.5")
    widths = _floats("--distill", distill, "0.45")
    with _progress(not as_json) as step:
        result = run(
            model,
            data=data,
            target=target,
            budget=_budget(max_drop, min_top1, min_cosine, min_sqnr),
            minutes=minutes,
            out=out,
            keep=keep,
            resume=resume,
            peers=peers,
            prune_ratios=ratios,
            distill_widths=widths,
            strategy_name=strategy,
            trials=trials,
            fp16=not no_fp16,
            executor=executor,
            jobs=jobs,
            ray_address=ray_address,
            device=device,
            host=host,
            ssh_options=split_ssh_options(ssh_opts),
            remote_edgekit=remote_edgekit,
            threads=threads,
            time_budget_s=time_budget,
            seed=seed,
            arch=arch,
            trust_pickle=trust_pickle,
            command=_command_line(),
            progress=step,
        )
    report = result.report
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
        click.echo(f"report: {result.report_path}")
        click.echo(f"plot: {result.plot_path}")
        for b in result.bundles:
            click.echo(f"bundle: {b}")
    if result.budget_error:
        raise BudgetError(result.budget_error)


def _floats(option: str, value: str | None, example: str) -> tuple[float, ...] | None:
    from edgekit.errors import BadInputError

    if value is None:
        return None
    try:
        return tuple(float(x) for x in value.split(",") if x.strip() and float(x) != 0)
    except ValueError:
        raise BadInputError(f"{option} takes values like {example} (got {value!r})") from None


def _print(report: dict) -> None:
    click.echo(f"{'candidate':34} {'status':13} {'p50 ms':>9} {report['score'].split(' ')[0]:>10}  note")
    for c in report["candidates"]:
        p50 = (c.get("latency_ms") or {}).get("p50")
        score = (c.get("metric") or {}).get("value")
        if score is None:
            score = (c.get("fidelity") or {}).get("top1_agreement")
        mark = "*" if c["name"] in report["pareto_front"] else " "
        click.echo(
            f"{mark}{c['name']:33} {c['status']:13} {'-' if p50 is None else f'{p50:.4f}':>9} "
            f"{'-' if score is None else f'{score:.4f}':>10}  {c['reason'] or ''}"
        )
    click.echo("* Pareto front (latency vs " + report["score"] + "): " + " → ".join(report["pareto_front"]))
    for p in report["peers"]:
        if "latency_ratio" in p:
            diff = p.get("metric_difference", 0)
            line = f"vs {p['peer']}: latency ×{p['latency_ratio']:.2f}, {p['metric']} {diff:+.3f}"
            same = p.get("at_equal_or_better_metric")
            if same:
                line += f"; at equal or better {p['metric']}: {same['candidate']} ×{same['latency_ratio']:.2f}"
            click.echo(line)
        else:
            click.echo(f"vs {p['peer']}: {p['status']} ({p['reason']})")
    click.echo(report["why"])
