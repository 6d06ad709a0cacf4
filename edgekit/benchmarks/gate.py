"""The fidelity gate: a variant that loses more than the budget is kept in the report, marked
``deployable: false`` with the reason, and never recommended."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import BadInputError

# Default allowed drop of each primary metric, in its own units: 1.0 point of accuracy (percent),
# 0.01 of R² (one point of R² expressed in percent).
DEFAULT_MAX_DROP = {"accuracy": 1.0, "r2": 0.01}


@dataclass(frozen=True)
class Budget:
    """Thresholds a variant must meet. With labels the task metric decides; without, fidelity."""

    max_drop: float | None = None  # in the metric's units; None → DEFAULT_MAX_DROP
    min_top1_agreement: float = 0.99
    min_cosine: float = 0.99
    min_sqnr_db: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise BadInputError(
                f"--max-drop must be >= 0 (got {self.max_drop}); it is the allowed loss in metric points"
            )
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise BadInputError("top-1 agreement threshold must be between 0 and 1")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise BadInputError("cosine threshold must be between -1 and 1")

    @property
    def explicit(self) -> bool:
        """True when the user set a budget (then missing it is exit code 3, not just a rejection)."""
        return self != Budget()

    def top1_floor(self) -> float:
        """Without labels, ``max_drop`` reads as points of top-1 agreement with fp32."""
        return 1.0 - self.max_drop / 100.0 if self.max_drop is not None else self.min_top1_agreement

    def drop_for(self, metric: str) -> float:
        return self.max_drop if self.max_drop is not None else DEFAULT_MAX_DROP.get(metric, 1.0)

    def describe(self, metric: str | None) -> dict[str, Any]:
        d = asdict(self)
        if metric:
            d["max_drop"] = self.drop_for(metric)
            d["metric"] = metric
            d["decides"] = "metric drop vs fp32 on labelled held-out data"
        else:
            d["decides"] = "fidelity to fp32 (no labels)"
        return d


def judge(
    budget: Budget,
    *,
    metric: str | None,
    metric_drop: float | None,
    fidelity: dict[str, Any] | None,
) -> str | None:
    """``None`` when the variant passes, else the reason it is rejected (one line)."""
    fid = fidelity or {}
    if metric is not None and metric_drop is not None:
        allowed = budget.drop_for(metric)
        if metric_drop > allowed + 1e-9:
            return f"{metric} drops {metric_drop:.2f} > budget {allowed:g}"
    else:
        top1 = fid.get("top1_agreement")
        floor = budget.top1_floor()
        if top1 is not None and top1 < floor - 1e-12:
            return f"top-1 agreement {top1:.4f} < {floor:g}"
        cos = fid.get("cosine")
        if cos is not None and cos < budget.min_cosine:
            return f"cosine {cos:.4f} < {budget.min_cosine:g}"
    sqnr = fid.get("sqnr_db")
    if budget.min_sqnr_db is not None and sqnr is not None and sqnr < budget.min_sqnr_db:
        return f"SQNR {sqnr:.1f} dB < {budget.min_sqnr_db:g} dB"
    return None
