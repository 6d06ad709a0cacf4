"""``edgekit search``: build candidate variants, gate them, time the survivors side by side, and
keep the fastest faithful one.

Order of work: (1) export the fp32 ONNX; (2) level 0 — every graph technique on the source model
and every pruning ratio, cheapest first, plus the peer pipelines; (3) the fidelity gate on all of
them; (4) level 1 — pruned × graph technique, only where both parents passed; (5) one
interleaved latency run over every built candidate (the harness ``bench`` and ``compress`` use);
(6) the Pareto front, the winner and its bundle. Builds and verdicts go to ``journal.jsonl`` as
they happen; ``resume=True`` reuses every build the journal lists whose files still exist.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmarks.gate import Budget
from edgekit.errors import BadInputError
from edgekit.search import pareto, strategy
from edgekit.search.choose import choose, peer_rows, points_of, score, score_label
from edgekit.search.journal import Journal
from edgekit.search.outcome import Outcome, rel
from edgekit.search.rebuild import bundle_of
from edgekit.search.space import Job, Spec, space

Progress = Callable[[str], None]
BASELINE = Spec("fp32", "onnxruntime")
DEFAULT_PRUNE = (0.3, 0.5)
# Fine-tuning after pruning: compress's default (3e-3) and a gentler rate. On digits-cnn, 0.3 pruning
# tuned 8 epochs at 3e-3 lost 1 of 359 held-out images; at 1e-3 it lost none.
DEFAULT_PRUNE_LRS: tuple[float | None, ...] = (None, 1e-3)
DEFAULT_DISTILL = (0.45,)  # the student width compress --distill uses by default
TRAINABLE = ("classification", "binary", "regression")  # tasks pruning's fine-tuning and distillation train
SCHEMA = 1
MIN_TIMING_S = 0.02


@dataclass
class SearchResult:
    out: Path
    report: dict[str, Any]
    report_path: Path
    plot_path: Path | None
    winner: str | None
    bundles: list[Path]
    budget_error: str | None = None


def _runnable(runtimes: Sequence[str]) -> list[str]:
    from edgekit.benchmarks.harness import cannot_run

    return [rt for rt in runtimes if cannot_run(rt) is None]


@dataclass
class _Plan:
    """What one search works on, fixed before the first build."""

    src: Path
    root: Path
    journal: Journal
    runtimes: tuple[str, ...]
    budget: Budget
    threads: int
    loaded: Any
    splits: Any
    names: list[str]
    task: str
    fp32: Path
    load_options: dict[str, Any]
    level0: list[Spec]
    level1: list[Spec]
    outcomes: dict[str, Outcome]
    notes: list[str]
    seed: int
    deadline: float
    minutes: float
    thread_choices: tuple[int, ...] = ()  # the counts the final timing run tries (default: threads alone)

    def job(self, spec: Spec) -> Job:
        source = self.fp32
        if spec.stem and not spec.root:
            source = Path(self.outcomes[spec.stem_root.name].build["path"])
        return Job(
            spec=spec,
            # Absolute paths: some builders run in a temporary working directory.
            out_dir=(self.root / "candidates" / spec.name.replace(":", "_")).resolve(),
            source_onnx=source.resolve(),
            baseline_onnx=self.fp32.resolve(),
            calib=self.splits.calib,
            eval=self.splits.eval,
            train=self.splits.train,
            task=self.task,
            budget=self.budget,
            seed=self.seed,
            threads=self.threads,
            model_path=self.src.resolve(),
            load_options=self.load_options,
        )

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def measure(self, runner: Any, outcomes: Sequence[Outcome], **options: Any) -> list[Any]:
        """``harness.measure`` through ``runner`` on the evaluation split, fp32 first."""
        from edgekit.benchmarks import harness

        return list(
            runner.measure(
                harness.measure,
                _candidates(outcomes, self.root),
                self.splits.eval,
                baseline=BASELINE.name,
                budget=self.budget,
                threads=self.threads,
                with_memory=False,
                **options,
            )
        )


def search(
    model: str | Path,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    budget: Budget | None = None,
    minutes: float = 10.0,
    out: str | Path | None = None,
    keep: int = 0,
    resume: bool = False,
    peers: bool = False,
    prune_ratios: Sequence[float] | None = None,
    distill_widths: Sequence[float] | None = None,
    prune_lrs: Sequence[float | None] = DEFAULT_PRUNE_LRS,
    strategy_name: str = "auto",
    trials: int | None = None,
    fp16: bool = True,
    graphs: Sequence[str] | None = None,
    executor: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    device: str = "local",
    host: str | None = None,
    ssh_options: Sequence[str] = (),
    remote_edgekit: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    time_budget_s: float = 0.5,
    bundle: bool = True,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    command: str = "edgekit search",
    progress: Progress = lambda _m: None,
) -> SearchResult:
    """Search the candidates for ``model`` and write ``out`` (report.json, pareto.png, journal,
    the winner's bundle). ``graphs`` limits the graph techniques (default: all that apply)."""
    from edgekit.search import executors

    start = time.monotonic()
    budget = budget or Budget()
    if minutes <= 0:
        raise BadInputError(f"--minutes must be > 0 (got {minutes})")
    if keep < 0:
        raise BadInputError(f"--keep must be >= 0 (got {keep})")
    remote = None
    if host:  # a mistyped address, an unreachable device or one without edgekit fails here, before any write
        from edgekit.devices.remote import launcher

        remote = launcher(host, ssh_options=ssh_options, remote_edgekit=remote_edgekit)
        remote.run(["--version"])
    src = Path(model)
    root = _output_root(src, out, resume)
    runtimes = _runtimes(target)
    threads_given = threads is not None
    from edgekit.benchmarks.latency import thread_choices
    from edgekit.pipeline.options import threads as resolve_threads

    threads, threads_source = resolve_threads(threads)
    # Measured here, each candidate is timed at each count it could be deployed with and keeps its
    # fastest; on a device (--host) at one count, the device's own default unless --threads.
    choices = thread_choices(threads, threads_source) if remote is None else (threads,)
    plan = _prepare(
        src, root, data, runtimes, budget, threads, seed, resume, command,
        {"arch": arch, "trust_pickle": trust_pickle, "input_shape": input_shape}, start + minutes * 60.0, minutes,
        progress,
    )  # fmt: skip
    plan.thread_choices = choices
    trainable = (
        plan.loaded.module is not None
        and plan.loaded.eager
        and plan.splits.train is not None
        and plan.task in TRAINABLE
    )
    _plan_space(plan, trainable, prune_ratios, distill_widths, prune_lrs, fp16, peers, graphs)
    runner = executors.make(executor, jobs=jobs, address=ray_address, device=device, threads=threads)
    if remote is not None:
        from edgekit.search.remote import RemoteMeasure

        runner = RemoteMeasure(runner, remote, threads=threads if threads_given else None)
        progress(f"candidates are built here and measured on {runner.where}")
    strat = None
    try:
        for level, specs in ((0, plan.level0), (1, plan.level1)):
            strat = _build_level(plan, runner, level, specs, resume, strategy_name, trials, progress)
            if level == 0:
                _gate(plan, runner, progress)
        rows, timing_s = _time_all(plan, runner, time_budget_s, progress)
    finally:
        runner.close()
    _record(plan, rows)
    metric_name = rows[0].metric["name"] if rows[0].metric else None
    winner, ranked, why = choose(plan.outcomes, runtimes, metric_name)
    points = points_of(plan.outcomes, metric_name)
    front = pareto.front([(p["name"], p["latency"], p["score"]) for p in points])
    plot_path = pareto.plot(points, front, root / "pareto.png", score_label=score_label(metric_name), winner=winner)
    from edgekit.benchmarks.report import machine_info

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "search",
        "command": command,
        "model": {"source": str(src), "sha256": plan.loaded.sha256, "task": plan.task, "inputs": plan.names},
        "machine": {**machine_info(threads), "threads_tried": list(choices)},
        "measured_on": {"address": runner.where, **runner.machine} if host else "this machine",
        "target": target,
        "runtimes": list(runtimes),
        "budget": budget.describe(metric_name),
        "data": {**plan.splits.info, "eval_sha256": plan.splits.eval.sha256()},
        "executor": executor,
        "strategy": strat.name if strat else "exhaustive",
        "minutes": minutes,
        "timing_s_per_candidate": timing_s,
        "elapsed_s": round(time.monotonic() - start, 1),
        "notes": plan.notes,
        "score": score_label(metric_name),
        "candidates": [o.as_dict(root) for o in plan.outcomes.values()],
        "pareto_front": front,
        "winner": winner,
        "why": why,
        "kept": ranked[1 : 1 + keep],
        "peers": peer_rows(plan.outcomes, winner, metric_name),
        "plot": plot_path.name,
    }
    bundles: list[Path] = []
    if bundle and winner:
        for rank, name in enumerate(ranked[: 1 + keep]):
            dest = root / ("winner" if rank == 0 else f"keep-{rank + 1}")
            progress(f"writing the bundle of {name} to {dest}")
            o = plan.outcomes[name]
            # Without --threads, compress times the bundle at each count too and records the fastest.
            info = bundle_of(o.spec, src, dest, data, target, budget, seed, threads if threads_given else None,
                             plan.load_options, progress, Path(o.build["path"]))  # fmt: skip
            bundles.append(dest)
            report.setdefault("bundles", []).append({"candidate": name, "path": dest.name, **info})
    report_path = root / "report.json"
    from edgekit.io.atomic import atomic_write_text

    atomic_write_text(report_path, json.dumps(report, indent=2, default=str))
    error = None
    if winner is None:
        error = f"no candidate passed the fidelity gate; every candidate is listed in {report_path}"
    return SearchResult(root, report, report_path, plot_path, winner, bundles, error)


def _output_root(src: Path, out: str | Path | None, resume: bool) -> Path:
    """Where the search writes, refused before any write when it would overwrite the input or
    another search (unless ``resume``, which needs the journal of one)."""
    root = Path(out) if out else src.with_name(src.stem + ".search")
    if root.resolve() == src.resolve() or src.resolve().is_relative_to(root.resolve()):
        raise BadInputError(f"output {root} would overwrite the input model; choose another -o")
    journal_path = root / "journal.jsonl"
    if resume and not journal_path.exists():
        raise BadInputError(f"--resume: {journal_path} does not exist; run without --resume first")
    if not resume and root.exists() and any(root.iterdir()):
        raise BadInputError(f"{root} already exists; pass --resume to continue that search or choose another -o")
    return root


def _runtimes(target: str | None) -> tuple[str, ...]:
    """The runtimes to search on: the target's, else ONNX Runtime and OpenVINO; those this machine
    can run."""
    from edgekit.devices.detect import target_runtime

    wanted = (target_runtime(target),) if target else ("onnxruntime", "openvino")
    runtimes = tuple(_runnable(wanted))
    if not runtimes:
        raise BadInputError(f"this machine cannot run {', '.join(wanted)}; search on the device or pick another target")
    return runtimes


def _prepare(
    src: Path, root: Path, data: str | Path | None, runtimes: tuple[str, ...], budget: Budget, threads: int,
    seed: int, resume: bool, command: str, load_options: dict[str, Any], deadline: float, minutes: float,
    progress: Progress,
) -> _Plan:  # fmt: skip
    """Load the model and its data, open the journal, export the fp32 ONNX (unless resumed) and
    find the task from its output."""
    from edgekit.compress.quantize import model_inputs
    from edgekit.export.onnx import export_onnx
    from edgekit.io.models import load_model
    from edgekit.io.splits import infer_task, resolve_data
    from edgekit.runtimes import get_runtime

    progress(f"loading {src}")
    loaded = load_model(src, **load_options)
    splits = resolve_data(loaded, data, "data", seed)
    root.mkdir(parents=True, exist_ok=True)
    journal = Journal(root / "journal.jsonl")
    if not resume:
        journal.write("start", "", command=command, model=str(src), sha256=loaded.sha256)
    base_dir = root / "candidates" / BASELINE.name
    base_dir.mkdir(parents=True, exist_ok=True)
    fp32 = base_dir / "model.fp32.onnx"
    if not (resume and fp32.exists()):
        progress("exporting the fp32 model to ONNX (checked against torch)")
        export_onnx(loaded, fp32, sample=splits.eval.head(16).inputs)
    names = list(model_inputs(fp32))
    splits = splits.map(lambda ds: dataclasses.replace(ds, inputs=ds.bind(names)))
    probe = get_runtime("onnxruntime", threads=threads).load(fp32).run(splits.eval.head(2).inputs)[0]
    task = infer_task(splits, np.asarray(probe), (loaded.meta or {}).get("task"))
    splits = splits.map(lambda ds: dataclasses.replace(ds, task=task))
    return _Plan(src, root, journal, runtimes, budget, threads, loaded, splits, names, task, fp32, load_options,
                 [], [], {}, [], seed, deadline, minutes)  # fmt: skip


def _plan_space(
    plan: _Plan, trainable: bool, prune_ratios: Sequence[float] | None, distill_widths: Sequence[float] | None,
    prune_lrs: Sequence[float | None], fp16: bool, peers: bool, graphs: Sequence[str] | None,
) -> None:  # fmt: skip
    """The candidates of both levels (``plan.level0``/``level1``) and an outcome for each, the fp32
    baseline already built."""
    from edgekit.export.patterns import detect
    from edgekit.runtimes.openvino import bf16_support

    why_not = f"it needs the torch module, labelled training data and a {'/'.join(TRAINABLE)} task"
    if prune_ratios is None:
        prune_ratios = DEFAULT_PRUNE if trainable else ()
        if not trainable:
            plan.notes.append(f"structured pruning skipped: {why_not} (fine-tuning)")
    if distill_widths is None:
        distill_widths = DEFAULT_DISTILL if trainable else ()
        if not trainable:
            plan.notes.append(f"distillation skipped: {why_not}")
    level0, level1 = space(
        plan.runtimes,
        prune_ratios=tuple(prune_ratios),
        fp16=fp16,
        mixed=plan.budget.explicit,
        peers=peers,
        distill_widths=tuple(distill_widths),
        prune_lrs=tuple(prune_lrs),
        attention=detect(plan.fp32).transformer,
        bf16=bf16_support()[0],
    )
    if graphs is not None:
        keep_graphs = set(graphs) | {"fp32"}
        level0 = [s for s in level0 if s.peer or s.graph in keep_graphs]
        level1 = [s for s in level1 if s.graph in keep_graphs]
    plan.level0, plan.level1 = level0, level1
    plan.outcomes = {s.name: Outcome(s) for s in level0 + level1}
    base = plan.outcomes[BASELINE.name]
    base.build = {"ok": True, "path": str(plan.fp32), "extra_files": [], "notes": [], "build_s": 0.0}
    base.status = "built"


def _build_level(
    plan: _Plan, runner: Any, level: int, specs: Sequence[Spec], resume: bool, strategy_name: str,
    trials: int | None, progress: Progress,
) -> Any:  # fmt: skip
    """Build one level's candidates (level 1 through the sampling strategy, which it returns);
    every outcome ends with a status and, when not built, the reason."""
    from edgekit.benchmarks import harness

    outcomes = plan.outcomes
    todo = []
    for spec in specs:
        o = outcomes[spec.name]
        if o.status == "built":
            continue
        failed = [p for p in spec.parents if not _passed(outcomes.get(p))]
        if failed:
            o.status = "not_extended"
            o.reason = f"not built: {', '.join(failed)} failed the gate or was not built"
            continue
        rt_reason = harness.cannot_run(spec.runtime)
        if rt_reason:
            o.status, o.reason = "not_runnable", rt_reason
            continue
        done = plan.journal.last("built", spec.name) if resume else None
        if done and done.get("ok") and Path(done["path"]).exists():
            o.build, o.status, o.resumed = done, "built", True
            continue
        if plan.out_of_time():
            o.status, o.reason = "out_of_time", f"not built: the {plan.minutes:g}-minute budget ran out"
            continue
        todo.append(plan.job(spec))
    strat = strategy.make(strategy_name, len(todo), seed=plan.seed, trials=trials) if level else None
    rounds = strat.rounds(todo) if strat else iter([todo] if todo else [])
    if todo:
        how = f", {strat.name} strategy" if strat else ""
        progress(f"building up to {len(todo)} level-{level} candidates ({runner.name} executor{how})")
    proposed: set[str] = set()
    for batch in rounds:
        if plan.out_of_time():
            break
        for j, result in runner.builds(batch):
            proposed.add(j.spec.name)
            o = outcomes[j.spec.name]
            o.build = result
            o.status = "built" if result["ok"] else "build_failed"
            o.reason = None if result["ok"] else result["error"]
            plan.journal.write("built", j.spec.name, **result)
            progress(f"{'built' if result['ok'] else 'FAILED'} {j.spec.name} ({result['build_s']} s)")
            if strat is not None and strat.trials:
                strat.tell(j.spec, _trial(plan, runner, o))
    for j in todo:
        o = outcomes[j.spec.name]
        if j.spec.name in proposed:
            continue
        if plan.out_of_time():
            o.status, o.reason = "out_of_time", f"not built: the {plan.minutes:g}-minute budget ran out"
        else:
            o.status = "not_proposed"
            trials_run = strat.trials if strat else 0
            o.reason = f"not built: the sampler did not propose it within {trials_run} builds"
    return strat


def _gate(plan: _Plan, runner: Any, progress: Progress) -> None:
    """The fidelity gate on every built candidate not gated yet (level 0: level 1 extends only
    what passed)."""
    built = [o for o in plan.outcomes.values() if o.status == "built" and o.row is None]
    if not built:
        return
    progress(f"fidelity gate on {len(built)} candidates")
    base = plan.outcomes[BASELINE.name]
    for row in plan.measure(runner, [base] + [o for o in built if o.spec != BASELINE], batches=()):
        plan.outcomes[row.name].row = row
        plan.journal.write("gated", row.name, deployable=row.deployable, reason=row.rejected_reason)


def _time_all(plan: _Plan, runner: Any, asked_s: float, progress: Progress) -> tuple[list[Any], float]:
    """One interleaved timing run over every built candidate, shortened to fit ``--minutes``."""
    measured = [o for o in plan.outcomes.values() if o.status == "built"]
    counts = len(plan.thread_choices) or 1
    timing_s = timing_budget(asked_s, plan.deadline - time.monotonic(), measured, plan.outcomes, counts)
    if timing_s < asked_s:
        plan.notes.append(
            f"timing shortened to {timing_s:.3g} s per candidate (asked {asked_s:g} s) "
            f"to stay within --minutes {plan.minutes:g}"
        )
    at = f" at {'/'.join(map(str, plan.thread_choices))} threads" if counts > 1 else ""
    progress(f"timing {len(measured)} candidates{at} at batch 1, interleaved ({timing_s:.3g} s each)")
    base = plan.outcomes[BASELINE.name]
    rows = plan.measure(runner, [base] + [o for o in measured if o is not base], batches=(1,), budget_s=timing_s,
                        **({"thread_choices": plan.thread_choices} if counts > 1 else {}))  # fmt: skip
    return rows, timing_s


def _record(plan: _Plan, rows: Sequence[Any]) -> None:
    """Each measured row into its outcome's status, and into the journal."""
    for row in rows:
        o = plan.outcomes[row.name]
        o.row = row
        if not row.measured:
            o.status, o.reason = "not_runnable", row.not_measured_reason
        elif row.deployable:
            o.status = "measured"
        else:
            o.status, o.reason = "rejected", row.rejected_reason
        plan.journal.write("measured", row.name, status=o.status, p50=(row.latency_ms or {}).get("p50"))


def timing_budget(
    asked: float, left_s: float, measured: Sequence[Outcome], outcomes: dict[str, Outcome], counts: int = 1
) -> float:
    """Seconds of timing per candidate and thread count (``counts`` of them) so that the timing run
    (about 1.5× the sum, with loading and warm-up) and the winner's rebuild (its measured build
    time) fit in what is left of ``--minutes``; never below :data:`MIN_TIMING_S` (20 calls at
    least are timed anyway)."""

    def rebuild_s(o: Outcome) -> float:
        stem = outcomes.get(o.spec.stem_root.name) if o.spec.stem and not o.spec.root else None
        return float(o.build.get("build_s") or 0) + (float(stem.build.get("build_s") or 0) if stem else 0.0)

    reserve = max((rebuild_s(o) for o in measured), default=0.0)
    fit = (left_s - reserve) / (1.5 * max(len(measured), 1) * max(counts, 1))
    return max(MIN_TIMING_S, min(asked, fit))


def _trial(plan: _Plan, runner: Any, o: Outcome) -> tuple[float, float] | None:
    """A sampler's objectives for one built candidate: p50 relative to fp32 timed alongside it (a short
    run), and its score; None when it failed to build or failed the gate."""
    if o.status != "built":
        return None
    b, r = plan.measure(runner, [plan.outcomes[BASELINE.name], o], batches=(1,), budget_s=0.05)
    value = score(r, r.metric["name"] if r.metric else None)
    if not (r.measured and r.deployable and r.latency_ms and b.latency_ms) or value is None:
        return None
    return float(r.latency_ms["p50"]) / float(b.latency_ms["p50"]), value


def _passed(o: Outcome | None) -> bool:
    return o is not None and o.row is not None and o.row.measured and o.row.deployable


def _candidates(outcomes: Sequence[Outcome], root: Path) -> list[Any]:
    from edgekit.benchmarks.harness import Candidate

    out = []
    for o in outcomes:
        path = Path(o.build["path"])
        size = path.stat().st_size + sum(Path(p).stat().st_size for p in o.build.get("extra_files", []))
        out.append(
            Candidate(
                name=o.spec.name,
                runtime=o.spec.runtime,
                precision=o.spec.precision,
                path=path,
                techniques=o.spec.techniques,
                notes=list(o.build.get("notes", [])),
                extra_files=[Path(p) for p in o.build.get("extra_files", [])],
                size_bytes=size,
                artifact=rel(path, root),
            )
        )
    return out
