"""Per-layer quantization sensitivity, and the accuracy-budget search built on it.

The budget search ranks layers once with :func:`rank_layers` (one run of a model holding the float
graph and each quantized node fed from float tensors: every node's local SQNR when quantized
alone); :func:`layer_sensitivity` (one quantization per node, SQNR at the model output) is the
slower measure ``edgekit doctor`` shows.

:func:`layer_sensitivity` ranks the quantizable nodes of an fp32 ONNX by how much quantizing
each one *alone* hurts the model's output ("leave one in"): ONNX Runtime's quantizer, with the
calibrated ranges of the full INT8 model (computed once, then cached), quantizes one node at a
time, and the output SQNR against fp32 is measured on held-out samples. Per-tensor errors of the
fully quantized model (``onnxruntime.quantization.qdq_loss_debug``) were not used: each mixes
the error of every upstream layer, so it does not say which node to keep in float.

:func:`fit_budget` quantizes, measures the variant on the held-out data with its real runtime
and the gate's own rule (:func:`edgekit.benchmarks.gate.judge`), and when it fails keeps the k
most sensitive layers in float: k = 1, 2, 4, … then bisection to the smallest k that passes.
At least one layer always stays INT8 (an "INT8" variant with every layer in float would be an
fp32 copy); when even that cannot meet the budget, the closest variant is returned with a note
and the gate rejects it.

:class:`BudgetSearch` runs the search for each static INT8 variant of one INT8 step: ONNX
Runtime (``nodes_to_exclude``), OpenVINO (NNCF ignored scope) and TensorRT (no Q/DQ on the kept
nodes), and records what it did.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.benchmarks.accuracy import fidelity
from edgekit.benchmarks.gate import Budget
from edgekit.compress.base import Context, Variant
from edgekit.compress.quantize_ort import (
    WEIGHTED_OPS,
    ort_int8_static,
    preprocess,
    quantize_only,
    trt_int8_qdq,
)
from edgekit.io.data import Dataset

if TYPE_CHECKING:
    from edgekit.compress.quantize import Int8Config

Feeds = list[dict[str, np.ndarray]]

# Nodes worth keeping in float: they compute on quantized values. Data movement (MaxPool,
# Reshape, Concat …) only carries its producer's scale, so keeping it in float changes nothing.
RANKED_OPS = (
    *WEIGHTED_OPS,
    "Add", "Mul", "Sub", "Div", "Softmax", "AveragePool", "GlobalAveragePool",
    "LayerNormalization", "InstanceNormalization",
)  # fmt: skip
SCORE_UNIT = "dB output SQNR vs fp32 with only this layer quantized (lower = more sensitive)"
RANKING_METHOD = (
    "one pass: beside each quantized node of the fully quantized Q/DQ graph, a copy fed through "
    "its own Q/DQ from the float tensors; one run on held-out samples scores every node's output "
    "SQNR when quantized alone; the variant's "
    "own Q/DQ graph ranks for ort-int8-static, the placement on weighted-layer inputs "
    "(TensorRT's, NNCF's) for ov-int8 and trt-int8-qdq; then bisection on how many top-ranked "
    "layers stay float, every step measured on the variant's runtime"
)
ONE_PASS_UNIT = (
    "dB output SQNR of this node quantized alone (its own Q/DQ and int8 weights from the fully "
    "quantized graph) on float inputs (lower = more sensitive)"
)
SQNR_CAP_DB = 100.0
SPEED_MARGIN = 0.95  # a variant is "faster" than fp32 when its p50 is below 95 % of fp32's
SENSITIVITY_SAMPLES = 64
EVAL_BATCH = 64


# ------------------------------------------------------------------------------ measuring
def run_outputs(runtime: str, path: Path, data: Dataset, *, threads: int = 1) -> np.ndarray:
    """The first output of ``path`` on every sample of ``data``, run in ``runtime``."""
    from edgekit.runtimes import get_runtime

    rt = get_runtime(runtime, threads=threads).load(path)
    specs = rt.inputs
    bound = data.bind([s.name for s in specs])
    arrays = {s.name: np.asarray(bound[s.name]).astype(s.dtype, copy=False) for s in specs}
    first = specs[0].shape[0] if specs and specs[0].shape else None
    fixed = first if isinstance(first, int) and first > 0 else None  # a batch size baked in
    step = fixed or EVAL_BATCH
    stop = len(data) - len(data) % step if fixed else len(data)
    parts = [
        np.asarray(rt.run({k: v[i : i + step] for k, v in arrays.items()})[0])
        for i in range(0, stop, step)
    ]
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class LayerScore:
    """How much quantizing one node hurts the model output."""

    node: str  # the ONNX node name
    op_type: str
    score: float
    unit: str = SCORE_UNIT

    def as_dict(self) -> dict[str, Any]:
        score = 999.0 if np.isinf(self.score) else round(float(self.score), 2)
        return {"node": self.node, "op_type": self.op_type, "score": score, "unit": self.unit}


@dataclass
class Trial:
    """One quantize/evaluate round: the layers kept in float and what the gate saw."""

    kept: tuple[str, ...]
    reason: str | None  # the gate's rejection, None when within budget
    metric: dict[str, Any] | None
    metric_drop: float | None
    fidelity: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.reason is None

    def closeness(self) -> tuple[Any, ...]:
        """Sort key, larger = closer to the budget: pass, then metric drop, then fidelity."""
        fid = self.fidelity
        return (
            self.passed,
            -(self.metric_drop or 0.0),
            fid.get("top1_agreement") or 0.0,
            fid.get("cosine") or 0.0,
            fid.get("sqnr_db") or 0.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept_in_float": list(self.kept),
            "verdict": self.reason or "within budget",
            "metric": self.metric,
            "metric_drop": None if self.metric_drop is None else round(self.metric_drop, 4),
            "fidelity": self.fidelity,
        }


class Evaluator:
    """Measures variants like the final gate does: on the held-out data, against the fp32
    model's outputs (ONNX Runtime), with the task metric when there are labels."""

    def __init__(
        self, fp32_onnx: Path, data: Dataset, budget: Budget, *, threads: int = 1, output: Any = None
    ) -> None:
        from edgekit.benchmarks.harness import OutputJudge, detect_output
        from edgekit.benchmarks.harness import run_outputs as outputs_of
        from edgekit.runtimes import get_runtime

        self.data, self.budget, self.threads = data, budget, threads
        rt = get_runtime("onnxruntime", threads=threads).load(fp32_onnx)
        reference = outputs_of(rt, data)
        self.judge = OutputJudge(output or detect_output(rt, data, reference), reference, data, budget)
        self.metric_name = self.judge.metric_name

    def measure(
        self, variant: Variant, kept: tuple[str, ...], runtime: str | None = None
    ) -> Trial:
        """Run ``variant`` (in ``runtime``, default its own) and judge it as the final gate does."""
        from edgekit.benchmarks.harness import run_outputs as outputs_of
        from edgekit.runtimes import get_runtime

        rt = get_runtime(runtime or variant.runtime, threads=self.threads).load(variant.path)
        v = self.judge(outputs_of(rt, self.data))
        return Trial(kept=kept, reason=v.reason, metric=v.metric, metric_drop=v.metric_drop, fidelity=v.fidelity)


# ---------------------------------------------------------------------------- sensitivity
def quantized_nodes(qdq_onnx: Path | str) -> list[tuple[str, str]]:
    """(name, op type) of the nodes of a QDQ model that compute on dequantized inputs, in graph
    order, restricted to :data:`RANKED_OPS`."""
    import onnx

    graph = onnx.load(str(qdq_onnx), load_external_data=False).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return [
        (n.name, n.op_type)
        for n in graph.node
        if n.op_type in RANKED_OPS and any(i in dequantized for i in n.input)
    ]


def layer_sensitivity(
    fp32_onnx: Path,
    quantized_onnx: Path | None,
    feeds: Feeds,
    eval: Dataset,
    task: str,
    *,
    config: Int8Config | None = None,
    scheme: str = "onnxruntime",
    calibration_cache: Path | None = None,
    max_samples: int = SENSITIVITY_SAMPLES,
    skip: Sequence[str] = (),
) -> list[LayerScore]:
    """Rank the quantizable nodes of ``fp32_onnx``, most sensitive first.

    ``quantized_onnx`` (a QDQ model of ``fp32_onnx``) says which nodes are quantized; when None
    the model is quantized here. Each node is then quantized alone, with ``config`` (default
    :class:`~edgekit.compress.quantize.Int8Config`) and the Q/DQ ``scheme``: ``"onnxruntime"``
    (:func:`~edgekit.compress.quantize_ort.ort_int8_static`) or ``"tensorrt"`` (symmetric, Q/DQ on
    weighted-layer inputs: TensorRT's placement and NNCF's). Ranges come from ``feeds``, once
    (``calibration_cache`` keeps them across calls). The first output is compared with fp32 on
    the first ``max_samples`` samples of ``eval``; the score is that SQNR in dB (lower = more
    sensitive). Nodes in ``skip`` are not ranked. Cost: one quantization and one inference of
    ``max_samples`` samples per node.
    """
    from edgekit.compress.quantize import Int8Config

    config = config or Int8Config()
    fp32_onnx = Path(fp32_onnx).resolve()
    data = Dataset(inputs=eval.head(max_samples).inputs, task=task, name=eval.name)
    with tempfile.TemporaryDirectory(prefix="edgekit-sensitivity-") as tmp:
        scratch = Path(tmp)
        cache = Path(calibration_cache or scratch / "ranges.json").resolve()
        if quantized_onnx is None:
            quantized_onnx = scratch / "all.onnx"
            build = ort_int8_static if scheme == "onnxruntime" else trt_int8_qdq
            full = dataclasses.replace(config, exclude=())
            build(full, fp32_onnx, feeds, quantized_onnx, calibration_cache=cache)
        candidates = [(n, op) for n, op in quantized_nodes(quantized_onnx) if n not in set(skip)]
        pre = scratch / "preprocessed.onnx"
        preprocess(fp32_onnx, pre)
        reference = run_outputs("onnxruntime", fp32_onnx, data)
        scores: list[LayerScore] = []
        for name, op_type in candidates:
            one = scratch / "one-layer.onnx"
            quantize_only(config, pre, feeds, one, (name,), scheme=scheme, calibration_cache=cache)
            out = run_outputs("onnxruntime", one, data)
            sqnr = fidelity(task, reference[: len(out)], out).sqnr_db
            scores.append(LayerScore(name, op_type, float(sqnr)))
    return sorted(scores, key=lambda s: s.score)  # stable: ties keep graph order


SHADOW = "edgekit-shadow/"


def _copy_node(node: Any, inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    import onnx

    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(inputs)
    del new.output[:]
    new.output.extend(outputs)
    new.name = outputs[0]
    return new


ShadowPlan = dict[str, tuple[str, str, str, bool]]  # node → (op type, float out, shadow out, ReLU)


def _shadow_model(float_onnx: Path, qdq_onnx: Path, skip: Sequence[str]) -> tuple[Any, ShadowPlan]:
    """The float model plus, for every quantized node of ``qdq_onnx``, a copy of that node with
    its Q/DQ inputs computed from the *float* tensors: its output is the node quantized alone.
    Returns the model and node → (op type, float output, shadow output, apply ReLU)."""
    import onnx

    fmodel, qmodel = onnx.load(str(float_onnx)), onnx.load(str(qdq_onnx))
    qinits = {t.name: t for t in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    float_op = {o: n.op_type for n in fmodel.graph.node for o in n.output}
    float_tensors = set(float_op) | {i.name for i in fmodel.graph.input}
    needed: set[str] = set()
    nodes: list[Any] = []

    def mapped(tensor: str, tag: str) -> str | None:
        """``tensor`` of the quantized graph, rebuilt in the shadow model from float tensors."""
        if not tensor:
            return ""
        if tensor in qinits:
            needed.add(tensor)
            return SHADOW + tensor
        node = producer.get(tensor)
        if node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            ins = [mapped(i, tag) for i in node.input]
            if any(i is None for i in ins):
                return None
            out = f"{SHADOW}{tag}/{tensor}"
            nodes.append(_copy_node(node, [i or "" for i in ins], [out]))
            return out
        return tensor if tensor in float_tensors else None  # a float activation

    consumers: dict[str, list[Any]] = {}
    for n in qmodel.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def float_name(out: str) -> str | None:
        """The float graph's name of a node output (a quantized graph output is renamed and
        reaches its name through Q → DQ)."""
        if out in float_op:
            return out
        for q in consumers.get(out, []):
            for dq in consumers.get(q.output[0], []) if q.op_type == "QuantizeLinear" else []:
                if dq.op_type == "DequantizeLinear" and dq.output[0] in float_op:
                    return str(dq.output[0])
        return None

    plan: ShadowPlan = {}
    for name, op_type in quantized_nodes(qdq_onnx):
        node = next(n for n in qmodel.graph.node if n.name == name)
        out = float_name(node.output[0])
        if name in set(skip) or out is None:
            continue
        ins = [mapped(i, name) for i in node.input]
        if any(i is None for i in ins):
            continue
        outs = [f"{SHADOW}{name}/out{j}" for j in range(len(node.output))]
        nodes.append(_copy_node(node, [i or "" for i in ins], outs))
        # A Conv+Relu fused by the quantizer writes the Relu's output name, unclamped.
        plan[name] = (op_type, out, outs[0], float_op[out] == "Relu" and node.op_type != "Relu")
    for t in needed:
        copy = onnx.TensorProto()
        copy.CopyFrom(qinits[t])
        copy.name = SHADOW + t
        fmodel.graph.initializer.append(copy)
    fmodel.graph.node.extend(nodes)
    known = {o.name for o in fmodel.graph.output}
    for tensor in sorted({t for _, f, sh, _ in plan.values() for t in (f, sh)} - known):
        fmodel.graph.output.append(onnx.ValueInfoProto(name=tensor))
    domains = {o.domain for o in fmodel.opset_import}
    fmodel.opset_import.extend(o for o in qmodel.opset_import if o.domain not in domains)
    return fmodel, plan


def rank_layers(
    float_onnx: Path,
    qdq_onnx: Path,
    data: Dataset,
    *,
    max_samples: int = SENSITIVITY_SAMPLES,
    skip: Sequence[str] = (),
) -> list[LayerScore]:
    """Rank the quantized nodes of ``qdq_onnx`` in one pass, most sensitive first.

    ``float_onnx`` is the float graph ``qdq_onnx`` was made from (same tensor names). One model
    holds the float graph and, beside each quantized node, a copy fed through that node's own
    Q/DQ (same scales and int8 weights) from the float tensors; one run on the first
    ``max_samples`` samples of ``data`` gives every node's output SQNR when it alone is quantized,
    with float inputs. Cost: one inference, whatever the layer count.
    """
    import onnxruntime as ort

    from edgekit.compress.quantize import model_inputs

    model, plan = _shadow_model(Path(float_onnx), Path(qdq_onnx), skip)
    if not plan:
        return []
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fetch = sorted({t for _, f, sh, _ in plan.values() for t in (f, sh)})
    signal = dict.fromkeys(plan, 0.0)
    noise = dict.fromkeys(plan, 0.0)
    specs = model_inputs(float_onnx)
    arrays = data.head(max_samples).bind(list(specs))
    n = len(next(iter(arrays.values())))
    for i in range(0, n, 16):
        feed = {k: np.asarray(v[i : i + 16], dtype=specs[k][1]) for k, v in arrays.items()}
        got = dict(zip(fetch, session.run(fetch, feed), strict=True))
        for name, (_, f, sh, relu) in plan.items():
            ref = np.asarray(got[f], dtype=np.float64)
            q = np.asarray(got[sh], dtype=np.float64)
            q = np.maximum(q, 0.0) if relu else q
            signal[name] += float(np.sum(ref**2))
            noise[name] += float(np.sum((ref - q) ** 2))

    def db(name: str) -> float:
        if noise[name] <= 0 or signal[name] <= 0:
            return SQNR_CAP_DB
        return min(SQNR_CAP_DB, 10.0 * float(np.log10(signal[name] / noise[name])))

    scores = [LayerScore(name, op_type, db(name), ONE_PASS_UNIT) for name, (op_type, *_) in plan.items()]
    return sorted(scores, key=lambda s: s.score)  # stable: ties keep graph order


# --------------------------------------------------------------------------------- search
@dataclass
class FitResult:
    """What :func:`fit_budget` found for one runtime."""

    variant: Variant
    kept: tuple[str, ...]  # nodes the search kept in float (beyond the user's own exclusions)
    within_budget: bool
    trials: list[Trial]
    ranking: list[LayerScore]
    seconds: float
    note: str = ""

    @property
    def reached(self) -> Trial:
        return next(t for t in self.trials if t.kept == self.kept)

    def record(self, top: int = 10) -> dict[str, Any]:
        reached = self.reached.as_dict()
        return {
            "variant": self.variant.name,
            "kept_in_float": list(self.kept),
            "within_budget": self.within_budget,
            "reached": {k: reached[k] for k in ("verdict", "metric", "metric_drop", "fidelity")},
            "rounds": len(self.trials),
            "trials": [t.as_dict() for t in self.trials],
            "ranking": [s.as_dict() for s in self.ranking[:top]],
            "ranked_layers": len(self.ranking),
            "seconds": round(self.seconds, 2),
            "note": self.note,
        }


def _move(variant: Variant, folder: Path) -> Variant:
    """Move a variant's files (same names) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [variant.path, *variant.extra_files]
    for f in files:
        dest = folder / f.name
        if dest.exists():
            dest.unlink()
        shutil.move(str(f), dest)
    variant.path = folder / variant.path.name
    variant.extra_files = [folder / f.name for f in variant.extra_files]
    return variant


def fit_budget(
    build: Callable[[tuple[str, ...], Path], Variant],
    measure: Callable[[Variant, tuple[str, ...]], Trial],
    ranking: Callable[[], Sequence[LayerScore]],
    out_dir: Path,
    *,
    scratch: Path,
    progress: Callable[[str], None] = lambda _m: None,
    label: str = "INT8",
    deadline: float | None = None,
    speed: Callable[[Variant], float | None] | None = None,
) -> FitResult:
    """Quantize within the budget by keeping the most sensitive layers in float.

    ``build(kept, folder)`` quantizes with the nodes ``kept`` in float and writes the variant
    into ``folder``; ``measure(variant, kept)`` runs it on the held-out data and judges it;
    ``ranking()`` (called once, only when plain INT8 fails) gives the candidates, most sensitive
    first. Tries k = 0, then 1, 2, 4, … (at most all layers but one), then bisects to the
    smallest k that passes. The chosen variant's files end up in ``out_dir``; when no k passes,
    the closest variant is returned with ``within_budget=False``.

    The search also stops at ``deadline`` (a ``time.perf_counter()`` value; plain INT8 is always
    tried) and, when ``speed(variant)`` (p50 latency / fp32's) says a variant with layers in float
    is no faster than fp32, before keeping more layers in float: that cannot make it faster.
    """
    start = time.perf_counter()
    trials: list[Trial] = []
    made: list[Variant] = []
    stops: list[str] = []

    def best() -> str:
        passing = [t for t in trials if t.passed]
        if passing:
            return f"best so far: {min(len(t.kept) for t in passing)} layer(s) in float, within budget"
        closest = max(trials, key=lambda t: t.closeness())
        return f"best so far: {len(closest.kept)} layer(s) in float ({closest.reason})"

    def attempt(kept: tuple[str, ...]) -> Trial:
        variant = build(kept, scratch / f"round-{len(trials)}")
        trial = measure(variant, kept)
        trials.append(trial)
        made.append(variant)
        verdict = "within budget" if trial.passed else trial.reason
        ratio = speed(variant) if speed is not None and kept else None
        timing = "" if ratio is None else f", {ratio:.2f}× fp32 latency"
        progress(f"{label}: {len(kept)} layer(s) kept in float → {verdict}{timing}; {best()}; "
                 f"{time.perf_counter() - start:.0f} s")  # fmt: skip
        if ratio is not None and ratio >= SPEED_MARGIN:
            stops.append(
                f"stopped: with {len(kept)} layer(s) in float the variant is no faster than fp32 "
                f"({ratio:.2f}× its latency), so keeping more layers in float cannot pay"
            )
        return trial

    def may_continue() -> bool:
        if stops:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            stops.append("stopped at the search time limit (--search-minutes)")
            return False
        return True

    ranked: list[LayerScore] = []
    note = ""
    if not attempt(()).passed and may_continue():
        ranked = list(ranking())
        names = tuple(s.node for s in ranked)
        max_k = len(names) - 1
        failed, k = 0, 1
        passed_k: int | None = None
        while k <= max_k and may_continue():
            if attempt(names[:k]).passed:
                passed_k = k
                break
            failed = k
            k = max_k if k < max_k < 2 * k else 2 * k
        if passed_k is not None:
            while passed_k - failed > 1 and (deadline is None or time.perf_counter() < deadline):
                mid = (failed + passed_k) // 2
                if attempt(names[:mid]).passed:
                    passed_k = mid
                else:
                    failed = mid
        elif stops:
            pass
        elif max_k < 1:
            note = f"{len(names)} quantizable layer(s): none can stay float in an INT8 variant"
        else:
            note = (
                f"not within budget even with {max_k} of {len(names)} layers in float (one must "
                "stay INT8); kept the closest variant, which the gate rejects"
            )
    passing = [i for i, t in enumerate(trials) if t.passed]
    if passing:
        chosen = min(passing, key=lambda i: len(trials[i].kept))
    else:
        chosen = max(range(len(trials)), key=lambda i: trials[i].closeness())
    note = "; ".join(x for x in [*stops, note] if x)
    variant = _move(made[chosen], out_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    kept = trials[chosen].kept
    progress(f"{label}: kept in float: {list(kept)} ({len(trials)} round(s), "
             f"{time.perf_counter() - start:.0f} s)")  # fmt: skip
    return FitResult(
        variant=variant,
        kept=kept,
        within_budget=trials[chosen].passed,
        trials=trials,
        ranking=ranked,
        seconds=time.perf_counter() - start,
        note=note,
    )


def _reached_text(trial: Trial) -> str:
    fid = trial.fidelity
    parts = []
    if trial.metric is not None and trial.metric_drop is not None:
        parts.append(f"{trial.metric['name']} drop {trial.metric_drop:.2f}")
    if fid.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {fid['top1_agreement']:.4f}")
    parts.append(f"SQNR {fid['sqnr_db']:.1f} dB")
    return ", ".join(parts)


def budget_note(result: FitResult, user_excluded: Sequence[str] = ()) -> str:
    """The variant note: ``kept in float: [...]`` and how the search got there."""
    kept = [*user_excluded, *result.kept]
    reached = _reached_text(result.reached)
    how = f"{len(result.trials)} quantize/evaluate round(s), reached {reached}"
    if result.ranking:
        how = f"{len(result.kept)} most sensitive of {len(result.ranking)} ranked layers; {how}"
    verdict = (
        "within budget" if result.within_budget else f"NOT within budget ({result.reached.reason})"
    )
    text = f"kept in float: {kept} (accuracy-budget search: {how}; {verdict})"
    return text + (f"; {result.note}" if result.note else "")


class BudgetSearch:
    """The accuracy-budget search for the static INT8 variants of one INT8 step.

    Rankings are computed only when a plain INT8 variant misses the budget, once per Q/DQ
    scheme, in one pass (:func:`rank_layers`): ONNX Runtime's placement (or the transformer
    scheme's) for ``ort-int8-static``; the placement on weighted-layer inputs (TensorRT's, and
    NNCF's default) for ``ov-int8`` and ``trt-int8-qdq``. Each search measures on its own runtime
    (the TensorRT Q/DQ graph on ONNX Runtime: no GPU). All runtimes share one time limit,
    ``config.search_minutes``.
    """

    def __init__(
        self,
        config: Int8Config,
        onnx_path: Path,
        feeds: Feeds,
        ctx: Context,
        *,
        transformer: str | None = None,
    ) -> None:
        self.config, self.onnx, self.feeds, self.ctx = config, Path(onnx_path), feeds, ctx
        self.transformer = transformer
        self.budget: Budget = ctx.budget
        self.deadline = time.perf_counter() + 60.0 * config.search_minutes
        self.scratch = Path(ctx.workdir).resolve() / "budget-search"
        self.scratch.mkdir(parents=True, exist_ok=True)
        # Judge against what the final gate compares with: the source model's fp32 (before any
        # pruning or distillation), with the same threads.
        self.evaluator = Evaluator(
            ctx.baseline or self.onnx, ctx.eval, self.budget, threads=ctx.threads, output=ctx.output
        )
        self.results: dict[str, FitResult] = {}
        self._rankings: dict[str, list[LayerScore]] = {}
        self._ranking_seconds: dict[str, float] = {}

    def kept(self, variant_name: str) -> tuple[str, ...]:
        """The nodes the search kept in float for ``variant_name`` (beyond ``config.exclude``)."""
        found = [r.kept for r in self.results.values() if r.variant.name == variant_name]
        return found[0] if found else ()

    def _config(self, kept: Sequence[str]) -> Int8Config:
        return dataclasses.replace(self.config, exclude=(*self.config.exclude, *kept))

    def _cache(self, scheme: str) -> Path:
        return self.scratch / f"{scheme}-ranges.json"

    def ranking(self, scheme: str) -> list[LayerScore]:
        """The one-pass ranking for ``scheme`` ("onnxruntime", "transformer" or "tensorrt"),
        computed once."""
        from edgekit.compress.quantize_ort import ort_int8_static_transformer

        if scheme not in self._rankings:
            self.ctx.progress(f"ranking layers in one pass ({scheme} Q/DQ placement)")
            start = time.perf_counter()
            folder = self.scratch / f"rank-{scheme}"
            folder.mkdir(parents=True, exist_ok=True)
            full = dataclasses.replace(self.config, exclude=())
            qdq, reference = folder / "all.onnx", folder / "float.onnx"
            cache = self._cache(scheme)
            if scheme == "transformer":
                ort_int8_static_transformer(full, self.onnx, self.feeds, qdq, calibration_cache=cache,
                                            float_copy=reference)  # fmt: skip
            else:
                build = ort_int8_static if scheme == "onnxruntime" else trt_int8_qdq
                build(full, self.onnx, self.feeds, qdq, calibration_cache=cache)
                preprocess(self.onnx, reference)
            self._rankings[scheme] = rank_layers(
                reference, qdq, self.ctx.eval, skip=self.config.exclude
            )
            shutil.rmtree(folder, ignore_errors=True)
            self._ranking_seconds[scheme] = time.perf_counter() - start
        return self._rankings[scheme]

    def _speed(self, runtime: str) -> Callable[[Variant], float | None] | None:
        """p50 latency of a variant / ONNX Runtime fp32's, batch 1 on real samples, interleaved."""
        if runtime == "tensorrt" or not self.config.stop_when_no_faster:
            return None
        from edgekit.benchmarks.latency import cycle, feeds_from, measure
        from edgekit.runtimes import get_runtime

        baseline = self.ctx.baseline or self.onnx

        def ratio(variant: Variant) -> float | None:
            rts = {
                "fp32": get_runtime("onnxruntime", threads=self.ctx.threads).load(baseline),
                "variant": get_runtime(runtime, threads=self.ctx.threads).load(variant.path),
            }
            fns = {}
            for key, rt in rts.items():
                arrays = self.ctx.eval.bind([spec.name for spec in rt.inputs])
                fns[key] = cycle(rt, feeds_from(arrays, 1, 8, seed=0))
            stats = measure(fns, warmup=3, budget_s=0.3, min_iters=10, rounds=4)
            return stats["variant"].p50 / max(stats["fp32"].p50, 1e-9)

        return ratio

    def _finish(self, result: FitResult) -> Variant:
        v = result.variant
        v.notes = [n for n in v.notes if not n.startswith("kept in float (")]
        v.notes.append(budget_note(result, self.config.exclude))
        if result.kept:
            v.precision = "mixed"
        return v

    def _search(self, runtime: str, build: Callable[[tuple[str, ...], Path], Variant],
                ranking: Callable[[], Sequence[LayerScore]], out: Path, label: str,
                measured_in: str | None = None) -> FitResult:  # fmt: skip
        result = fit_budget(
            build,
            lambda variant, kept: self.evaluator.measure(variant, kept, runtime=measured_in),
            ranking,
            out.parent,
            scratch=self.scratch / runtime,
            progress=self.ctx.progress,
            label=f"budget search ({label})",
            deadline=self.deadline,
            speed=self._speed(runtime),
        )
        self.results[runtime] = result
        return result

    def ort_static(self, out: Path) -> Variant:
        """``ort-int8-static`` within budget (``nodes_to_exclude``), measured in ONNX Runtime."""
        from edgekit.compress.quantize_ort import ort_int8_static_transformer

        scheme = "transformer" if self.transformer else "onnxruntime"
        cache = self._cache(scheme)

        def build(kept: tuple[str, ...], folder: Path) -> Variant:
            config = self._config(kept)
            if self.transformer:
                return ort_int8_static_transformer(config, self.onnx, self.feeds, folder / out.name,
                                                   why=self.transformer, calibration_cache=cache)  # fmt: skip
            return ort_int8_static(config, self.onnx, self.feeds, folder / out.name,
                                   calibration_cache=cache)  # fmt: skip

        def ranking() -> list[LayerScore]:
            return self.ranking(scheme)

        result = self._search("onnxruntime", build, ranking, out, "ONNX Runtime")
        return self._finish(result)

    def openvino(self, out_xml: Path) -> Variant:
        """``ov-int8`` within budget (NNCF ignored scope), measured in OpenVINO."""
        from edgekit.compress.quantize_ov import ov_int8, ov_mappable

        def build(kept: tuple[str, ...], folder: Path) -> Variant:
            return ov_int8(self._config(kept), self.onnx, self.feeds, folder / out_xml.name,
                           transformer=self.transformer)  # fmt: skip

        def ranking() -> list[LayerScore]:
            ranked = self.ranking("transformer" if self.transformer else "tensorrt")
            mappable = set(ov_mappable(self.onnx, [s.node for s in ranked]))
            return [s for s in ranked if s.node in mappable]

        result = self._search("openvino", build, ranking, out_xml, "OpenVINO")
        return self._finish(result)

    def tensorrt(self, out: Path) -> Variant:
        """``trt-int8-qdq`` within budget: TensorRT runs in float whatever has no Q/DQ nodes, so
        the search drops the Q/DQ of the most sensitive layers. There is no GPU here: each round
        executes the Q/DQ graph in ONNX Runtime on the CPU (same scales and placement)."""
        cache = self._cache("tensorrt")

        def build(kept: tuple[str, ...], folder: Path) -> Variant:
            config = self._config(kept)
            return trt_int8_qdq(config, self.onnx, self.feeds, folder / out.name,
                                calibration_cache=cache)  # fmt: skip

        def ranking() -> list[LayerScore]:
            return self.ranking("tensorrt")

        result = self._search("tensorrt", build, ranking, out, "TensorRT Q/DQ, run by ONNX Runtime",
                              measured_in="onnxruntime")  # fmt: skip
        proxy = (
            "measured by executing the Q/DQ graph in ONNX Runtime on the CPU; TensorRT's kernels "
            "(and FP16 for the float layers) may differ: check with 'edgekit bench' on the device"
        )
        result.note = f"{result.note}; {proxy}" if result.note else proxy
        return self._finish(result)

    def record(self) -> None:
        """Write ``ctx.records["budget"]``: the budget, and per runtime the ranking (top 10), the
        layers kept in float, what was reached and the quantize/evaluate rounds."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        rec = self.ctx.records.setdefault("budget", {})
        rec["budget"] = self.budget.describe(self.evaluator.metric_name)
        rec["ranking_method"] = RANKING_METHOD
        rec["search_minutes"] = self.config.search_minutes
        rec["sensitivity"] = {
            scheme: {
                "layers": len(ranked),
                "seconds": round(self._ranking_seconds[scheme], 2),
                "unit": ONE_PASS_UNIT,
            }
            for scheme, ranked in self._rankings.items()
        }
        runtimes = rec.setdefault("runtimes", {})
        for runtime, result in self.results.items():
            runtimes[runtime] = result.record()
