"""Sequence accuracy: percent of samples read exactly after greedy CTC decoding, against labels
``(N, L)`` padded with -1."""

from __future__ import annotations

import numpy as np

from edgekit.metrics.base import Metric, Scoring, register
from edgekit.metrics.ctc import decode_all, label_rows


def read(s: Scoring) -> tuple[list[list[int]], list[list[int]]] | None:
    """The decoded texts and the label texts, or None when the output is not read by CTC."""
    if s.blank is None or np.asarray(s.labels).ndim != 2:
        return None
    o, owner = s.outputs.positions()
    return decode_all(o.argmax(axis=1), owner, len(s.outputs), s.blank), label_rows(s.labels)


def sequence_accuracy(s: Scoring) -> float | None:
    texts = read(s)
    if texts is None:
        return None
    decoded, truth = texts
    return float(100.0 * np.mean([t == p for t, p in zip(truth, decoded, strict=True)]))


SEQUENCE_ACCURACY = register(
    Metric("sequence_accuracy", sequence_accuracy, higher_is_better=True, default_budget=1.0, unit="%")
)
