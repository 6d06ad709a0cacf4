"""INT8 for recurrent networks, on a model edgekit has never seen.

A small tagger (Conv1d over each row → bidirectional LSTM → per-position classes) with two
inputs — the rows of scikit-learn digits stacked into lines of 2 to 4 digits (``rows``,
``(B, T, 8)``) and each row's position inside its glyph (``pos``, ``(B, T, 1)``), both of
dynamic length — is trained here to tag every row with its digit. ``edgekit compress
tagger.onnx --int8 --data d.npz --runtime onnxruntime`` must detect the LSTM, produce the
recurrent-scheme variants (``ort-int8-dynamic-rnn``: DynamicQuantizeLSTM + MatMulInteger;
``ort-int8-rnn``: the same plus static QDQ on the Conv), run them on ONNX Runtime, judge them
with the sequence fidelity over real positions, and record the scheme and why.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.export.patterns import detect

ROW, HIDDEN, CLASSES = 8, 32, 10
DIGITS_PER_LINE = (2, 4)
TRAIN_STEPS = 120


class Tagger(nn.Module):
    """Conv1d over the row features, a BiLSTM over the rows, a Linear per position."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(ROW + 1, 32, 5, padding=2)
        self.rnn = nn.LSTM(32, HIDDEN, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(torch.cat([rows, pos], dim=-1).transpose(1, 2))).transpose(1, 2)
        seq, _ = self.rnn(f)
        return self.head(seq)


def _lines(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` lines of 2–4 digit images stacked row after row, right-padded; with each row's
    position in its glyph, the real lengths and the per-row digit (-1 on padding)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    lo, hi = DIGITS_PER_LINE
    t_max = hi * ROW
    rows = np.zeros((n, t_max, ROW), np.float32)
    pos = np.zeros((n, t_max, 1), np.float32)
    y = np.full((n, t_max), -1, np.int64)
    lengths = np.zeros(n, np.int64)
    for i in range(n):
        picks = rng.integers(0, len(bunch.images), size=int(rng.integers(lo, hi + 1)))
        t = len(picks) * ROW
        rows[i, :t] = np.concatenate([bunch.images[p] / 16.0 for p in picks])
        pos[i, :t, 0] = np.tile(np.arange(ROW) / (ROW - 1), len(picks))
        y[i, :t] = np.repeat(bunch.target[picks], ROW)
        lengths[i] = t
    return rows, pos, lengths, y


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> tuple[Path, Path, float]:
    d = tmp_path_factory.mktemp("tagger")
    torch.manual_seed(0)
    model = Tagger()
    rows, pos, lengths, y = _lines(600, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = np.random.default_rng(1)
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        for _ in range(TRAIN_STEPS):
            idx = gen.integers(0, len(rows), size=32)
            out = model(torch.from_numpy(rows[idx]), torch.from_numpy(pos[idx]))
            loss = nn.functional.cross_entropy(out.reshape(-1, CLASSES), torch.from_numpy(y[idx]).reshape(-1),
                                               ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    rows_t, pos_t, len_t, y_t = _lines(200, seed=2)
    with torch.no_grad():
        pred = model(torch.from_numpy(rows_t), torch.from_numpy(pos_t)).argmax(-1).numpy()
    accuracy = float((pred == y_t)[y_t >= 0].mean())
    onnx_path = d / "tagger.onnx"
    axes = {"rows": {0: "batch", 1: "t"}, "pos": {0: "batch", 1: "t"}, "out": {0: "batch", 1: "t"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter says it is deprecated
        torch.onnx.export(model, (torch.from_numpy(rows_t[:2]), torch.from_numpy(pos_t[:2])), str(onnx_path),
                          input_names=["rows", "pos"], output_names=["out"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)  # fmt: skip
    data = d / "d.npz"
    np.savez(data, rows=rows_t, pos=pos_t, rows_length=len_t, pos_length=len_t, y=y_t)
    return onnx_path, data, accuracy


def test_recurrent_layers_are_detected(tagger) -> None:
    patterns = detect(tagger[0])
    assert patterns.rnn and not patterns.transformer
    assert [op for op, _ in patterns.recurrent] == ["LSTM"]
    assert patterns.describe_rnn() == "recurrent layers detected (1 LSTM)"
    assert patterns.as_dict()["rnn"] is True


def invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgekit.cli import main

    with CliRunner().isolation() as streams:
        code = main(args)
        return code, streams[1].getvalue().decode()


@pytest.fixture(scope="module")
def bundle(tagger, tmp_path_factory) -> tuple[Path, str]:
    model, data, _ = tagger
    out = tmp_path_factory.mktemp("bundle") / "b"
    code, err = invoke(["compress", str(model), "--int8", "--data", str(data), "--runtime", "onnxruntime",
                        "--threads", "1", "--time-budget", "0.05", "--no-memory", "-o", str(out)])
    assert code == 0, err
    return out, err


def test_unseen_lstm_tagger_gets_the_recurrent_scheme_gated_and_recorded(tagger, bundle) -> None:
    accuracy = tagger[2]
    assert accuracy >= 0.8, accuracy  # a real, trained tagger (per-row digit accuracy)
    out, err = bundle
    assert "recurrent scheme: recurrent layers detected (1 LSTM)" in err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["output_kind"] == "sequence"
    rows = {r["name"]: r for r in report["variants"]}
    record = report["techniques"]["quantize:int8"]
    assert record["scheme"] == "recurrent" and record["patterns"]["rnn"]
    for name, convs in (("ort-int8-dynamic-rnn", False), ("ort-int8-rnn", True)):
        row = rows[name]
        assert row["runtime"] == "onnxruntime" and row["measured"], name
        assert row["fidelity"]["kind"] == "sequence"
        assert row["fidelity"]["positions"] == int(np.load(out / "data" / "eval.npz")["rows_length"].sum())
        assert row["deployable"] or row["rejected_reason"], name  # the gate judged it
        scheme = record["variants"][name]["scheme"]
        assert scheme.startswith("scheme: recurrent") and scheme.endswith("recurrent layers detected (1 LSTM)")
        assert ("static QDQ on Conv" in scheme) == convs
        assert row["notes"][0] == scheme
        summary = record["variants"][name]["summary"]
        assert summary["quantized_op_types"].get("DynamicQuantizeLSTM") == 1, summary
        assert summary["MatMulInteger"] >= 1
        assert ("Conv" in summary["quantized_op_types"]) == convs
    # The recurrent candidates are faithful on this tagger: argmax agreement over real rows.
    assert rows["ort-int8-dynamic-rnn"]["fidelity"]["position_agreement"] >= 0.95


def test_a_model_without_recurrent_layers_gets_no_recurrent_candidate(tmp_path: Path) -> None:
    from edgekit.compress.base import Context
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_rnn import rnn_candidates

    class Plain(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2.0

    path = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Plain(), (torch.zeros(1, 4),), str(path), input_names=["x"], dynamo=False, opset_version=17)
    patterns = detect(path)
    assert not patterns.rnn and patterns.describe_rnn() == "no LSTM/GRU/RNN node detected"
    record: dict[str, object] = {}
    ctx = Context(workdir=tmp_path, calib=None, eval=None, task="raw")  # type: ignore[arg-type]
    assert rnn_candidates(Int8Config(), path, [], tmp_path, patterns, ctx, [], record) == []
    assert "scheme" not in record


def test_bench_times_at_each_given_shape(bundle) -> None:
    out, _ = bundle
    code, err = invoke(["bench", str(out), "--threads", "1", "--time-budget", "0.02", "--no-memory", "--runtime",
                        "onnxruntime", "--shapes", "rows:1x8x8/2x16x8/2x32x8", "-o", str(out.parent / "bench")])
    assert code == 0, err
    assert "timing" in err and "at the max shape rows:2x32x8" in err
    report = json.loads((out.parent / "bench" / "report.json").read_text())
    assert report["data"]["shapes"] == {"rows": "1x8x8/2x16x8/2x32x8"}
    assert report["data"]["extents"]["median"] == 24, report["data"]["extents"]  # along the dynamic axis, as timed
    rows = [report["baseline"], *report["variants"]]
    assert {r["name"] for r in rows} >= {"ort-fp32", "ort-int8-dynamic-rnn", "ort-int8-rnn"}
    for r in rows:
        by_shape = r["latency_by_shape"]
        assert list(by_shape) == ["rows:1x8x8", "rows:2x16x8", "rows:2x32x8"], r["name"]
        assert [v["role"] for v in by_shape.values()] == ["min", "opt", "max"]
        # pos shares the dynamic axis "t" with rows, so it follows; the batch follows the shape.
        assert by_shape["rows:2x16x8"]["shape"] == {"rows": [2, 16, 8], "pos": [2, 16, 1]}
        assert all(v["p50"] > 0 for v in by_shape.values())
        assert r["latency_ms"]["shape"]["rows"][1] == 24, report["data"]["extents"]  # and the median real shape
    md = (out.parent / "bench" / "report.md").read_text()
    assert "| rows:2x32x8 | max |" in md


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("rows:1x8/1x16/1x32", "has rank 2, the input has 3"),
        ("rows:1x8x9/1x16x9/1x32x9", "axis 2 of 1x8x9 is fixed at 8"),
        ("nope:1x8x8/1x16x8/1x32x8", "not model inputs"),
        ("rows:1x32x8/1x16x8/1x8x8", "MIN <= OPT <= MAX"),
        ("rows:1x8x8", "needs three shapes"),
    ],
)
def test_bench_refuses_bad_shapes_in_one_line(bundle, spec: str, says: str) -> None:
    out, _ = bundle
    report = out.parent / f"bad-{abs(hash(spec))}"
    code, err = invoke(["bench", str(out), "--threads", "1", "--no-memory", "--shapes", spec, "-o", str(report)])
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], err
    assert not report.exists()


def test_pruned_model_keeps_the_dynamic_axes(trained, tmp_path: Path) -> None:
    """The export after a torch-level step (pruning here) keeps the source model's dynamic axes
    (text-recognizer: the width), not only the batch."""
    import onnx

    from edgekit import api
    from edgekit.compress.prune import PruneConfig

    _, path = trained("text-recognizer")
    api.compress(path, steps=[PruneConfig(kind="unstructured", amount=0.3, finetune_epochs=0)],
                 out=tmp_path / "b", threads=1, time_budget_s=0.02, with_memory=False)  # fmt: skip
    for name in ("model.fp32.onnx", "model.fp32-prune.onnx"):
        proto = onnx.load(str(tmp_path / "b" / name), load_external_data=False)
        x = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert x == ["batch", 1, 32, "width"], name


def test_openvino_can_keep_a_recurrent_layer_in_float(tagger, tmp_path: Path) -> None:
    """NNCF quantizes OpenVINO's LSTMSequence, which the ONNX frontend names from a counter: the
    ONNX LSTM is matched to it by order, so the budget search can keep it in float, and it is
    tried first (the Q/DQ placement that ranks the other layers cannot rank it)."""
    from edgekit.benchmarks.backends import for_techniques
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_ov import ov_int8, ov_mappable, ov_quantized_ops, recurrent_nodes

    model, data, _ = tagger
    lstm = recurrent_nodes(model)
    assert len(lstm) == 1
    assert ov_mappable(model, [*lstm, "/no/such/node"]) == lstm
    assert for_techniques().get("openvino").unranked(model) == lstm  # type: ignore[misc]
    with np.load(data) as d:
        feeds = [{"rows": d["rows"][i : i + 1], "pos": d["pos"][i : i + 1]} for i in range(32)]

    plain = ov_int8(Int8Config(runtimes=("openvino",)), model, feeds, tmp_path / "a" / "m.xml")
    kept = ov_int8(Int8Config(runtimes=("openvino",), exclude=tuple(lstm)), model, feeds, tmp_path / "b" / "m.xml")
    before, after = ov_quantized_ops(plain.path), ov_quantized_ops(kept.path)
    def lstms(names: list[str]) -> int:  # OpenVINO numbers its recurrent ops: compare by type
        return sum(n.startswith("LSTMSequence") for n in names)

    assert lstms(before["quantized"]) == 1, before  # NNCF quantizes the LSTM by default
    assert lstms(after["quantized"]) == 0 and lstms(after["float"] + after["weight_only"]) == 1, after
    others = {n for n in before["quantized"] if not n.startswith("LSTMSequence")}
    assert others and set(after["quantized"]) == others  # the other layers stay INT8
    assert any("kept in float" in n and lstm[0] in n for n in kept.notes), kept.notes


def test_a_measurement_stage_round_trips_an_unseen_model(tagger, tmp_path: Path) -> None:
    """What ``search --host`` sends a device — candidate files, two padded inputs with their
    lengths, labels, budget — measured there gives the same verdicts and figures as here; a
    damaged stage is one line, exit 2."""
    import io
    import subprocess
    import sys
    import tarfile

    from edgekit.artifact import Artifact
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.gate import Budget
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_ov import ov_fp32_ir, ov_int8
    from edgekit.io.data import load_npz
    from edgekit.search.remote import measure_stage, write_stage

    model, npz, _ = tagger
    data = load_npz(npz)
    feeds = [{"rows": data.inputs["rows"][i : i + 1], "pos": data.inputs["pos"][i : i + 1]} for i in range(32)]
    candidates = [
        Artifact("ort-fp32", "onnxruntime", "fp32", model),
        ov_fp32_ir(model, tmp_path / "f" / "m.xml"),
        ov_int8(Int8Config(runtimes=("openvino",)), model, feeds, tmp_path / "q" / "m.xml"),
    ]
    options = {"baseline": "ort-fp32", "batches": (), "threads": 1, "with_memory": False}
    here = harness.measure(candidates, data, budget=Budget(max_drop=1.0), **options)
    stream = io.BytesIO()
    write_stage(stream, candidates, data, Budget(max_drop=1.0), options)
    stream.seek(0)
    there = measure_stage(stream)["rows"]
    assert [r["name"] for r in there] == [r.name for r in here]
    for a, b in zip(here, there, strict=True):
        assert (a.deployable, a.metric) == (b["deployable"], b["metric"]), a.name  # same gate, same data
        assert b["fidelity"]["positions"] == int(data.lengths["rows"].sum())  # padding still excluded
    damaged = io.BytesIO()
    with tarfile.open(fileobj=damaged, mode="w") as tar:
        info = tarfile.TarInfo("stage.json")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"{not json"))
    for payload in (damaged.getvalue(), b"garbage"):
        proc = subprocess.run([sys.executable, "-m", "edgekit", "measure-stage", "--json"], input=payload,
                              capture_output=True, check=False)  # fmt: skip
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "measure-stage" in lines[0], lines


def _ov_outputs(xml: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    from edgekit.runtimes import runtime_for

    rt = runtime_for("openvino", "int8", threads=1)
    rt.load(xml)
    return [rt.run(f)[0] for f in feeds]


def _sqnr_db(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    a, b = np.concatenate([r.ravel() for r in ref]), np.concatenate([o.ravel() for o in out])
    return float(10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2)))


def test_openvino_int8_lstm_is_aligned_with_the_cpu_kernel(tagger, tmp_path: Path) -> None:
    """OpenVINO's INT8 RNN kernel reads the hidden state with the input's scale and R with W's
    scales. NNCF's ranges for the tagger's LSTM (input after a ReLU: [0, m]) clamp every negative
    hidden state; the aligned IR quantizes the input over ±m onto [-1, 1] and W·m and R with
    shared scales, still runs the LSTM in INT8, and is far closer to fp32."""
    import openvino as ov

    from edgekit.compress.ov_recurrent import input_quantizer
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_ov import ov_fp32_ir, ov_int8, ov_quantized_ops

    model, data, _ = tagger
    with np.load(data) as d:
        n = d["rows_length"]
        feeds = [{"rows": d["rows"][i : i + 1, : n[i]], "pos": d["pos"][i : i + 1, : n[i]]} for i in range(64)]
    config = Int8Config(runtimes=("openvino",))
    fp32 = ov_fp32_ir(model, tmp_path / "f" / "m.xml")
    nncf_as_is = ov_int8(config, model, feeds, tmp_path / "a" / "m.xml", align_rnn=False)
    aligned = ov_int8(config, model, feeds, tmp_path / "b" / "m.xml")
    ref = _ov_outputs(fp32.path, feeds)
    before = _sqnr_db(ref, _ov_outputs(nncf_as_is.path, feeds))
    after = _sqnr_db(ref, _ov_outputs(aligned.path, feeds))
    # measured 3.8 → 23.3 dB (AVX-512 VNNI), 3.7 → 20.5 dB (oneDNN limited to AVX2)
    assert after > before + 10.0 and after > 15.0, (before, after, aligned.notes)
    assert any("recurrent INT8" in note and "[-1, 1]" in note for note in aligned.notes), aligned.notes
    assert not any("recurrent INT8" in note for note in nncf_as_is.notes)
    assert any(name.startswith("LSTMSequence") for name in ov_quantized_ops(aligned.path)["quantized"])
    again = ov_int8(config, model, feeds, tmp_path / "c" / "m.xml")  # same bytes, in the same process too
    assert again.path.read_bytes() == aligned.path.read_bytes()
    assert again.path.with_suffix(".bin").read_bytes() == aligned.path.with_suffix(".bin").read_bytes()

    ir = ov.Core().read_model(str(aligned.path))
    (lstm,) = [op for op in ir.get_ordered_ops() if op.get_type_name() == "LSTMSequence"]
    fq, _path = input_quantizer(lstm)  # type: ignore[misc]
    ends = [float(fq.input(p).get_source_output().get_node().get_data().ravel()[0]) for p in (1, 2, 3, 4)]
    assert fq.get_levels() == 255 and ends[1] == -ends[0] > 0 and ends[2:] == [-1.0, 1.0], ends

    def scale(port: int) -> np.ndarray:
        return lstm.input(port).get_source_output().get_node().input(1).get_source_output().get_node().get_data()

    np.testing.assert_array_equal(scale(4), scale(5))  # W and R share one scale per gate row
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
    kernels = {i["runtimePrecision"].astype(str) for i in info if i["layerType"].astype(str) == "RNNSeq"}
    assert kernels and kernels <= {"u8", "i8"}, kernels  # the LSTM still runs as one INT8 kernel


def test_a_recurrent_layer_nncf_leaves_float_is_left_alone(tmp_path: Path) -> None:
    """NNCF does not quantize PyTorch's GRU (linear_before_reset): the alignment says so and
    changes nothing."""
    from edgekit.compress.quantize import Int8Config
    from edgekit.compress.quantize_ov import ov_int8

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.gru = nn.Linear(6, 16), nn.GRU(16, 8, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gru(torch.relu(self.embed(x)))[0]

    torch.manual_seed(0)

    path = tmp_path / "gru.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.randn(1, 5, 6),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 1: "t"}, "y": {0: "b", 1: "t"}}, opset_version=17,
                          dynamo=False)  # fmt: skip
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 5, 6)).astype(np.float32)} for _ in range(8)]
    variant = ov_int8(Int8Config(runtimes=("openvino",)), path, feeds, tmp_path / "q" / "m.xml")
    notes = [n for n in variant.notes if n.startswith("recurrent INT8")]
    assert len(notes) == 1 and "left as NNCF made it (its input is not quantized)" in notes[0], variant.notes


def test_a_variant_that_cannot_run_here_is_a_row_not_an_abort(tagger, tmp_path: Path) -> None:
    """A variant this machine's runtime refuses (here an IR whose .xml was cut short) is a row
    that says why and is not deployable; the others are measured and gated. The baseline failing
    is still an error: nothing could be judged without it."""
    from edgekit.artifact import Artifact
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.gate import Budget
    from edgekit.compress.quantize_ov import ov_fp32_ir
    from edgekit.errors import BadInputError
    from edgekit.io.data import load_npz

    model, npz, _ = tagger
    data = load_npz(npz).head(24)
    good = ov_fp32_ir(model, tmp_path / "f" / "m.xml")
    cut = ov_fp32_ir(model, tmp_path / "c" / "m.xml")
    cut.path.write_bytes(cut.path.read_bytes()[:200])
    cut.name = "ov-cut"
    options = {"budget": Budget(max_drop=1.0), "batches": (1,), "budget_s": 0.02, "with_memory": False}
    base, ov32, broken = harness.measure(
        [Artifact("ort-fp32", "onnxruntime", "fp32", model), good, cut], data, baseline="ort-fp32", **options
    )
    assert base.measured and ov32.measured and ov32.deployable and ov32.latency_ms
    assert not broken.measured and not broken.deployable and broken.latency_ms is None
    assert broken.not_measured_reason.startswith("could not run here: openvino could not load m.xml:")
    assert "not verified on this machine" in broken.rejected_reason
    with pytest.raises(BadInputError, match="could not load"):
        harness.measure([cut, good], data, baseline="ov-cut", **options)


def test_each_variant_keeps_the_thread_count_it_was_fastest_with(tagger, tmp_path: Path) -> None:
    """Every variant is timed at each thread count, side by side in one run; its figures are the
    fastest count's, which its row, its latency entry and (OpenVINO) what the runtime says it ran
    all name, and the p50 at every count is kept. Speed-ups compare each at its own best."""
    from edgekit.artifact import Artifact
    from edgekit.benchmarks import harness
    from edgekit.benchmarks.gate import Budget
    from edgekit.compress.quantize_ov import ov_fp32_ir
    from edgekit.io.data import load_npz

    model, npz, _ = tagger
    data = load_npz(npz).head(24)
    candidates = [Artifact("ort-fp32", "onnxruntime", "fp32", model), ov_fp32_ir(model, tmp_path / "f" / "m.xml")]
    rows = harness.measure(candidates, data, baseline="ort-fp32", budget=Budget(max_drop=1.0), batches=(1,),
                           threads=2, thread_choices=(1, 2), budget_s=0.05, with_memory=False)  # fmt: skip
    for r in rows:
        by_threads = r.latency_ms["p50_by_threads"]
        assert set(by_threads) == {"1", "2"} and all(v > 0 for v in by_threads.values())
        assert r.threads in (1, 2) and r.latency_ms["threads"] == r.threads
        assert r.latency_ms["p50"] == by_threads[str(r.threads)] == min(by_threads.values())
    ov = rows[1]
    assert ov.describe["threads_used"] == ov.threads
    assert ov.speedup_vs_baseline == rows[0].latency_ms["p50"] / ov.latency_ms["p50"]
    alone = harness.measure(candidates, data, baseline="ort-fp32", budget=Budget(max_drop=1.0), batches=(1,),
                            threads=1, budget_s=0.02, with_memory=False)  # fmt: skip
    assert all(r.threads == 1 and "p50_by_threads" not in r.latency_ms for r in alone)


def test_without_a_thread_count_compress_times_each_variant_at_several(tagger, tmp_path: Path, monkeypatch) -> None:
    """With the default (the physical cores), each variant of an unseen two-input model is timed
    at one thread, half the cores and all of them, and the bundle records each one's fastest."""
    from helpers import check_thread_counts

    from edgekit.benchmarks.latency import physical_cores, thread_choices

    for var in ("EDGEKIT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    model, data, _ = tagger
    out = tmp_path / "b"
    code, err = invoke(["compress", str(model), "--int8", "--data", str(data), "--runtime", "onnxruntime,openvino",
                        "--time-budget", "0.05", "--no-memory", "-o", str(out)])  # fmt: skip
    assert code == 0, err
    assert check_thread_counts(out) == list(thread_choices(physical_cores(), "physical cores"))


def test_the_alignment_copies_the_path_when_nncf_quantizer_feeds_other_values() -> None:
    """The sequence's input FakeQuantize is replaced in place when only the sequence reads it
    (the plugin then fuses it into the layer before); when another operation reads its values,
    that one keeps NNCF's FakeQuantize and the sequence gets a copy of the layout path."""
    import openvino as ov
    from openvino import opset13 as ops

    from edgekit.compress.ov_recurrent import align_recurrent, input_quantizer

    hidden, feat = 4, 3
    rng = np.random.default_rng(0)
    w, r = rng.normal(size=(1, 4 * hidden, feat)), rng.normal(size=(1, 4 * hidden, hidden))
    b = rng.normal(size=(1, 4 * hidden))

    def build(quantized: bool, other_reader: bool) -> tuple[ov.Model, ov.Node]:
        x = ops.parameter([1, feat, 5], np.float32, name="x")
        c = lambda v: ops.constant(np.float32(v))  # noqa: E731
        data = ops.fake_quantize(x, c(0), c(2), c(0), c(2), 256) if quantized else x
        seq = ops.transpose(data, ops.constant(np.array([0, 2, 1], np.int64)))
        zeros = ops.constant(np.zeros((1, 1, hidden), np.float32))

        def weights(m: np.ndarray) -> ov.Node:
            if not quantized:
                return ops.constant(m.astype(np.float32))
            scale = (np.abs(m).max(axis=(0, 2)) / 127).astype(np.float32).reshape(1, -1, 1)
            q = np.rint(m / scale).astype(np.int8)
            return ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(scale))

        lstm = ops.lstm_sequence(seq, zeros, zeros, ops.constant(np.array([5], np.int32)), weights(w), weights(r),
                                 ops.constant(b.astype(np.float32)), hidden, "forward")  # fmt: skip
        outputs = [lstm.output(0)] + ([ops.relu(data).output(0)] if other_reader else [])
        return ov.Model(outputs, [x]), data

    for other_reader in (False, True):
        model, nncf_fq = build(True, other_reader)
        notes = align_recurrent(model, build(False, other_reader)[0])
        assert len(notes) == 1 and "±2" in notes[0], notes
        (lstm,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "LSTMSequence"]
        fq, path = input_quantizer(lstm)  # type: ignore[misc]
        assert fq.get_levels() == 255 and [p.get_type_name() for p in path] == ["Transpose"]
        readers = {t.get_node().get_type_name() for t in nncf_fq.output(0).get_target_inputs()}
        assert readers == ({"Relu"} if other_reader else set()), readers
