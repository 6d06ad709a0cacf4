"""Character error rate: edit distance after greedy CTC decoding over the number of label
characters."""

from __future__ import annotations

from edgekit.metrics.base import Metric, Scoring, register
from edgekit.metrics.ctc import edit_distance
from edgekit.metrics.sequence_accuracy import read


def cer(s: Scoring) -> float | None:
    texts = read(s)
    if texts is None:
        return None
    decoded, truth = texts
    errors = sum(edit_distance(t, p) for t, p in zip(truth, decoded, strict=True))
    return errors / max(sum(len(t) for t in truth), 1)


CER = register(Metric("cer", cer, higher_is_better=False))
