"""Mean absolute error of a regression output ``(N, 1)`` or ``(N,)``, in the target's units."""

from __future__ import annotations

import numpy as np

from edgekit.metrics.base import Metric, Scoring, register


def mae(s: Scoring) -> float:
    pred = np.asarray(s.outputs.values, dtype=np.float64).reshape(len(s.outputs), -1)[:, 0]
    target = np.asarray(s.labels).reshape(-1).astype(np.float64)
    return float(np.mean(np.abs(target - pred)))


MAE = register(Metric("mae", mae, higher_is_better=False))
