"""Output kinds: each kind's fidelity figures on outputs with known perturbations, padded
positions filled with garbage that must not count, the gate's rules, detection, extents and the
recommendation that is never empty."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.benchmarks.accuracy import (
    KINDS,
    Outputs,
    OutputSpec,
    ctc_collapse,
    detect,
    figures,
    kind_metrics,
    resolve,
    user_metric,
)
from edgekit.benchmarks.gate import Budget, judge
from edgekit.benchmarks.harness import recommend
from edgekit.benchmarks.latency import default_threads, feeds_from, physical_cores
from edgekit.benchmarks.report import VariantRow
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.io.extents import find_extents

GARBAGE = 1e6


def _padded(values: list[np.ndarray], t_max: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged ``(T_i, C)`` arrays into ``(N, t_max, C)`` with ``fill`` beyond each length."""
    out = np.full((len(values), t_max, values[0].shape[1]), fill, dtype=np.float32)
    valid = np.zeros((len(values), t_max), dtype=bool)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
        valid[i, : len(v)] = True
    return out, valid


def _judge(spec: OutputSpec, fig: dict, budget: Budget | None = None) -> str | None:
    return judge(budget or Budget(), metric=None, metric_drop=None, fidelity=fig, kind=spec.kind)


# ---------------------------------------------------------------------------- classifier
def test_classifier_agreement_counts_swapped_rows_and_forgives_exact_ties() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 10)).astype(np.float32)
    ref[np.arange(200), ref.argmax(1)] += 3.0  # a clear winner in every row
    out = ref.copy()
    for i in range(5):  # swap the top two classes of 5 rows: 5 real disagreements
        a, b = np.argsort(ref[i])[-2:]
        out[i, [a, b]] = out[i, [b, a]]
    ref[10, :2] = 50.0  # an exact tie in fp32: either class is the same reading
    out[10, :2] = [50.0, 50.001]
    spec = OutputSpec("classifier")
    fig = figures(spec, ref, out)
    assert fig["kind"] == "classifier"
    assert fig["top1_agreement"] == pytest.approx(195 / 200)
    assert 0.9 < fig["cosine"] < 1.0
    assert _judge(spec, fig) == "top-1 agreement 0.9750 < 0.99"
    assert _judge(spec, fig, Budget(max_drop=3.0, min_cosine=0.98)) is None  # 3 points of agreement allowed


# ----------------------------------------------------------------------------- embedding
@pytest.fixture(scope="module")
def token_states() -> tuple[Outputs, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 16, size=40)
    states = [rng.standard_normal((n, 24)).astype(np.float32) + 0.5 for n in lengths]
    values, valid = _padded(states, 16, 0.0)
    return Outputs(values, valid), states


def test_embedding_pools_real_tokens_only(token_states) -> None:
    ref, states = token_states
    scaled = [2.0 * s for s in states]  # pooled direction unchanged → cosine exactly 1
    scaled[7] = -states[7]  # one sample pointing the other way → its cosine is -1
    values, valid = _padded(scaled, 16, GARBAGE)  # garbage at every padded token
    spec = OutputSpec("embedding")
    fig = figures(spec, ref, Outputs(values, valid))
    assert fig["cosine_min"] == pytest.approx(-1.0, abs=1e-6)
    assert fig["cosine"] == pytest.approx((39 - 1) / 40, abs=1e-6)
    assert fig["positions"] == int(valid.sum())
    assert _judge(spec, fig).startswith("pooled cosine (mean) 0.9500 < 0.995")
    clean = figures(spec, ref, Outputs(_padded([2.0 * s for s in states], 16, GARBAGE)[0], valid))
    assert clean["cosine"] == pytest.approx(1.0) and clean["nn_agreement"] == 1.0
    assert _judge(spec, clean) is None
    # the same token states with the garbage counted would be far from fp32: the mask matters
    assert figures(OutputSpec("raw"), Outputs(ref.values), Outputs(values))["sqnr_db"] < 0


def test_embedding_nearest_centroid_accuracy_with_labels() -> None:
    rng = np.random.default_rng(2)
    centers = np.eye(3, 8) * 5.0
    y = np.repeat(np.arange(3), 20)
    ref = Outputs((centers[y] + rng.standard_normal((60, 8))).astype(np.float32))
    spec = OutputSpec("embedding")
    name, values = kind_metrics(spec, ref, ref, y, "classification")
    assert name == "centroid_accuracy" and values["centroid_accuracy"] == 100.0
    shuffled = Outputs(ref.values[np.roll(np.arange(60), 20)])  # every sample moved to another class
    assert kind_metrics(spec, ref, shuffled, y, "classification")[1]["centroid_accuracy"] == 0.0


# ------------------------------------------------------------------------------ sequence
def test_ctc_collapse() -> None:
    assert ctc_collapse(np.array([0, 1, 1, 0, 1, 2, 2, 0]), blank=0) == [1, 1, 2]
    assert ctc_collapse(np.array([3, 3, 3]), blank=3) == []


@pytest.fixture(scope="module")
def ctc_outputs() -> tuple[list[np.ndarray], np.ndarray]:
    """Per-column scores of 50 samples whose argmax spells labels of 2–5 digits with blank 10."""
    rng = np.random.default_rng(3)
    scores, labels = [], np.full((50, 5), -1, dtype=np.int64)
    for i in range(50):
        digits = rng.integers(0, 10, size=rng.integers(2, 6))
        labels[i, : len(digits)] = digits
        path = np.concatenate([[d, d, 10] for d in digits])
        s = rng.standard_normal((len(path), 11)).astype(np.float32)
        s[np.arange(len(path)), path] += 6.0
        scores.append(s)
    return scores, labels


def test_sequence_agreement_and_exact_match_ignore_padding(ctc_outputs) -> None:
    scores, labels = ctc_outputs
    ref_v, valid = _padded(scores, 16, 0.0)
    changed = [s.copy() for s in scores]
    changed[4][0] = 0.0
    changed[4][0, (labels[4, 0] + 1) % 10] = 9.0  # first column of sample 4 reads another digit
    out_v, _ = _padded(changed, 16, GARBAGE)
    spec = OutputSpec("sequence", decode="ctc", blank=10)
    fig = figures(spec, Outputs(ref_v, valid), Outputs(out_v, valid))
    assert fig["position_agreement"] == pytest.approx(1 - 1 / valid.sum())
    assert fig["exact_match"] == pytest.approx(49 / 50)
    assert fig["exact_match_drop"] == pytest.approx(2.0)
    assert _judge(spec, fig) == "exact-match drop 2.00 points > 1 points"
    assert _judge(spec, fig, Budget(max_drop=2.0)) is None
    # with labels the task metric decides: fp32 reads every line, the variant misses one
    ref_o, out_o = Outputs(ref_v, valid), Outputs(out_v, valid)
    name, base = kind_metrics(spec, ref_o, ref_o, labels, "sequence")
    _, var = kind_metrics(spec, ref_o, out_o, labels, "sequence")
    assert name == "sequence_accuracy" and base == {"sequence_accuracy": 100.0, "cer": 0.0}
    assert var["sequence_accuracy"] == pytest.approx(98.0)
    assert var["cer"] == pytest.approx(1 / int((labels >= 0).sum()))


def test_sequence_without_decode_gates_position_agreement(ctc_outputs) -> None:
    scores, _ = ctc_outputs
    ref_v, valid = _padded(scores, 16, 0.0)
    out_v, _ = _padded(scores, 16, GARBAGE)
    spec = OutputSpec("sequence")
    fig = figures(spec, Outputs(ref_v, valid), Outputs(out_v, valid))
    assert "exact_match" not in fig and fig["position_agreement"] == 1.0 and fig["sqnr_db"] == 999.0
    assert _judge(spec, fig) is None


# ------------------------------------------------------------------------ regression/raw
@pytest.mark.parametrize("kind", ["regression", "raw"])
def test_sqnr_over_real_values(kind: str) -> None:
    rng = np.random.default_rng(4)
    ref_parts = [rng.standard_normal((n, 3)).astype(np.float32) for n in rng.integers(2, 9, size=30)]
    out_parts = [1.1 * p for p in ref_parts]  # error power 1 % of the signal: 20 dB
    ref_v, valid = _padded(ref_parts, 8, 0.0)
    out_v, _ = _padded(out_parts, 8, GARBAGE)
    spec = OutputSpec(kind)
    fig = figures(spec, Outputs(ref_v, valid), Outputs(out_v, valid))
    assert fig["sqnr_db"] == pytest.approx(20.0, abs=1e-3)
    assert fig["rel_err"] == pytest.approx(0.1, rel=1e-4)
    assert _judge(spec, fig) == "SQNR 20.0000 dB < 30 dB"
    assert _judge(spec, fig, Budget(min_sqnr_db=15)) is None


def test_every_kind_has_a_rule_and_a_description() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name and kind.rules and kind.what
        assert Budget().describe(None, name)["rules"]


# ------------------------------------------------------------------------------ detection
def test_detection_rules() -> None:
    token = Outputs(np.zeros((4, 7, 64), np.float32), np.ones((4, 7), bool))
    assert detect(token, has_mask=True, labels=None).kind == "embedding"
    assert detect(Outputs(np.zeros((4, 9, 11), np.float32), np.ones((4, 9), bool)), has_mask=False,
                  labels=None).kind == "sequence"
    ctc = detect(Outputs(np.zeros((4, 9, 11), np.float32)), has_mask=False, labels=None,
                 meta={"decode": "ctc", "blank": 10})
    assert (ctc.kind, ctc.decode, ctc.blank, ctc.source) == ("sequence", "ctc", 10, "model metadata")
    by_data = detect(Outputs(np.zeros((4, 9, 11), np.float32)), has_mask=False, labels=None,
                     meta={"task": "sequence"}, data_meta={"blank": "10"})
    assert (by_data.kind, by_data.decode, by_data.blank) == ("sequence", "ctc", 10)
    assert detect(Outputs(np.zeros((4, 10), np.float32)), has_mask=False, labels=None).kind == "classifier"
    assert detect(Outputs(np.zeros((4, 1), np.float32)), has_mask=False, labels=None).kind == "regression"
    assert detect(Outputs(np.zeros((4, 128), np.float32)), has_mask=True, labels=None).kind == "embedding"
    assert detect(Outputs(np.zeros((4, 3), np.int64)), has_mask=False, labels=None,
                  output_dtype="int64").kind == "raw"
    overridden = resolve(ctc, kind="raw")
    assert (overridden.kind, overridden.decode, overridden.source) == ("raw", None, "--output-kind")
    assert resolve(detect(token, has_mask=False, labels=None), decode="ctc").kind == "sequence"


def test_bad_spec_values_are_bad_input() -> None:
    with pytest.raises(BadInputError, match="unknown output kind 'logits'"):
        OutputSpec("logits")
    with pytest.raises(BadInputError, match="--decode ctc reads sequence outputs"):
        OutputSpec("classifier", decode="ctc")
    with pytest.raises(BadInputError, match="module:function"):
        OutputSpec("raw", metric="nocolon")


def test_user_metric_results() -> None:
    ref = Outputs(np.ones((3, 2), np.float32))
    data = Dataset(inputs={"x": np.zeros((3, 1), np.float32)})
    assert user_metric(lambda r, o, d: 0.5, "m:f", ref, ref, data)["value"] == 0.5
    res = user_metric(lambda r, o, d: {"value": 2, "passed": False, "higher_is_better": False}, "m:f", ref, ref, data)
    assert res == {"name": "m:f", "value": 2.0, "passed": False, "higher_is_better": False}
    assert judge(Budget(), metric=None, metric_drop=None, fidelity={}, custom=res) == "m:f says not passed (value 2)"
    with pytest.raises(BadInputError, match="returned 'oops'"):
        user_metric(lambda r, o, d: "oops", "m:f", ref, ref, data)
    with pytest.raises(BadInputError, match="raised ZeroDivisionError"):
        user_metric(lambda r, o, d: 1 / 0, "m:f", ref, ref, data)


# --------------------------------------------------------------------- extents, latency
def test_extents_from_mask_and_from_lengths() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.int64)
    ids = np.arange(12).reshape(3, 4)
    ext = find_extents({"input_ids": ids, "attention_mask": mask})
    assert ext is not None and ext.mask == "attention_mask" and ext.lengths.tolist() == [2, 4, 1]
    cropped = ext.crop({"input_ids": ids[[0, 2]], "attention_mask": mask[[0, 2]]}, np.array([0, 2]))
    assert cropped["input_ids"].shape == (2, 2) and cropped["attention_mask"].tolist() == [[1, 1], [1, 0]]
    x = np.zeros((3, 1, 8, 20), np.float32)
    by_len = find_extents({"x": x}, {"x": np.array([5, 20, 9])}, {"x": [0, 3]})
    assert by_len is not None and by_len.crops["x"][0] == 3 and by_len.median() == 9
    assert find_extents({"x": x}) is None


def test_latency_feeds_are_real_samples_at_the_median_length() -> None:
    lengths = np.array([3, 5, 7, 9, 11, 13, 15])
    mask = (np.arange(16)[None] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, 7, 0)
    ext = find_extents({"input_ids": ids, "attention_mask": mask})
    feeds = feeds_from({"input_ids": ids, "attention_mask": mask}, batch=2, n_feeds=5, seed=0, extents=ext)
    for f in feeds:
        assert f["input_ids"].shape == (2, 9)  # the median real length, never the padded 16
        assert f["attention_mask"].all()  # only samples at least that long: no padding timed


def test_threads_default(monkeypatch) -> None:
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    monkeypatch.setenv("EDGEKIT_THREADS", "3")
    assert default_threads() == (3, "EDGEKIT_THREADS")
    monkeypatch.delenv("EDGEKIT_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == (physical_cores(), "physical cores")


def test_thread_counts_tried() -> None:
    from edgekit.benchmarks.latency import thread_choices

    assert thread_choices(2, "physical cores") == (1, 2)
    assert thread_choices(8, "physical cores") == (1, 4, 8)
    assert thread_choices(1, "physical cores") == (1,)
    for source in ("--threads", "EDGEKIT_THREADS", "OMP_NUM_THREADS"):  # a count the user set is used alone
        assert thread_choices(4, source) == (4,)


# ------------------------------------------------------------------------- recommendation
def _row(name: str, runtime: str, precision: str, p50: float, deployable: bool = True) -> VariantRow:
    row = VariantRow(name=name, runtime=runtime, precision=precision, techniques=[], artifact=None, size_bytes=1)
    row.latency_ms = {"p50": p50}
    row.deployable = deployable
    if precision != "fp32":
        row.techniques = ["quantize:int8"]
    return row


def test_recommendation_is_never_empty() -> None:
    base = _row("ort-fp32", "onnxruntime", "fp32", 1.0)
    rows = [_row("ov-fp32", "openvino", "fp32", 0.8), _row("ov-int8", "openvino", "int8", 0.5, deployable=False)]
    name, reason = recommend(rows, "openvino", base)
    assert name == "ov-fp32" and "no compressed variant passed the fidelity gate" in reason
    rows[0].deployable = False
    name, reason = recommend(rows, "openvino", base)
    assert name == "ort-fp32" and "fp32 recommended" in reason
    rows[1].deployable = True
    assert recommend(rows, "openvino", base)[0] == "ov-int8"


def test_library_warnings_do_not_reach_the_cli_stderr(monkeypatch, capsys) -> None:
    import warnings

    from edgekit.cli import main
    from edgekit.devices import detect as detect_mod

    real = detect_mod.runnable_targets

    def noisy() -> dict:
        warnings.warn("overflow encountered in multiply", RuntimeWarning, stacklevel=1)
        return real()

    monkeypatch.setattr(detect_mod, "runnable_targets", noisy)
    assert main(["targets"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "x86-openvino" in captured.out
