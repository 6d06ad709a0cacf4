"""Nearest-centroid accuracy (percent) of pooled embeddings against class centroids of the fp32
embeddings of the same evaluation set.

Leave-one-out: each sample's own fp32 embedding is removed from its class centroid, so no sample
is scored against itself. Fixed fp32 centroids measure whether a variant still places samples
where the fp32 geometry expects them; the calibration split is not used because it may be
unlabelled.
"""

from __future__ import annotations

import numpy as np

from edgekit.metrics.base import Metric, Scoring, register
from edgekit.metrics.outputs import pooled


def centroid_accuracy(s: Scoring) -> float | None:
    y = np.asarray(s.labels).reshape(-1)
    if s.reference is None or not np.issubdtype(y.dtype, np.integer) or len(np.unique(y)) < 2:
        return None
    r, o = pooled(s.reference), pooled(s.outputs)
    classes = np.unique(y)
    sums = np.stack([r[y == c].sum(axis=0) for c in classes])
    counts = np.array([np.sum(y == c) for c in classes], dtype=np.float64)
    own = np.searchsorted(classes, y)
    scores = np.empty((len(y), len(classes)))
    for k in range(len(classes)):
        cent = np.repeat(sums[k][None], len(y), axis=0)
        n = np.full(len(y), counts[k])
        mine = own == k
        cent[mine] -= r[mine]
        n[mine] -= 1
        cent /= np.maximum(n, 1.0)[:, None]
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        scores[:, k] = np.where(n > 0, np.sum(o * cent, axis=1), -np.inf)
    return float(100.0 * np.mean(classes[scores.argmax(axis=1)] == y))


CENTROID_ACCURACY = register(
    Metric("centroid_accuracy", centroid_accuracy, higher_is_better=True, default_budget=1.0, unit="%")
)
