"""Coefficient of determination of a regression output ``(N, 1)`` or ``(N,)``."""

from __future__ import annotations

import numpy as np

from edgekit.metrics.base import Metric, Scoring, register


def r2(s: Scoring) -> float:
    pred = np.asarray(s.outputs.values, dtype=np.float64).reshape(len(s.outputs), -1)[:, 0]
    target = np.asarray(s.labels).reshape(-1).astype(np.float64)
    ss_res = float(np.sum((target - pred) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2)) or 1e-12
    return 1.0 - ss_res / ss_tot


R2 = register(Metric("r2", r2, higher_is_better=True, default_budget=0.01))
