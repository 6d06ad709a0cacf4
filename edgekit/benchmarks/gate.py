"""The fidelity gate: a variant that loses more than the budget is kept in the report, marked
``deployable: false`` with the reason, and never recommended.

What decides, in order: the user's own metric (``--metric``) when given; else the task metric
when there are labels (its drop vs fp32); else the rules of the output kind
(:data:`edgekit.benchmarks.accuracy.KINDS`) on the fidelity figures. ``--min-sqnr`` applies in
every case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekit.benchmarks.accuracy import KINDS
from edgekit.errors import BadInputError
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
