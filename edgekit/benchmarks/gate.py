"""The fidelity gate: a variant that loses more than the budget is kept in the report, marked
``deployable: false`` with the reason, and never recommended. Every decision is made here:
:class:`OutputJudge` judges one variant's outputs (the final measurement and the budget search
both call it), :func:`decide` writes the verdicts into the report rows, and
:func:`budget_verdict` says whether the run met the user's budget (exit 3 when not).

What decides, in order: the user's own metric (``--metric``) when given; else the task metric
when there are labels (its drop vs fp32); else the rules of the output kind
(:data:`edgekit.benchmarks.accuracy.KINDS`) on the fidelity figures. ``--min-sqnr`` applies in
every case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.benchmarks.accuracy import (
    KINDS,
    Outputs,
    OutputSpec,
    figures,
    kind_metrics,
    load_metric,
    metric_drop,
    user_metric,
)
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.metrics import default_budgets

# Default allowed drop of each primary metric, in its own units: 1.0 point of accuracy (percent),
# 0.01 of R² (one point of R² expressed in percent); sequence accuracy and nearest-centroid
# accuracy in points.
DEFAULT_MAX_DROP = default_budgets()  # declared by each metric (edgekit.metrics)
DEFAULT_KIND = "classifier"


@dataclass(frozen=True)
class Budget:
    """Thresholds a variant must meet. With labels the task metric decides; without, fidelity.
    A threshold left at None takes the default of the output kind."""

    max_drop: float | None = None  # in the metric's units; None → DEFAULT_MAX_DROP
    min_top1_agreement: float | None = None  # None → the kind's default (0.99)
    min_cosine: float | None = None  # None → the kind's default (0.99; 0.995 pooled for embeddings)
    min_sqnr_db: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise BadInputError(
                f"--max-drop must be >= 0 (got {self.max_drop}); it is the allowed loss in metric points"
            )
        if self.min_top1_agreement is not None and not 0.0 <= self.min_top1_agreement <= 1.0:
            raise BadInputError("top-1 agreement threshold must be between 0 and 1")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise BadInputError("cosine threshold must be between -1 and 1")

    @property
    def explicit(self) -> bool:
        """True when the user set a budget (then missing it is exit code 3, not just a rejection)."""
        return self != Budget()

    def top1_floor(self) -> float:
        """Without labels, ``max_drop`` reads as points of top-1 agreement with fp32."""
        if self.min_top1_agreement is not None:
            return self.min_top1_agreement
        return 1.0 - self.max_drop / 100.0 if self.max_drop is not None else 0.99

    def drop_for(self, metric: str) -> float:
        return self.max_drop if self.max_drop is not None else DEFAULT_MAX_DROP.get(metric, 1.0)

    def describe(self, metric: str | None, kind: str | None = None, custom: str | None = None) -> dict[str, Any]:
        d = asdict(self)
        if kind:
            d["output_kind"] = kind
            d["rules"] = [r for r in (rule.describe(self) for rule in KINDS[kind].rules) if r]
        if custom:
            d["metric"] = custom
            d["decides"] = f"the user's metric {custom} ('passed', else its drop vs fp32 within max_drop)"
            d["max_drop"] = self.max_drop if self.max_drop is not None else 1.0
        elif metric:
            d["max_drop"] = self.drop_for(metric)
            d["metric"] = metric
            d["decides"] = "metric drop vs fp32 on labelled held-out data"
        else:
            d["decides"] = f"fidelity to fp32 (no labels): the {kind or DEFAULT_KIND} rules"
        return d


def judge(
    budget: Budget,
    *,
    metric: str | None,
    metric_drop: float | None,
    fidelity: dict[str, Any] | None,
    kind: str | None = None,
    custom: dict[str, Any] | None = None,
    custom_drop: float | None = None,
) -> str | None:
    """``None`` when the variant passes, else the reason it is rejected (one line).

    ``kind`` defaults to the ``"kind"`` recorded in ``fidelity`` (classifier when absent).
    ``custom`` is the user's metric result (:func:`edgekit.benchmarks.accuracy.user_metric`) and
    ``custom_drop`` its drop vs fp32's own value.
    """
    fid = fidelity or {}
    if custom is not None:
        if custom.get("passed") is not None:
            if not custom["passed"]:
                return f"{custom['name']} says not passed (value {custom['value']:.4g})"
        elif custom_drop is not None:
            allowed = budget.max_drop if budget.max_drop is not None else 1.0
            if custom_drop > allowed + 1e-9:
                return f"{custom['name']} drops {custom_drop:.4g} > budget {allowed:g}"
    elif metric is not None and metric_drop is not None:
        allowed = budget.drop_for(metric)
        if metric_drop > allowed + 1e-9:
            return f"{metric} drops {metric_drop:.2f} > budget {allowed:g}"
    else:
        entry = KINDS[kind or fid.get("kind") or DEFAULT_KIND]
        for rule in entry.rules:
            bound, value = rule.bound(budget), fid.get(rule.figure)
            if bound is None or value is None or (rule.unless and fid.get(rule.unless) is not None):
                continue
            if rule.at_least and value < bound - 1e-12:
                return f"{rule.label} {value:.4f}{rule.unit} < {bound:g}{rule.unit}"
            if not rule.at_least and value > bound + 1e-9:
                return f"{rule.label} {value:.2f}{rule.unit} > {bound:g}{rule.unit}"
    sqnr = fid.get("sqnr_db")
    if budget.min_sqnr_db is not None and sqnr is not None and sqnr < budget.min_sqnr_db:
        return f"SQNR {sqnr:.1f} dB < {budget.min_sqnr_db:g} dB"
    return None


@dataclass
class Verdict:
    """What the gate measured of one variant's outputs, and its decision (``reason`` None = pass)."""

    fidelity: dict[str, Any]
    metrics: dict[str, float]
    metric: dict[str, Any] | None
    metric_drop: float | None
    reason: str | None


class OutputJudge:
    """Judges a variant's outputs against the fp32 reference the way the output is used: the
    kind's fidelity figures, the task metric with labels, the user's ``--metric``, then
    :func:`~edgekit.benchmarks.gate.judge`. The final measurement and the budget search share it."""

    def __init__(self, spec: OutputSpec, reference: Outputs, data: Dataset, budget: Budget) -> None:
        self.spec, self.ref, self.data, self.budget = spec, reference, data, budget
        self.metric_name, self.base_metrics = kind_metrics(spec, reference, reference, data.labels, data.task)
        self.custom_fn = load_metric(spec.metric) if spec.metric else None
        self.base_custom = (
            user_metric(self.custom_fn, spec.metric, reference, reference, data)
            if self.custom_fn and spec.metric
            else None
        )

    def __call__(self, out: Outputs) -> Verdict:
        spec, data = self.spec, self.data
        fid = figures(spec, self.ref, out)
        name_m, values = kind_metrics(spec, self.ref, out, data.labels, data.task)
        metric = drop = None
        if self.metric_name and name_m:
            metric = {"name": self.metric_name, "value": values[self.metric_name]}
            drop = metric_drop(self.metric_name, self.base_metrics[self.metric_name], values[self.metric_name])
        custom = custom_drop = None
        if self.custom_fn is not None and self.base_custom is not None and spec.metric:
            custom = user_metric(self.custom_fn, spec.metric, self.ref, out, data)
            sign = 1.0 if custom["higher_is_better"] else -1.0
            custom_drop = sign * (self.base_custom["value"] - custom["value"])
            values[spec.metric] = custom["value"]
            fid["user_metric"] = custom
        reason = judge(
            self.budget,
            metric=self.metric_name,
            metric_drop=drop,
            fidelity=fid,
            kind=spec.kind,
            custom=custom,
            custom_drop=custom_drop,
        )
        return Verdict(fid, values, metric, drop, reason)


def decide(rows: dict[str, Any], verdicts: dict[str, Verdict], baseline: str) -> None:
    """Write each verdict into its report row (figures, ``deployable``, ``rejected_reason``). The
    baseline is the reference, never rejected; a row that could not run here is not deployable."""
    for name, v in verdicts.items():
        row = rows[name]
        row.fidelity, row.metrics, row.metric, row.metric_drop = v.fidelity, v.metrics, v.metric, v.metric_drop
        if name != baseline:
            row.deployable = v.reason is None
            row.rejected_reason = v.reason
    for row in rows.values():
        if not row.measured:
            row.deployable = False
            row.rejected_reason = f"not verified on this machine: {row.not_measured_reason}"


def closest(rows: Sequence[Any]) -> Any:
    """The variant closest to passing: smallest metric drop, else best fidelity (top-1, cosine, SQNR)."""

    def key(r: Any) -> tuple[float, ...]:
        f = r.fidelity or {}
        drop = r.metric_drop if r.metric_drop is not None else 0.0
        return (drop, -(f.get("top1_agreement") or 0.0), -(f.get("cosine") or 0.0), -(f.get("sqnr_db") or 0.0))

    scored = [r for r in rows if r.fidelity]
    return min(scored, key=key) if scored else None


def budget_verdict(budget: Budget, rows: Sequence[Any], where: str) -> str | None:
    """The run's verdict on the user's budget: None when no budget was set or a compressed variant
    met it, else why not (the CLI exits 3 with it). ``where`` names the report listing them all."""
    compressed = [r for r in rows if r.measured and (r.techniques or r.precision != "fp32")]
    if not budget.explicit or any(r.deployable for r in compressed):
        return None
    best = closest(compressed)
    detail = f"best was {best.name}: {best.rejected_reason}" if best else "none could be measured"
    return f"no compressed variant met the budget ({detail}); all are listed in {where}"
