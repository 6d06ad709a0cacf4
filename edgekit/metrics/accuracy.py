"""Classification accuracy in percent: class scores ``(N, C)`` by argmax, one probability per
sample ``(N, 1)`` or ``(N,)`` by the 0.5 threshold."""

from __future__ import annotations

import numpy as np

from edgekit.metrics.base import Metric, Scoring, register


def predictions(task: str, outputs: np.ndarray) -> np.ndarray:
    """The predicted class per sample: probability > 0.5 of the first column for ``binary``,
    argmax of the scores otherwise."""
    out = np.asarray(outputs)
    if task == "binary":
        return (out.reshape(len(out), -1)[:, 0] > 0.5).astype(np.int64)
    return out.reshape(len(out), -1).argmax(axis=1)


def accuracy(s: Scoring) -> float:
    pred = predictions(s.task, np.asarray(s.outputs.values, dtype=np.float64))
    return float(100.0 * np.mean(pred == np.asarray(s.labels).reshape(-1)))


ACCURACY = register(Metric("accuracy", accuracy, higher_is_better=True, default_budget=1.0, unit="%"))
