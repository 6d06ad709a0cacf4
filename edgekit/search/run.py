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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmarks.gate import Budget
from edgekit.errors import BadInputError
from edgekit.search import pareto
from edgekit.search.journal import Journal
from edgekit.search.space import PEERS, Job, Spec, space

Progress = Callable[[str], None]
BASELINE = Spec("fp32", "onnxruntime")
DEFAULT_PRUNE = (0.3, 0.5)
SCHEMA = 1


@dataclass
class Outcome:
    """What happened to one candidate."""

    spec: Spec
    status: str = "pending"  # measured | rejected | build_failed | not_extended | out_of_time | not_runnable
    reason: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    row: Any = None  # the harness VariantRow once measured
    resumed: bool = False

    def as_dict(self, root: Path) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.spec.name,
            "runtime": self.spec.runtime,
            "precision": self.spec.precision,
            "techniques": self.spec.techniques,
            "peer": self.spec.peer,
            "parents": list(self.spec.parents),
            "status": self.status,
            "reason": self.reason,
            "build_s": self.build.get("build_s"),
            "resumed": self.resumed,
        }
        if self.build.get("path"):
            d["artifact"] = _rel(Path(self.build["path"]), root)
        if self.row is not None:
            row = dataclasses.asdict(self.row)
            for k in ("name", "runtime", "precision", "techniques", "artifact"):
                row.pop(k, None)
            d.update(row)
        return d


@dataclass
class SearchResult:
    out: Path
    report: dict[str, Any]
    report_path: Path
    plot_path: Path | None
    winner: str | None
    bundles: list[Path]
    budget_error: str | None = None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _runnable(runtimes: Sequence[str]) -> list[str]:
    from edgekit.benchmarks.harness import cannot_run

    return [rt for rt in runtimes if cannot_run(rt) is None]


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
    fp16: bool = True,
    graphs: Sequence[str] | None = None,
    executor: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    device: str = "local",
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
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.report import machine_info
    from edgekit.devices.detect import target_runtime
    from edgekit.export.onnx import export_onnx
    from edgekit.io.models import load_model
    from edgekit.io.splits import infer_task, resolve_data
    from edgekit.search import executors

    start = time.monotonic()
    budget = budget or Budget()
    if minutes <= 0:
        raise BadInputError(f"--minutes must be > 0 (got {minutes})")
    if keep < 0:
        raise BadInputError(f"--keep must be >= 0 (got {keep})")
    src = Path(model)
    root = Path(out) if out else src.with_name(src.stem + ".search")
    if root.resolve() == src.resolve() or src.resolve().is_relative_to(root.resolve()):
        raise BadInputError(f"output {root} would overwrite the input model; choose another -o")
    journal_path = root / "journal.jsonl"
    if resume and not journal_path.exists():
        raise BadInputError(f"--resume: {journal_path} does not exist; run without --resume first")
    if not resume and root.exists() and any(root.iterdir()):
        raise BadInputError(f"{root} already exists; pass --resume to continue that search or choose another -o")
    wanted = (target_runtime(target),) if target else ("onnxruntime", "openvino")
    runtimes = tuple(_runnable(wanted))
    if not runtimes:
        raise BadInputError(f"this machine cannot run {', '.join(wanted)}; search on the device or pick another target")

    load_options: dict[str, Any] = {"arch": arch, "trust_pickle": trust_pickle, "input_shape": input_shape}
    if threads is None:
        from edgekit.benchmarks.latency import default_threads

        threads = default_threads()[0]
    progress(f"loading {src}")
    loaded = load_model(src, **load_options)
    splits = resolve_data(loaded, data, "data", seed)
    root.mkdir(parents=True, exist_ok=True)
    journal = Journal(journal_path)
    if not resume:
        journal.write("start", "", command=command, model=str(src), sha256=loaded.sha256)
    cand_dir = root / "candidates"
    base_dir = cand_dir / BASELINE.name
    base_dir.mkdir(parents=True, exist_ok=True)
    fp32 = base_dir / "model.fp32.onnx"
    if not (resume and fp32.exists()):
        progress("exporting the fp32 model to ONNX (checked against torch)")
        export_onnx(loaded, fp32, sample=splits.eval.head(16).inputs)
    from edgekit.compress.quantize import model_inputs
    from edgekit.runtimes import get_runtime

    names = list(model_inputs(fp32))
    splits = splits.map(lambda ds: dataclasses.replace(ds, inputs=ds.bind(names)))
    probe = get_runtime("onnxruntime", threads=threads).load(fp32).run(splits.eval.head(2).inputs)[0]
    task = infer_task(splits, np.asarray(probe), (loaded.meta or {}).get("task"))
    splits = splits.map(lambda ds: dataclasses.replace(ds, task=task))

    notes: list[str] = []
    if prune_ratios is None:
        trainable = loaded.module is not None and loaded.eager and splits.train is not None
        prune_ratios = DEFAULT_PRUNE if trainable else ()
        if not trainable:
            notes.append("structured pruning skipped: it needs the torch module and labelled training data")
    level0, level1 = space(runtimes, prune_ratios=tuple(prune_ratios), fp16=fp16, mixed=budget.explicit, peers=peers)
    if graphs is not None:
        keep_graphs = set(graphs) | {"fp32"}
        level0 = [s for s in level0 if s.peer or s.graph in keep_graphs]
        level1 = [s for s in level1 if s.graph in keep_graphs]
    outcomes: dict[str, Outcome] = {s.name: Outcome(s) for s in level0 + level1}
    outcomes[BASELINE.name].build = {"ok": True, "path": str(fp32), "extra_files": [], "notes": [], "build_s": 0.0}
    outcomes[BASELINE.name].status = "built"

    def job(spec: Spec) -> Job:
        source = fp32
        if spec.prune and not spec.root:
            source = Path(outcomes[Spec("fp32", "onnxruntime", spec.prune).name].build["path"])
        return Job(
            spec=spec,
            out_dir=cand_dir / spec.name.replace(":", "_"),
            source_onnx=source,
            baseline_onnx=fp32,
            calib=splits.calib,
            eval=splits.eval,
            train=splits.train,
            task=task,
            budget=budget,
            seed=seed,
            threads=threads,
            model_path=src.resolve(),
            load_options=load_options,
        )

    deadline = start + minutes * 60.0
    runner = executors.make(executor, jobs=jobs, address=ray_address, device=device, threads=threads)
    try:
        for level, specs in ((0, level0), (1, level1)):
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
                done = journal.last("built", spec.name) if resume else None
                if done and done.get("ok") and Path(done["path"]).exists():
                    o.build, o.status, o.resumed = done, "built", True
                    continue
                if time.monotonic() > deadline:
                    o.status, o.reason = "out_of_time", f"not built: the {minutes:g}-minute budget ran out"
                    continue
                todo.append(job(spec))
            if todo:
                progress(f"building {len(todo)} level-{level} candidates ({runner.name} executor)")
            for j, result in runner.builds(todo):
                o = outcomes[j.spec.name]
                o.build = result
                o.status = "built" if result["ok"] else "build_failed"
                o.reason = None if result["ok"] else result["error"]
                journal.write("built", j.spec.name, **result)
                progress(f"{'built' if result['ok'] else 'FAILED'} {j.spec.name} ({result['build_s']} s)")
            built = [o for o in outcomes.values() if o.status == "built" and o.row is None]
            if level == 0 and built:
                progress(f"fidelity gate on {len(built)} candidates")
                rows = runner.measure(
                    harness.measure,
                    _candidates([outcomes[BASELINE.name]] + [o for o in built if o.spec != BASELINE], root),
                    splits.eval,
                    baseline=BASELINE.name,
                    budget=budget,
                    batches=(),
                    threads=threads,
                    with_memory=False,
                )
                for row in rows:
                    o = outcomes[row.name]
                    o.row = row
                    journal.write("gated", row.name, deployable=row.deployable, reason=row.rejected_reason)
        measured = [o for o in outcomes.values() if o.status == "built"]
        progress(f"timing {len(measured)} candidates at batch 1, interleaved")
        base = outcomes[BASELINE.name]
        rows = runner.measure(
            harness.measure,
            _candidates([base] + [o for o in measured if o is not base], root),
            splits.eval,
            baseline=BASELINE.name,
            budget=budget,
            batches=(1,),
            threads=threads,
            budget_s=time_budget_s,
            with_memory=False,
        )
    finally:
        runner.close()
    for row in rows:
        o = outcomes[row.name]
        o.row = row
        if not row.measured:
            o.status, o.reason = "not_runnable", row.not_measured_reason
        elif row.deployable:
            o.status = "measured"
        else:
            o.status, o.reason = "rejected", row.rejected_reason
        journal.write("measured", row.name, status=o.status, p50=(row.latency_ms or {}).get("p50"))

    metric_name = rows[0].metric["name"] if rows[0].metric else None
    winner, ranked, why = _choose(outcomes, runtimes)
    points = _points(outcomes, metric_name)
    front = pareto.front([(p["name"], p["latency"], p["score"]) for p in points])
    plot_path = pareto.plot(points, front, root / "pareto.png", score_label=_score_label(metric_name), winner=winner)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "search",
        "command": command,
        "model": {"source": str(src), "sha256": loaded.sha256, "task": task, "inputs": names},
        "machine": machine_info(threads),
        "target": target,
        "runtimes": list(runtimes),
        "budget": budget.describe(metric_name),
        "data": {**splits.info, "eval_sha256": splits.eval.sha256()},
        "executor": executor,
        "minutes": minutes,
        "elapsed_s": round(time.monotonic() - start, 1),
        "notes": notes,
        "score": _score_label(metric_name),
        "candidates": [o.as_dict(root) for o in outcomes.values()],
        "pareto_front": front,
        "winner": winner,
        "why": why,
        "kept": ranked[1 : 1 + keep],
        "peers": _peer_rows(outcomes, winner, metric_name),
        "plot": plot_path.name,
    }
    bundles: list[Path] = []
    if bundle and winner:
        for rank, name in enumerate(ranked[: 1 + keep]):
            dest = root / ("winner" if rank == 0 else f"keep-{rank + 1}")
            progress(f"writing the bundle of {name} to {dest}")
            o = outcomes[name]
            info = _bundle(
                o.spec, src, dest, data, target, budget, seed, threads, load_options, progress, Path(o.build["path"])
            )
            bundles.append(dest)
            report.setdefault("bundles", []).append({"candidate": name, "path": dest.name, **info})
    report_path = root / "report.json"
    from edgekit.io.atomic import atomic_write_text

    atomic_write_text(report_path, json.dumps(report, indent=2, default=str))
    error = None
    if winner is None:
        error = f"no candidate passed the fidelity gate; every candidate is listed in {report_path}"
    return SearchResult(root, report, report_path, plot_path, winner, bundles, error)


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
                size_bytes=size,
                artifact=_rel(path, root),
            )
        )
    return out


def _score(row: Any, metric_name: str | None) -> float | None:
    if metric_name and row.metric:
        return float(row.metric["value"])
    fid = row.fidelity or {}
    for key in ("top1_agreement", "cosine", "sqnr_db"):
        if fid.get(key) is not None:
            return float(fid[key])
    return None


def _score_label(metric_name: str | None) -> str:
    return f"{metric_name} on held-out data" if metric_name else "fidelity to fp32 (top-1 agreement or cosine)"


def _points(outcomes: dict[str, Outcome], metric_name: str | None) -> list[dict[str, Any]]:
    points = []
    for o in outcomes.values():
        r = o.row
        if r is None or not r.latency_ms:
            continue
        score = _score(r, metric_name)
        if score is None:
            continue
        points.append(
            {
                "name": o.spec.name,
                "runtime": o.spec.runtime,
                "latency": float(r.latency_ms["p50"]),
                "score": score,
                "deployable": bool(r.deployable),
                "peer": o.spec.peer,
            }
        )
    return points


def _p50(o: Outcome) -> float:
    return float(o.row.latency_ms["p50"])


def _choose(outcomes: dict[str, Outcome], runtimes: Sequence[str]) -> tuple[str | None, list[str], str]:
    """The fastest gate-passing candidate (smaller file on a tie), the ranking, and why it won."""
    pool = [
        o
        for o in outcomes.values()
        if o.status == "measured" and not o.spec.peer and o.spec.runtime in runtimes and o.row.latency_ms
    ]
    if not pool:
        return None, [], "no candidate passed the fidelity gate"
    pool.sort(key=lambda o: (round(_p50(o), 4), o.row.size_bytes or 0))
    best = pool[0]
    p50 = _p50(best)
    why = f"{best.spec.name} won: the fastest candidate that passed the fidelity gate (p50 {p50:.3f} ms at batch 1"
    if len(pool) > 1:
        nxt = pool[1]
        why += f", {_p50(nxt) / p50:.2f}× faster than the runner-up {nxt.spec.name}"
    why += ")."
    faster_rejected = [
        o.spec.name
        for o in outcomes.values()
        if o.status == "rejected" and not o.spec.peer and o.row.latency_ms and _p50(o) < p50
    ]
    if faster_rejected:
        why += f" Faster but rejected by the gate: {', '.join(faster_rejected)}."
    if best.spec.precision == "fp32":
        int8 = [
            o
            for o in outcomes.values()
            if o.status in ("measured", "rejected")
            and o.spec.precision in ("int8", "mixed")
            and not o.spec.peer
            and (o.spec.runtime, o.spec.prune) == (best.spec.runtime, best.spec.prune)
            and _p50(o) >= p50
        ]
        if int8:
            o = min(int8, key=_p50)
            why += (
                f" INT8 was slower than fp32 on this machine ({o.spec.name}: {_p50(o):.3f} ms vs {p50:.3f} ms), "
                "so the search keeps fp32."
            )
    return best.spec.name, [o.spec.name for o in pool], why


def _peer_rows(outcomes: dict[str, Outcome], winner: str | None, metric_name: str | None) -> list[dict[str, Any]]:
    w = outcomes.get(winner) if winner else None
    rows = []
    for name in PEERS:
        o = outcomes.get(name)
        if o is None:
            continue
        d: dict[str, Any] = {"peer": name, "status": o.status, "reason": o.reason}
        if w is not None and o.row is not None and o.row.latency_ms:
            d["peer_p50_ms"] = _p50(o)
            d["winner_p50_ms"] = _p50(w)
            d["latency_ratio"] = round(_p50(w) / _p50(o), 4)  # < 1: the winner is faster
            ws, ps = _score(w.row, metric_name), _score(o.row, metric_name)
            if ws is not None and ps is not None:
                d["metric_difference"] = round(ws - ps, 6)  # > 0: the winner scores higher
            d["metric"] = metric_name or "fidelity"
            d["peer_deployable"] = o.row.deployable
            if ps is not None:
                same = _fastest_at_least(outcomes, ps, metric_name)
                if same is not None:  # edgekit's fastest candidate that scores no lower than this peer
                    ratio = round(_p50(same) / _p50(o), 4)
                    d["at_equal_or_better_metric"] = {"candidate": same.spec.name, "latency_ratio": ratio}
        rows.append(d)
    return rows


def _fastest_at_least(outcomes: dict[str, Outcome], score: float, metric_name: str | None) -> Outcome | None:
    pool = [
        o
        for o in outcomes.values()
        if o.status == "measured"
        and not o.spec.peer
        and o.row.latency_ms
        and (_score(o.row, metric_name) or -np.inf) >= score - 1e-9
    ]
    return min(pool, key=_p50) if pool else None


def steps_for(spec: Spec) -> list[object]:
    """The compress steps that rebuild ``spec`` (the same handlers, the same seed)."""
    from edgekit.compress.fp16 import Fp16Config
    from edgekit.compress.prune import PruneConfig
    from edgekit.compress.quantize import Int8Config

    steps: list[object] = []
    if spec.prune:
        steps.append(PruneConfig(kind="structured", amount=spec.prune))
    if spec.graph == "fp16":
        steps.append(Fp16Config(runtimes=(spec.runtime,)))
    elif spec.graph == "int8-dynamic":
        steps.append(Int8Config(runtimes=("onnxruntime",), mode="dynamic"))
    elif spec.graph in ("int8-static", "int8-mixed"):
        steps.append(Int8Config(runtimes=(spec.runtime,)))
    return steps


def _target_for(runtime: str, target: str | None) -> str | None:
    import platform

    from edgekit.devices.detect import TARGETS

    if target:
        return target
    arch = platform.machine()
    return next((t for t, (rt, a) in TARGETS.items() if rt == runtime and a == arch), None)


def _bundle(
    spec: Spec,
    src: Path,
    dest: Path,
    data: Any,
    target: str | None,
    budget: Budget,
    seed: int,
    threads: int,
    load_options: dict[str, Any],
    progress: Progress,
    candidate_file: Path | None = None,
) -> dict[str, Any]:
    """Rebuild the candidate through ``compress`` (same handlers, same seed) into a verified bundle."""
    from edgekit import api

    result = api.compress(
        src,
        steps=steps_for(spec),
        data=data,
        target=_target_for(spec.runtime, target),
        out=dest,
        overwrite=True,
        seed=seed,
        threads=threads,
        budget=budget,
        time_budget_s=0.2,
        with_memory=False,
        command=f"edgekit search (bundle of {spec.name})",
        progress=progress,
        **load_options,
    )
    match = [
        r.name
        for r in result.report.rows()
        if r.runtime == spec.runtime
        and (r.precision == spec.precision or spec.graph == "int8-mixed")
        and bool(spec.prune) == any(t.startswith("prune") for t in r.techniques)
        and (spec.graph != "fp32" or r.precision == "fp32")
    ]
    variant = match[-1] if match else None
    info: dict[str, Any] = {"variant": variant, "recommended": result.report.recommended}
    if variant is not None and candidate_file is not None:
        from edgekit.io.atomic import sha256_file

        row = result.report.row(variant)
        # Same handlers, same seed: the bundle's file should be the searched file, byte for byte.
        info["identical_to_candidate"] = sha256_file(dest / str(row.artifact)) == sha256_file(candidate_file)
    return info
