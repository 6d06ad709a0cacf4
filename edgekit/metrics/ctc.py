"""Greedy CTC decoding and the edit distance the sequence metrics are built on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ctc_collapse(ids: np.ndarray, blank: int) -> list[int]:
    """Greedy CTC: merge repeats, drop blanks."""
    seq = np.asarray(ids).reshape(-1)
    if seq.size == 0:
        return []
    keep = np.concatenate([[True], seq[1:] != seq[:-1]]) & (seq != blank)
    return [int(t) for t in seq[keep]]


def decode_all(ids: np.ndarray, owner: np.ndarray, n: int, blank: int) -> list[list[int]]:
    """Greedy CTC of the best class ``ids`` of every real position, grouped into ``n`` samples by
    ``owner`` (the sample index of each position, ascending)."""
    bounds = np.searchsorted(owner, np.arange(n + 1))
    return [ctc_collapse(ids[bounds[i] : bounds[i + 1]], blank) for i in range(n)]


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two label sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def label_rows(labels: np.ndarray) -> list[list[int]]:
    """The label sequences of ``(N, L)`` labels padded with -1."""
    return [[int(t) for t in row if t >= 0] for row in np.asarray(labels)]
