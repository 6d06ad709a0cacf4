"""``edgekit search`` on a real trained model (digits-cnn) with a small candidate space: every
candidate in the report with its status, the gate stops extensions of failures, peers measured in
the same run, the winner bundled, the Pareto front, resume from the journal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.benchmarks.gate import Budget
from edgekit.search import pareto

SEARCH_BUDGET = Budget(max_drop=0.0, min_sqnr_db=15.0)
STATUSES = {"measured", "rejected", "build_failed", "not_extended", "not_proposed", "out_of_time", "not_runnable"}


def test_pareto_front_on_synthetic_points() -> None:
    pts = [
        ("a", 1.0, 0.90),  # fastest
        ("b", 2.0, 0.95),
        ("c", 2.5, 0.94),  # dominated by b (slower, worse)
        ("d", 3.0, 0.99),  # best score
        ("e", 3.0, 0.98),  # dominated by d (same speed, worse)
        ("f", 1.0, 0.85),  # dominated by a (same speed, worse)
        ("g", 4.0, 0.99),  # dominated by d (slower, same score)
    ]
    assert pareto.front(pts) == ["a", "b", "d"]
    assert pareto.front([("x", 1.0, 1.0), ("y", 1.0, 1.0)]) == ["x", "y"]  # ties both stay
    assert pareto.front([]) == []


@pytest.fixture(scope="module")
def searched(trained, tmp_path_factory):
    from edgekit.search import search

    _, model = trained("digits-cnn")
    out = tmp_path_factory.mktemp("search") / "digits.search"
    # SQNR >= 15 dB: fine-tuning after 0.7 structured pruning moves the logits far from fp32's
    # (about 7 dB, whatever the accuracy) while INT8 stays above 25 dB, so the pruned candidate
    # fails the gate on every machine and its INT8 extension must not be built.
    result = search(
        model,
        out=out,
        budget=SEARCH_BUDGET,
        graphs=("int8-static",),
        prune_ratios=(0.7,),
        prune_lrs=(None,),
        distill_widths=(),
        peers=True,
        minutes=5,
        time_budget_s=0.05,
        keep=1,
    )
    return result


def test_every_candidate_is_reported_with_a_status(searched) -> None:
    report = json.loads(searched.report_path.read_text())
    names = {c["name"]: c for c in report["candidates"]}
    expected = {
        "fp32@ort",
        "fp32@ov",
        "int8-static@ort",
        "int8-static@ov",
        "prune0.7+fp32@ort",
        "prune0.7+fp32@ov",
        "prune0.7+int8-static@ort",
        "prune0.7+int8-static@ov",
        "peer:ort-quantize_static",
        "peer:ort-quantize_dynamic",
        "peer:nncf-quantize-openvino",
        "peer:torch-eager-fp32",
    }
    assert set(names) == expected
    for c in names.values():
        assert c["status"] in STATUSES, c
        if c["status"] != "measured":
            assert c["reason"], c  # every non-winner-eligible candidate says why
        if c["status"] in ("measured", "rejected"):
            assert c["latency_ms"]["p50"] > 0 and c["metric"]["name"] == "accuracy"
    assert (searched.out / report["plot"]).stat().st_size > 10_000  # a real PNG
    assert report["pareto_front"] and set(report["pareto_front"]) <= set(names)


def test_a_gate_failure_is_never_extended(searched) -> None:
    report = json.loads(searched.report_path.read_text())
    names = {c["name"]: c for c in report["candidates"]}
    assert names["prune0.7+fp32@ort"]["status"] == "rejected", names["prune0.7+fp32@ort"]
    for c in names.values():
        failed_parent = [p for p in c["parents"] if names[p]["status"] != "measured"]
        if failed_parent:
            assert c["status"] == "not_extended" and "artifact" not in c, c
        elif c["parents"]:
            assert c["status"] != "not_extended", c
    journal = [json.loads(line) for line in (searched.out / "journal.jsonl").read_text().splitlines()]
    built = {e["candidate"] for e in journal if e["event"] == "built"}
    assert "prune0.7+int8-static@ort" not in built and "prune0.7+fp32@ort" in built


def test_winner_follows_the_stated_rule_and_is_bundled(searched) -> None:
    from edgekit.bundle import manifest as mf

    report = searched.report
    rows = [c for c in report["candidates"] if c["status"] == "measured" and not c["peer"]]
    peers = [c for c in report["candidates"] if c["peer"] and c.get("latency_ms")]

    def unbeaten(c: dict) -> bool:  # at least as fast as every peer and scoring at least as well
        return all(
            c["latency_ms"]["p50"] <= p["latency_ms"]["p50"] and c["metric"]["value"] >= p["metric"]["value"]
            for p in peers
        )

    pool = [c for c in rows if unbeaten(c)] or rows
    assert report["winner"] == min(pool, key=lambda c: c["latency_ms"]["p50"])["name"]
    winner = next(c for c in rows if c["name"] == report["winner"])
    assert winner["deployable"] and winner["metric_drop"] <= 0.0 + 1e-9
    assert report["winner"] in report["why"]
    assert searched.bundles == [searched.out / "winner", searched.out / "keep-2"]  # --keep 1: the runner-up too
    assert [b["candidate"] for b in report["bundles"]] == [report["winner"], report["kept"][0]]
    for path, info in zip(searched.bundles, report["bundles"], strict=True):
        manifest = mf.read(path, verify=True)  # hashes checked
        assert info["variant"] in {v["name"] for v in manifest.variants}
        assert isinstance(info["identical_to_candidate"], bool)


def test_peers_are_measured_against_the_winner(searched) -> None:
    peers = {p["peer"]: p for p in searched.report["peers"]}
    assert set(peers) == {
        "peer:ort-quantize_static",
        "peer:ort-quantize_dynamic",
        "peer:nncf-quantize-openvino",
        "peer:torch-eager-fp32",
    }
    for p in peers.values():
        assert p["status"] in ("measured", "rejected"), p
        assert p["latency_ratio"] == pytest.approx(p["winner_p50_ms"] / p["peer_p50_ms"], rel=1e-3)
        assert "metric_difference" in p


def test_resume_skips_what_the_journal_lists(searched) -> None:
    from edgekit.search import search

    journal = searched.out / "journal.jsonl"
    before = [json.loads(line) for line in journal.read_text().splitlines()]
    again = search(
        searched.report["model"]["source"],
        out=searched.out,
        budget=SEARCH_BUDGET,
        graphs=("int8-static",),
        prune_ratios=(0.7,),
        prune_lrs=(None,),
        distill_widths=(),
        peers=True,
        minutes=5,
        time_budget_s=0.02,
        resume=True,
        bundle=False,
    )
    after = [json.loads(line) for line in journal.read_text().splitlines()]
    new_builds = [e for e in after[len(before) :] if e["event"] == "built"]
    assert new_builds == []
    built = [c for c in again.report["candidates"] if c.get("artifact") and c["name"] != "fp32@ort"]
    assert built and all(c["resumed"] for c in built)
    assert {c["name"]: c["status"] for c in again.report["candidates"]}.keys() == {
        c["name"] for c in searched.report["candidates"]
    }


def test_cli_refuses_to_overwrite_a_search_without_resume(searched) -> None:
    from edgekit.cli import main

    code = main(["search", searched.report["model"]["source"], "-o", str(searched.out)])
    assert code == 2


def test_cli_search_help() -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    result = CliRunner().invoke(cli, ["search", "--help"])
    assert result.exit_code == 0 and "--peers" in result.output and "--resume" in result.output


def test_steps_rebuild_each_candidate_kind(tmp_path: Path) -> None:
    from edgekit.compress.prune import PruneConfig
    from edgekit.compress.quantize import Int8Config
    from edgekit.search.rebuild import steps_for
    from edgekit.search.space import Spec

    assert steps_for(Spec("fp32", "openvino")) == []
    steps = steps_for(Spec("int8-static", "openvino", 0.5))
    assert steps == [PruneConfig(kind="structured", amount=0.5), Int8Config(runtimes=("openvino",))]
    assert steps_for(Spec("int8-dynamic", "onnxruntime")) == [Int8Config(runtimes=("onnxruntime",), mode="dynamic")]


def test_compress_without_target_recommends_the_fastest_on_any_runtime(trained, tmp_path: Path) -> None:
    from edgekit import api
    from edgekit.compress.quantize import Int8Config

    _, model = trained("digits-cnn")
    result = api.compress(
        model,
        steps=[Int8Config(runtimes=("onnxruntime", "openvino"))],
        out=tmp_path / "b",
        time_budget_s=0.05,
        with_memory=False,
    )
    ok = [r for r in result.report.variants if r.deployable and r.measured and r.latency_ms]
    assert {r.runtime for r in ok} == {"onnxruntime", "openvino"}
    ok.append(result.report.baseline)  # fp32 is always a candidate
    fastest = min(ok, key=lambda r: (round(r.latency_ms["p50"], 3), r.size_bytes or 0))
    assert result.report.recommended == fastest.name
    # bench of that bundle keeps the rule: no target was given, so every runtime competes
    report, _ = api.bench(result.bundle, time_budget_s=0.05, with_memory=False)
    timed = [r for r in [report.baseline, *report.variants] if r.deployable and r.measured and r.latency_ms]
    assert report.recommended == min(timed, key=lambda r: (round(r.latency_ms["p50"], 3), r.size_bytes or 0)).name


def test_ray_executor_finds_the_same_candidates_and_winner_as_the_pool(trained, tmp_path: Path) -> None:
    import ray

    from edgekit.search import search

    _, model = trained("digits-cnn")
    # fp32 on ONNX Runtime vs OpenVINO: two candidates whose latencies differ by far more than noise.
    small = dict(graphs=(), prune_ratios=(), distill_widths=(), fp16=False, minutes=5, time_budget_s=0.1, bundle=False)
    pool = search(model, out=tmp_path / "pool", executor="local", **small)
    remote = search(model, out=tmp_path / "ray", executor="ray", **small)
    assert not ray.is_initialized()  # the executor shuts down the instance it started
    statuses = {c["name"]: c["status"] for c in pool.report["candidates"]}
    assert statuses == {c["name"]: c["status"] for c in remote.report["candidates"]}
    assert set(statuses) == {"fp32@ort", "fp32@ov"}
    assert pool.winner == remote.winner is not None
    assert remote.report["executor"] == "ray"


def test_openvino_runs_read_only_and_strided_inputs(trained, tmp_path: Path) -> None:
    """Arrays from a Ray object store are read-only; a bound-tensor cache must not break them."""
    import numpy as np

    from edgekit.compress.quantize_ov import ov_fp32_ir
    from edgekit.export.onnx import export_onnx
    from edgekit.runtimes import get_runtime

    result, _ = trained("digits-cnn")
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(result.module, onnx_path, sample={"input": x})
    rt = get_runtime("openvino").load(ov_fp32_ir(onnx_path, tmp_path / "m.xml").path)
    name = rt.inputs[0].name
    ref = rt.run({name: x.copy()})[0]
    ro = x.copy()
    ro.flags.writeable = False
    strided = np.repeat(x, 2, axis=0)[::2]
    for feed in (ro, strided, x, x):  # x twice: the second call reuses the cached tensor
        np.testing.assert_allclose(rt.run({name: feed})[0], ref, rtol=1e-5, atol=1e-5)
    x[:] = 0  # the cached tensor shares x's memory: new contents must be seen
    np.testing.assert_allclose(rt.run({name: x})[0], rt.run({name: x.copy()})[0], rtol=1e-5, atol=1e-5)


def test_fp32_wins_and_says_so_when_int8_is_slower() -> None:
    from edgekit.benchmarks.report import VariantRow
    from edgekit.search.choose import choose
    from edgekit.search.outcome import Outcome
    from edgekit.search.space import Spec

    def outcome(spec: Spec, p50: float, status: str = "measured") -> Outcome:
        row = VariantRow(spec.name, spec.runtime, spec.precision, spec.techniques, None, 100)
        row.latency_ms = {"p50": p50}
        row.deployable = status == "measured"
        return Outcome(spec, status=status, row=row)

    specs = {
        "fp32@ort": (Spec("fp32", "onnxruntime"), 0.10, "measured"),
        "int8-static@ort": (Spec("int8-static", "onnxruntime"), 0.13, "measured"),
        "int8-dynamic@ort": (Spec("int8-dynamic", "onnxruntime"), 0.05, "rejected"),
        "fp32@ov": (Spec("fp32", "openvino"), 0.09, "measured"),  # not in the target's runtimes
    }
    outcomes = {name: outcome(*args) for name, args in specs.items()}
    winner, ranked, why = choose(outcomes, ("onnxruntime",))
    assert winner == "fp32@ort" and ranked == ["fp32@ort", "int8-static@ort"]
    assert "INT8 was slower than fp32" in why and "int8-static@ort" in why
    assert "Faster but rejected by the gate: int8-dynamic@ort" in why
    winner, _, why = choose(outcomes, ("onnxruntime", "openvino"))
    assert winner == "fp32@ov" and "INT8 was slower" not in why  # no INT8 on OpenVINO was measured


def test_space_keeps_the_reference_and_orders_cheap_first() -> None:
    from edgekit.search.space import space

    level0, level1 = space(("openvino",), prune_ratios=(0.5,), fp16=True, mixed=False, peers=False)
    names0 = [s.name for s in level0]
    assert names0[0] == "fp32@ort"  # the gate's reference, even for an OpenVINO-only target
    assert names0 == ["fp32@ort", "fp32@ov", "fp16@ov", "int8-static@ov", "prune0.5+fp32@ort"]
    assert [s.name for s in level1] == ["prune0.5+fp32@ov", "prune0.5+fp16@ov", "prune0.5+int8-static@ov"]
    assert level1[2].parents == ("prune0.5+fp32@ort", "int8-static@ov")
    level0, _ = space(("onnxruntime",), prune_ratios=(), fp16=False, mixed=True, peers=True)
    assert "int8-mixed@ort" in [s.name for s in level0] and sum(s.peer for s in level0) == 4


def test_an_attention_graph_measures_both_int8_schemes() -> None:
    from edgekit.compress.quantize import Int8Config
    from edgekit.search.rebuild import steps_for
    from edgekit.search.space import Spec, space

    plain, _ = space(("onnxruntime", "openvino"), prune_ratios=(), fp16=False, mixed=False, peers=False)
    assert not any(s.graph == "int8-cnn" for s in plain)  # a CNN: the auto scheme is the default one
    level0, _ = space(
        ("onnxruntime", "openvino"), prune_ratios=(), fp16=False, mixed=False, peers=False, attention=True
    )
    names = [s.name for s in level0]
    assert names.index("int8-static@ov") < names.index("int8-cnn@ov")  # both, the auto scheme first
    assert {"int8-cnn@ort", "int8-cnn@ov"} <= set(names)
    cnn = Spec("int8-cnn", "openvino")
    assert cnn.techniques == ["quantize:int8-static", "scheme:cnn"] and cnn.precision == "int8"
    assert steps_for(cnn) == [Int8Config(runtimes=("openvino",), scheme="cnn")]
    assert steps_for(Spec("int8-static", "openvino")) == [Int8Config(runtimes=("openvino",))]


def test_a_bf16_cpu_adds_the_bf16_candidate() -> None:
    from edgekit.compress.quantize import Int8Config
    from edgekit.search.rebuild import steps_for
    from edgekit.search.space import Spec, space

    runtimes = ("onnxruntime", "openvino")
    without, _ = space(runtimes, prune_ratios=(0.5,), fp16=True, mixed=False, peers=False)
    level0, level1 = space(runtimes, prune_ratios=(0.5,), fp16=True, mixed=False, peers=False, bf16=True)
    assert {s.name for s in level0} - {s.name for s in without} == {"bf16@ov"}
    assert "prune0.5+bf16@ov" in {s.name for s in level1}  # a pruned model in bf16 too
    bf16 = Spec("bf16", "openvino")
    assert bf16.precision == "bf16" and bf16.techniques == ["quantize:bf16"]
    assert steps_for(bf16) == [Int8Config(runtimes=("openvino",))]  # compress makes ov-bf16 in that step


def test_bench_calibrate_timer_against_benchmark_app(searched, tmp_path: Path) -> None:
    from edgekit import api

    report, path = api.bench(
        searched.out / "winner",
        runtimes=["openvino"],
        time_budget_s=1.0,
        with_memory=False,
        out=tmp_path / "bench",
        calibrate_timer=True,
    )
    cal = json.loads(path.read_text())["timer_calibration"]
    ov = cal["variants"]["ov-fp32"]
    assert ov["tool"] == "benchmark_app" and ov["status"] == "measured", ov
    assert len(ov["edgekit_runs_ms"]) == len(ov["tool_runs_ms"]) == cal["rounds"]
    assert ov["ratio"] == pytest.approx(float(np.median(ov["round_ratios"])), rel=1e-3)  # paired rounds
    assert ov["ratio_of_medians"] == pytest.approx(ov["edgekit_p50_ms"] / ov["tool_p50_ms"], rel=1e-3)
    assert 0.01 < ov["tool_p50_ms"] < 1000  # parsed from benchmark_app's "Median: … us|ms"
    ort = cal["variants"]["ort-fp32"]
    assert ort["tool"] == "onnxruntime_perf_test" and ort["status"] in ("not available", "measured", "failed")


def _outcome(spec, p50: float, value: float, status: str = "measured"):
    from edgekit.benchmarks.report import VariantRow
    from edgekit.search.outcome import Outcome

    row = VariantRow(spec.name, spec.runtime, spec.precision, spec.techniques, None, 100)
    row.latency_ms = {"p50": p50}
    row.metric = {"name": "accuracy", "value": value}
    row.deployable = status == "measured"
    return Outcome(spec, status=status, row=row)


def test_winner_rule_prefers_a_candidate_no_peer_beats_and_says_why() -> None:
    from edgekit.search.choose import choose
    from edgekit.search.space import Spec

    specs = [
        (Spec("fp32", "onnxruntime"), 0.080, 98.6),
        (Spec("fp32", "onnxruntime", 0.5), 0.038, 98.0),  # fastest, but below the peers
        (Spec("fp32", "onnxruntime", 0.3, prune_lr=1e-3), 0.052, 98.6),  # as fast and as good as every peer
        (Spec("peer:ort-quantize_static", "onnxruntime"), 0.085, 98.6),
        (Spec("peer:nncf-quantize-openvino", "openvino"), 0.105, 98.6),
    ]
    outcomes = {s.name: _outcome(s, p50, v) for s, p50, v in specs}
    winner, ranked, why = choose(outcomes, ("onnxruntime",), "accuracy")
    assert winner == "prune0.3-lr0.001+fp32@ort"
    assert ranked == ["prune0.3-lr0.001+fp32@ort", "fp32@ort", "prune0.5+fp32@ort"]
    assert "at least as fast as every peer pipeline and scores at least as well as each" in why
    assert "prune0.5+fp32@ort" in why  # the faster candidate it passed over, and why
    # No candidate matches a peer on both axes: the fastest within the budget wins, and says so.
    outcomes["peer:ort-quantize_static"] = _outcome(Spec("peer:ort-quantize_static", "onnxruntime"), 0.03, 99.0)
    winner, _, why = choose(outcomes, ("onnxruntime",), "accuracy")
    assert winner == "prune0.5+fp32@ort" and "does not match peer:ort-quantize_static" in why
    # Without peers: simply the fastest within the budget.
    plain = {k: v for k, v in outcomes.items() if not v.spec.peer}
    assert choose(plain, ("onnxruntime",), "accuracy")[0] == "prune0.5+fp32@ort"


def test_space_names_and_rebuilds_distilled_and_gently_tuned_candidates() -> None:
    from edgekit.compress.distill import DistillConfig
    from edgekit.compress.prune import PruneConfig
    from edgekit.compress.quantize import Int8Config
    from edgekit.search.rebuild import steps_for
    from edgekit.search.space import space

    level0, level1 = space(
        ("onnxruntime",),
        prune_ratios=(0.3,),
        fp16=False,
        mixed=False,
        peers=False,
        distill_widths=(0.45,),
        prune_lrs=(None, 1e-3),
    )
    names0 = [s.name for s in level0]
    assert names0[-3:] == ["prune0.3+fp32@ort", "prune0.3-lr0.001+fp32@ort", "distill0.45+fp32@ort"]
    by_name = {s.name: s for s in level1}
    spec = by_name["distill0.45+int8-static@ort"]
    assert spec.parents == ("distill0.45+fp32@ort", "int8-static@ort")
    assert steps_for(spec) == [DistillConfig(width=0.45), Int8Config(runtimes=("onnxruntime",))]
    gentle = by_name["prune0.3-lr0.001+int8-dynamic@ort"]
    assert gentle.parents[0] == "prune0.3-lr0.001+fp32@ort"
    assert steps_for(gentle)[0] == PruneConfig(kind="structured", amount=0.3, lr=1e-3)


def test_optuna_sampler_proposes_distinct_candidates_within_its_trials() -> None:
    from types import SimpleNamespace

    from edgekit.search.space import space
    from edgekit.search.strategy import OptunaSampler, make

    _, level1 = space(
        ("onnxruntime", "openvino"),
        prune_ratios=(0.3, 0.5),
        fp16=True,
        mixed=False,
        peers=False,
        prune_lrs=(None, 1e-3),
    )
    jobs = [SimpleNamespace(spec=s) for s in level1]  # the sampler reads only the spec
    sampler = OptunaSampler(seed=0, trials=10)
    seen = []
    for batch in sampler.rounds(jobs):
        (job,) = batch
        seen.append(job.spec.name)
        fast = job.spec.graph == "fp32" and job.spec.runtime == "onnxruntime"
        sampler.tell(job.spec, None if job.spec.graph == "int8-dynamic" else (0.5 if fast else 1.2, 98.0))
    assert len(seen) == 10 == len(set(seen)) and set(seen) <= {s.name for s in level1}
    assert len(sampler.study.trials) >= 10
    assert make("auto", 10, seed=0, trials=None).name == "exhaustive"
    assert make("auto", 100, seed=0, trials=5).name == "optuna"


def test_optuna_strategy_in_a_real_search(trained, tmp_path: Path) -> None:
    from edgekit.search import search

    _, model = trained("digits-cnn")
    result = search(
        model,
        out=tmp_path / "opt",
        graphs=("fp16", "int8-static"),
        prune_ratios=(0.5,),
        prune_lrs=(None,),
        distill_widths=(),
        strategy_name="optuna",
        trials=2,
        minutes=5,
        time_budget_s=0.02,
        bundle=False,
    )
    report = result.report
    assert report["strategy"] == "optuna"
    level1 = [c for c in report["candidates"] if c["name"].startswith("prune0.5+") and c["name"] != "prune0.5+fp32@ort"]
    assert len(level1) == 5  # fp32@ov, fp16@ort, fp16@ov, int8-static@ort, int8-static@ov
    assert sum(c["status"] in ("measured", "rejected") for c in level1) == 2
    proposed_not = [c for c in level1 if c["status"] == "not_proposed"]
    assert len(proposed_not) == 3 and all("did not propose" in c["reason"] for c in proposed_not)


def test_timing_is_shortened_to_fit_what_is_left_of_the_minutes() -> None:
    from edgekit.search.outcome import Outcome
    from edgekit.search.run import MIN_TIMING_S, timing_budget
    from edgekit.search.space import Spec

    root = Outcome(Spec("fp32", "onnxruntime", 0.5), status="built", build={"build_s": 30.0})
    child = Outcome(Spec("int8-static", "onnxruntime", 0.5), status="built", build={"build_s": 2.0})
    outcomes = {o.spec.name: o for o in (root, child)}
    measured = [root, child]
    assert timing_budget(0.5, 600.0, measured, outcomes) == 0.5  # plenty left: as asked
    # 32 s are kept for rebuilding the winner (its stem's build + its own); the rest spread over 2 × 1.5
    assert timing_budget(5.0, 35.0, measured, outcomes) == pytest.approx(1.0)
    assert timing_budget(0.5, 35.0, measured, outcomes) == 0.5  # never more than asked
    assert timing_budget(0.5, 10.0, measured, outcomes) == MIN_TIMING_S  # out of time: the floor
    # each candidate timed at 2 thread counts: twice the runs share what is left
    assert timing_budget(5.0, 35.0, measured, outcomes, counts=2) == pytest.approx(0.5)


def test_without_a_thread_count_search_times_each_candidate_at_several(trained, tmp_path: Path, monkeypatch) -> None:
    """With the default (the physical cores) the final timing run tries each candidate at every
    count of ``thread_choices`` and ranks it at its fastest; the report says which."""
    from edgekit.benchmarks.latency import physical_cores, thread_choices
    from edgekit.search import search

    for var in ("EDGEKIT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    _, model = trained("digits-cnn")
    small = dict(graphs=(), prune_ratios=(), distill_widths=(), fp16=False, minutes=5, time_budget_s=0.05, bundle=False)
    report = search(model, out=tmp_path / "s", **small).report
    tried = list(thread_choices(physical_cores(), "physical cores"))
    assert report["machine"]["threads_tried"] == tried
    for c in report["candidates"]:
        assert c["threads"] in tried and c["latency_ms"]["threads"] == c["threads"]
        if len(tried) > 1:
            assert c["latency_ms"]["p50"] == min(c["latency_ms"]["p50_by_threads"].values())
    fixed = search(model, out=tmp_path / "f", threads=1, **small).report
    assert fixed["machine"]["threads_tried"] == [1] and {c["threads"] for c in fixed["candidates"]} == {1}
