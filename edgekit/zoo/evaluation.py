"""How the reference models are measured on their held-out split.

Classifiers and the regressor by their task metrics (:mod:`edgekit.metrics`); the text encoder by
nearest-centroid accuracy with centroids from its training split; the text recogniser by exact
sequences (a fraction) and character error rate after greedy CTC decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.metrics import task_metrics
from edgekit.metrics.ctc import ctc_collapse, edit_distance, label_rows
from edgekit.training import predict


def evaluate(
    module: Callable[..., Any], data: Dataset, train: Dataset | None = None
) -> dict[str, float]:
    """Task metrics of ``module`` on ``data`` (:func:`edgekit.benchmarks.accuracy.task_metrics`).

    ``embedding``: nearest-centroid accuracy (percent) of the labelled families, centroids from
    ``train``; ``sequence``: exact-match accuracy and character error rate after CTC greedy
    decoding (blank from ``data.meta['blank']``, valid positions from ``data.lengths``).
    """
    if data.labels is None:
        raise BadInputError(f"data set {data.name!r} has no labels; evaluation needs a 'y' array")
    if data.task == "embedding":
        if train is None or train.labels is None:
            raise BadInputError("embedding evaluation needs a labelled training split for the centroids")
        return {
            "centroid_accuracy": centroid_accuracy(
                sentence_embeddings(module, train), train.labels, sentence_embeddings(module, data), data.labels
            )
        }
    if data.task == "sequence":
        return sequence_metrics(
            predict(module, data), data.labels, int(data.meta.get("blank", 0)), _valid_steps(module, data)
        )
    return task_metrics(data.task, predict(module, data), data.labels)


def sentence_embeddings(module: Callable[..., Any], data: Dataset, batch_size: int = 256) -> np.ndarray:
    """Mask-aware mean-pooled, L2-normalised token states of a text encoder, float64 ``(N, D)``."""
    states = predict(module, data, batch_size=batch_size).astype(np.float64)
    mask = data.inputs["attention_mask"].astype(np.float64)[:, :, None]
    pooled = (states * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def centroid_accuracy(
    train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray
) -> float:
    """Percent of ``test_emb`` whose nearest class centroid (cosine; centroids = normalised mean
    of the training embeddings of each class) is their own class."""
    classes = np.unique(train_y)
    centroids = np.stack([train_emb[train_y == c].mean(0) for c in classes])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    pred = classes[np.argmax(test_emb @ centroids.T, axis=1)]
    return float(100.0 * np.mean(pred == np.asarray(test_y)))


def ctc_greedy_decode(
    scores: np.ndarray, blank: int, steps: np.ndarray | None = None
) -> list[list[int]]:
    """Best path of per-position class scores ``(N, T, C)``: argmax, merge repeats, drop blanks.

    ``steps`` (N,) limits each sample to its first valid positions (padding never counts).
    """
    best = np.asarray(scores).argmax(-1)
    return [ctc_collapse(path if steps is None else path[: int(steps[row])], blank) for row, path in enumerate(best)]


def sequence_metrics(
    scores: np.ndarray, labels: np.ndarray, blank: int, steps: np.ndarray | None = None
) -> dict[str, float]:
    """``sequence_accuracy`` (fraction of exact matches after CTC greedy decoding) and ``cer``
    (edit distance over reference characters) against labels ``(N, L)`` padded with -1."""
    decoded = ctc_greedy_decode(scores, blank, steps)
    refs = label_rows(labels)
    exact = sum(d == r for d, r in zip(decoded, refs, strict=True))
    edits = sum(edit_distance(d, r) for d, r in zip(decoded, refs, strict=True))
    chars = max(1, sum(len(r) for r in refs))
    return {"sequence_accuracy": exact / len(refs), "cer": edits / chars}


def _valid_steps(module: Any, data: Dataset) -> np.ndarray | None:
    """Valid output positions per sample of a width-reducing sequence model (None: all)."""
    if not data.lengths:
        return None
    widths = next(iter(data.lengths.values()))
    stride = int(getattr(module, "stride", 1))
    return np.asarray(widths) // stride
