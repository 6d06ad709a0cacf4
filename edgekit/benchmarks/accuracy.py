"""Fidelity of a compressed model to its fp32 baseline, measured the way its output is used.

The output kinds of :data:`KINDS` (classifier, embedding, sequence, regression, raw) each compute
their figures over real positions only (padding never counts) and name the rules the gate
(:mod:`edgekit.benchmarks.gate`) applies; with labels, the kind's task metrics
(:mod:`edgekit.metrics`, one module per metric) decide instead. :func:`detect` reads the kind from
the model's metadata and output shape, :func:`resolve` applies the user's choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.metrics import TASKS, Scoring, compute, metric_drop, primary_metric, task_metrics
from edgekit.metrics.accuracy import predictions
from edgekit.metrics.ctc import ctc_collapse, decode_all
from edgekit.metrics.outputs import Outputs, as_outputs, pooled
from edgekit.metrics.user import load_metric, user_metric

# The primary metric of each task with labels (edgekit.metrics.TASKS lists them all).
PRIMARY = {task: metrics[0] for task, metrics in TASKS.items()}


@dataclass(frozen=True)
class Fidelity:
    """How closely a variant's outputs follow the fp32 baseline's on the same inputs."""

    top1_agreement: float | None  # fraction of samples with the same predicted class (classification)
    cosine: float  # mean per-sample cosine similarity of the output vectors
    sqnr_db: float  # 10·log10(‖ref‖² / ‖ref − out‖²) over all outputs; inf when identical
    max_abs_err: float

    def as_dict(self) -> dict[str, float | None]:
        d = asdict(self)
        if np.isinf(self.sqnr_db):
            d["sqnr_db"] = 999.0  # JSON has no infinity; 999 dB means bit-identical
        return d


def fidelity(task: str, reference: np.ndarray, outputs: np.ndarray) -> Fidelity:
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: baseline {ref.shape}, variant {out.shape}")
    err = ref - out
    noise = float(np.sum(err**2))
    signal = float(np.sum(ref**2))
    sqnr = float("inf") if noise == 0.0 else 10.0 * np.log10(max(signal, 1e-300) / noise)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(err == 0, axis=1), 1.0, 0.0))
    top1 = None
    if task in ("classification", "binary") or (task == "unknown" and ref.shape[1] > 1):
        t = task if task != "unknown" else "classification"
        top1 = float(np.mean(predictions(t, ref) == predictions(t, out)))
    return Fidelity(
        top1_agreement=top1,
        cosine=float(np.mean(cos)),
        sqnr_db=sqnr,
        max_abs_err=float(np.max(np.abs(err))) if err.size else 0.0,
    )


# ================================================================== output-aware fidelity
# Without labels, "accuracy loss" is fidelity to fp32 measured the way the output is used: each
# output kind below says which figures it computes and which of them the gate checks (and at
# which default threshold). A new kind is one entry of ``KINDS``.

KIND_NAMES = ("classifier", "embedding", "sequence", "regression", "raw")
DECODERS = ("ctc", "none")
# A variant's argmax counts as agreeing when the fp32 output at that class is within this
# fraction of the row's scale of the fp32 maximum: a tie that numerical noise may break either way.
TIE_RTOL = 1e-3


@dataclass(frozen=True)
class OutputSpec:
    """How a model's output is used, hence how fidelity is measured: the output kind, the CTC
    decoding of sequence outputs, and the user's own metric (``module:function``)."""

    kind: str
    decode: str | None = None  # "ctc" for sequence outputs read by CTC collapse
    blank: int = 0  # the CTC blank class
    metric: str | None = None  # the user's metric, "module:function"
    source: str = "detected"  # "detected", "--output-kind", "model metadata", "bundle manifest"
    why: str = ""  # the evidence the detection used

    def __post_init__(self) -> None:
        from edgekit.errors import BadInputError

        if self.kind not in KIND_NAMES:
            raise BadInputError(f"unknown output kind {self.kind!r}; choose one of {', '.join(KIND_NAMES)}")
        if self.decode not in (None, *DECODERS):
            raise BadInputError(f"unknown decoder {self.decode!r}; choose one of {', '.join(DECODERS)}")
        if self.decode == "ctc" and self.kind != "sequence":
            raise BadInputError(f"--decode ctc reads sequence outputs, not {self.kind}; pass --output-kind sequence")
        if isinstance(self.blank, bool) or not isinstance(self.blank, int) or self.blank < 0:
            raise BadInputError(f"the CTC blank must be a class index >= 0 (got {self.blank!r})")
        if self.metric is not None and ":" not in self.metric:
            raise BadInputError(f"--metric takes module:function (got {self.metric!r}), e.g. mymetrics:score")

    @property
    def ctc(self) -> bool:
        return self.decode == "ctc"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = self.kind
        if self.ctc:
            text += f" (CTC decode, blank {self.blank})"
        if self.metric:
            text += f", metric {self.metric}"
        return f"{text} [{self.source}{': ' + self.why if self.why else ''}]"


@dataclass(frozen=True)
class Rule:
    """One check of the gate: ``figure`` (a key of the fidelity figures) must be at least (or at
    most) a bound. ``override`` reads the user's bound from the :class:`~edgekit.benchmarks.gate.Budget`
    (None = keep ``default``); a rule with no bound is skipped, and so is a rule whose figure is
    missing or whose ``unless`` figure is present."""

    figure: str
    label: str
    default: float | None
    at_least: bool = True
    override: Callable[[Any], float | None] | None = None
    unless: str | None = None
    unit: str = ""

    def bound(self, budget: Any) -> float | None:
        user = self.override(budget) if self.override and budget is not None else None
        return self.default if user is None else user

    def describe(self, budget: Any) -> dict[str, Any] | None:
        b = self.bound(budget)
        if b is None:
            return None
        return {"figure": self.figure, "at_least" if self.at_least else "at_most": b}


@dataclass(frozen=True)
class OutputKind:
    """An output kind: its fidelity figures, the gate's rules on them, and its task metric."""

    name: str
    what: str
    figures: Callable[[Outputs, Outputs, OutputSpec], dict[str, Any]]
    rules: tuple[Rule, ...]
    # registered metrics (edgekit.metrics) it reports against labels; the first decides
    metrics: tuple[str, ...] = ()


# ------------------------------------------------------------------------- figures
def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    err = ref - out
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    return float("inf") if noise == 0.0 else 10.0 * float(np.log10(max(signal, 1e-300) / noise))


def _row_cosine(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine per row; identical all-zero rows count as 1."""
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    same = np.all(ref == out, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))


def _common(ref: Outputs, out: Outputs) -> dict[str, Any]:
    """SQNR, max and relative error over real values only."""
    r = ref.real_values().astype(np.float64)
    o = out.real_values().astype(np.float64)
    if r.shape != o.shape:
        raise ValueError(f"output shapes differ: baseline {ref.values.shape}, variant {out.values.shape}")
    err = r - o
    ref_norm = float(np.linalg.norm(r))
    return {
        "sqnr_db": _sqnr(r, o),
        "max_abs_err": float(np.max(np.abs(err))) if err.size else 0.0,
        "rel_err": float(np.linalg.norm(err) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(err) > 0),
        "positions": int(ref.valid.sum()) if ref.valid is not None else None,
    }


def tie_aware_argmax(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax of ``ref`` rows, and of ``out`` rows with near-ties of ``ref`` resolved like ``ref``."""
    ref_arg = ref.argmax(axis=1)
    out_arg = out.argmax(axis=1)
    rows = np.arange(len(ref))
    scale = np.maximum(np.abs(ref).max(axis=1, initial=0.0), 1.0)
    tied = ref[rows, out_arg] >= ref[rows, ref_arg] - TIE_RTOL * scale
    return ref_arg, np.where(tied, ref_arg, out_arg)


def _classifier(ref: Outputs, out: Outputs, spec: OutputSpec) -> dict[str, Any]:
    r = ref.values.reshape(len(ref), -1).astype(np.float64)
    o = out.values.reshape(len(out), -1).astype(np.float64)
    if r.shape[1] > 1:
        a, b = tie_aware_argmax(r, o)
        top1 = float(np.mean(a == b))
    else:
        top1 = float(np.mean((r[:, 0] > 0.5) == (o[:, 0] > 0.5)))
    return {"top1_agreement": top1, "cosine": float(np.mean(_row_cosine(r, o))), **_common(ref, out)}


def nearest_neighbours(emb: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by cosine (rows L2-normalised)."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def _embedding(ref: Outputs, out: Outputs, spec: OutputSpec) -> dict[str, Any]:
    r, o = pooled(ref), pooled(out)
    cos = np.sum(r * o, axis=1)
    nn = float(np.mean(nearest_neighbours(r) == nearest_neighbours(o))) if len(r) > 2 else None
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "nn_agreement": nn, **_common(ref, out)}


def _sequence(ref: Outputs, out: Outputs, spec: OutputSpec) -> dict[str, Any]:
    r, owner = ref.positions()
    o, _ = out.positions()
    r, o = r.astype(np.float64), o.astype(np.float64)
    a, b = tie_aware_argmax(r, o)
    figures: dict[str, Any] = {
        "position_agreement": float(np.mean(a == b)) if len(a) else 1.0,
        "cosine": float(np.mean(_row_cosine(r, o))) if len(r) else 1.0,
    }
    if spec.ctc:
        ref_text = decode_all(a, owner, len(ref), spec.blank)
        out_text = decode_all(b, owner, len(ref), spec.blank)
        exact = float(np.mean([x == y for x, y in zip(ref_text, out_text, strict=True)]))
        figures["exact_match"] = exact
        figures["exact_match_drop"] = 100.0 * (1.0 - exact)  # points vs fp32 reading itself
    return {**figures, **_common(ref, out)}


def _raw(ref: Outputs, out: Outputs, spec: OutputSpec) -> dict[str, Any]:
    r = ref.real_values().astype(np.float64)
    o = out.real_values().astype(np.float64)
    cos = float(_row_cosine(r[None], o[None])[0]) if r.size else 1.0
    return {"cosine": cos, **_common(ref, out)}


def _top1_floor(budget: Any) -> float | None:
    if budget.min_top1_agreement is not None:
        return float(budget.min_top1_agreement)
    return 1.0 - budget.max_drop / 100.0 if budget.max_drop is not None else None


def _points_drop(budget: Any) -> float | None:
    return budget.max_drop


def _agreement_floor(budget: Any) -> float | None:
    return 1.0 - budget.max_drop / 100.0 if budget.max_drop is not None else None


def _min_cosine(budget: Any) -> float | None:
    return budget.min_cosine


def _min_sqnr(budget: Any) -> float | None:
    return budget.min_sqnr_db


KINDS: dict[str, OutputKind] = {
    k.name: k
    for k in (
        OutputKind(
            "classifier",
            "class scores [B, C]: top-1 agreement and cosine of the scores",
            _classifier,
            (
                Rule("top1_agreement", "top-1 agreement", 0.99, override=_top1_floor),
                Rule("cosine", "cosine", 0.99, override=_min_cosine),
            ),
        ),
        OutputKind(
            "embedding",
            "embeddings [B, D] or token states [B, T, D]: mask-aware mean-pooled, L2-normalised "
            "cosine per sample (mean, min); nearest-neighbour agreement within the evaluation set",
            _embedding,
            (
                Rule("cosine", "pooled cosine (mean)", 0.995, override=_min_cosine),
                Rule("cosine_min", "pooled cosine (min)", 0.98),
                Rule("nn_agreement", "nearest-neighbour agreement", None, override=_agreement_floor),
            ),
            ("centroid_accuracy",),
        ),
        OutputKind(
            "sequence",
            "per-position class scores [B, T, C]: argmax agreement over real positions; exact "
            "match after CTC collapse with decode ctc",
            _sequence,
            (
                Rule("exact_match_drop", "exact-match drop", 1.0, False, _points_drop, unit=" points"),
                Rule("position_agreement", "per-position agreement", 0.99, override=_top1_floor,
                     unless="exact_match_drop"),
            ),
            ("sequence_accuracy", "cer"),
        ),
        OutputKind(
            "regression",
            "values: relative error and SQNR",
            _raw,
            (Rule("sqnr_db", "SQNR", 30.0, override=_min_sqnr, unit=" dB"),),
        ),
        OutputKind(
            "raw",
            "any tensor: relative error and SQNR over real values",
            _raw,
            (Rule("sqnr_db", "SQNR", 30.0, override=_min_sqnr, unit=" dB"),),
        ),
    )
}


def figures(spec: OutputSpec, reference: Outputs | np.ndarray, outputs: Outputs | np.ndarray) -> dict[str, Any]:
    """The fidelity figures of ``spec.kind`` (JSON-ready: infinity becomes 999 dB)."""
    ref, out = as_outputs(reference), as_outputs(outputs)
    if ref.values.shape != out.values.shape:
        raise ValueError(f"output shapes differ: baseline {ref.values.shape}, variant {out.values.shape}")
    fig = KINDS[spec.kind].figures(ref, out, spec)
    if np.isinf(fig.get("sqnr_db", 0.0)):
        fig["sqnr_db"] = 999.0  # JSON has no infinity; 999 dB means bit-identical
    return {"kind": spec.kind, **fig}


def kind_metrics(
    spec: OutputSpec, reference: Outputs, outputs: Outputs, labels: np.ndarray | None, task: str
) -> tuple[str | None, dict[str, float]]:
    """The task metrics against ``labels`` and the name of the one that decides (None: no labels
    usable by this kind, fidelity decides)."""
    if labels is None:
        return None, {}
    entry = KINDS[spec.kind]
    if entry.metrics:
        scoring = Scoring(outputs, np.asarray(labels), task, reference, spec.blank if spec.ctc else None)
        values = compute(entry.metrics, scoring)
        return (entry.metrics[0] if entry.metrics[0] in values else None), values
    if spec.kind in ("classifier", "regression") and task in PRIMARY:
        return PRIMARY[task], task_metrics(task, outputs.values, labels)
    return None, {}


# ---------------------------------------------------------------------- detection
def _meta_blank(meta: dict[str, Any], data_meta: dict[str, Any]) -> int:
    for source in (meta, data_meta):
        if source.get("blank") is not None:
            try:
                return int(source["blank"])
            except (TypeError, ValueError):
                pass
    return 0


def detect(
    outputs: Outputs,
    *,
    has_mask: bool,
    labels: np.ndarray | None,
    meta: dict[str, Any] | None = None,
    data_meta: dict[str, Any] | None = None,
    output_dtype: str | None = None,
) -> OutputSpec:
    """The output kind of a model, from its metadata, its output's shape and the data.

    Rules, in order: the model's metadata (``output_kind``; ``decode: "ctc"``, or a ``blank``
    class named by the model or its data set with ``[B, T, C]`` scores → sequence read by CTC; ``task``);
    a non-float output → raw; ``[B, T, D]`` with an attention-mask input whose positions the
    output keeps → embedding (token states); other ``[B, T, C]`` → sequence; ``[B]`` or ``[B, 1]``
    → regression; ``[B, D]`` with an attention mask, no class labels and D ≥ 64 → embedding; other
    ``[B, D]`` → classifier; anything else → raw.
    """
    meta, data_meta = meta or {}, data_meta or {}
    v = outputs.values
    ctc = str(meta.get("decode", "")).lower() == "ctc" or bool(meta.get("ctc"))
    # a CTC blank class named by the model or its data set means CTC decoding of [B, T, C] scores
    blank_named = v.ndim == 3 and ("blank" in meta or "blank" in data_meta)
    blank = _meta_blank(meta, data_meta)
    kind = meta.get("output_kind")
    if kind in KIND_NAMES:
        decoder = "ctc" if (ctc or blank_named) and kind == "sequence" else None
        return OutputSpec(kind, decoder, blank, source="model metadata", why=f"output_kind {kind}")
    if ctc or blank_named:
        why = "decode ctc" if ctc else f"CTC blank {blank}"
        return OutputSpec("sequence", "ctc", blank, source="model metadata", why=why)
    task = meta.get("task")
    by_task = {"embedding": "embedding", "sequence": "sequence", "regression": "regression",
               "classification": "classifier", "binary": "classifier"}
    if task in by_task:
        return OutputSpec(by_task[task], None, blank, source="model metadata", why=f"task {task}")
    dims = ["B", *map(str, v.shape[1:])]
    if outputs.valid is not None and v.ndim >= 3:
        dims[1] = "T"
    shape = "[" + ", ".join(dims) + "]"
    if output_dtype is not None and not np.issubdtype(np.dtype(output_dtype), np.floating):
        return OutputSpec("raw", why=f"{output_dtype} output {shape}")
    class_labels = labels is not None and np.issubdtype(labels.dtype, np.integer)
    if v.ndim == 3:
        if has_mask and outputs.valid is not None:
            return OutputSpec("embedding", why=f"token states {shape} with an attention mask")
        return OutputSpec("sequence", why=f"per-position scores {shape}")
    if v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 1):
        if class_labels and labels is not None and labels.ndim == 1:
            return OutputSpec("classifier", why=f"one score per sample {shape} with integer labels")
        return OutputSpec("regression", why=f"one value per sample {shape}")
    if v.ndim == 2:
        if has_mask and not class_labels and v.shape[1] >= 64:
            return OutputSpec("embedding", why=f"vector {shape} of a masked text input, no class labels")
        if has_mask and class_labels and labels is not None and labels.max(initial=0) >= v.shape[1]:
            return OutputSpec("embedding", why=f"vector {shape}; labels exceed its width, so not class scores")
        return OutputSpec("classifier", why=f"scores {shape}")
    return OutputSpec("raw", why=f"output {shape}")


def resolve(
    detected: OutputSpec,
    *,
    kind: str | None = None,
    decode: str | None = None,
    blank: int | None = None,
    metric: str | None = None,
    source: str = "--output-kind",
) -> OutputSpec:
    """``detected`` with the user's choices applied (each None keeps the detected value)."""
    new_kind = kind or ("sequence" if decode == "ctc" else detected.kind)
    if decode is None:
        new_decode = detected.decode if new_kind == "sequence" else None
    else:
        new_decode = None if decode == "none" else decode
    return OutputSpec(
        kind=new_kind,
        decode=new_decode,
        blank=detected.blank if blank is None else blank,
        metric=metric or detected.metric,
        source=source if kind else detected.source,
        why="" if kind and kind != detected.kind else detected.why,
    )



__all__ = [
    "DECODERS",
    "Fidelity",
    "KINDS",
    "KIND_NAMES",
    "OutputKind",
    "OutputSpec",
    "Outputs",
    "PRIMARY",
    "Rule",
    "TIE_RTOL",
    "as_outputs",
    "ctc_collapse",
    "decode_all",
    "detect",
    "fidelity",
    "figures",
    "kind_metrics",
    "load_metric",
    "metric_drop",
    "nearest_neighbours",
    "pooled",
    "predictions",
    "primary_metric",
    "resolve",
    "task_metrics",
    "tie_aware_argmax",
    "user_metric",
]
