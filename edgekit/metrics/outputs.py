"""A model's output on an evaluation set, with its real (unpadded) positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outputs:
    """A model's first output on every evaluation sample, in the data's order.

    ``values`` holds ``(N, ...)``; for outputs with positions (``(N, T, ...)``) it is padded with
    zeros to the longest sample and ``valid`` (``(N, T)`` bool) says which positions are real.
    ``valid`` is None when every position counts.
    """

    values: np.ndarray
    valid: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def has_positions(self) -> bool:
        return self.values.ndim >= 3

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(P, C)`` rows of every real position and the sample index of each (for ``(N, T, C…)``)."""
        v = self.values.reshape(len(self), self.values.shape[1], -1)
        valid = self.valid if self.valid is not None else np.ones(v.shape[:2], dtype=bool)
        return v[valid], np.nonzero(valid)[0]

    def samples(self) -> list[np.ndarray]:
        """One array per sample with only its real positions (ragged along axis 0 of each)."""
        if self.valid is None:
            return list(self.values)
        return [self.values[i][self.valid[i]] for i in range(len(self))]

    def real_values(self) -> np.ndarray:
        """Every real output value, flattened (padded positions left out)."""
        if self.valid is None:
            return self.values.reshape(-1)
        return self.values[self.valid].reshape(-1)


def as_outputs(values: np.ndarray | Outputs) -> Outputs:
    return values if isinstance(values, Outputs) else Outputs(np.asarray(values))


def pooled(out: Outputs) -> np.ndarray:
    """Mask-aware mean over real positions for token states ``(N, T, D)``, then L2-normalised;
    ``(N, D)`` outputs are only normalised."""
    v = out.values.astype(np.float64)
    if v.ndim >= 3:
        v = v.reshape(len(v), v.shape[1], -1)
        valid = out.valid if out.valid is not None else np.ones(v.shape[:2], dtype=bool)
        w = valid[..., None].astype(np.float64)
        v = (v * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    else:
        v = v.reshape(len(v), -1)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)
