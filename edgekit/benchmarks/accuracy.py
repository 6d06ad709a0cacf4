"""Task metrics against labels, and fidelity of a compressed model to its fp32 baseline.

Conventions for model outputs (the first output of the model):
- ``classification``: logits or probabilities ``(N, C)``; metric ``accuracy`` in percent.
- ``binary``: one probability per sample ``(N, 1)`` or ``(N,)``, threshold 0.5; ``accuracy`` in percent.
- ``regression``: ``(N, 1)`` or ``(N,)``; primary metric ``r2`` (higher is better), ``mae`` too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The primary metric of each task, and whether a higher value is better.
PRIMARY = {"classification": "accuracy", "binary": "accuracy", "regression": "r2"}
HIGHER_IS_BETTER = {"accuracy": True, "r2": True, "mae": False}


def predictions(task: str, outputs: np.ndarray) -> np.ndarray:
    """Discrete predictions for classification tasks (class index per sample)."""
    out = np.asarray(outputs)
    if task == "binary":
        return (out.reshape(len(out), -1)[:, 0] > 0.5).astype(np.int64)
    return out.reshape(len(out), -1).argmax(axis=1)


def task_metrics(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of ``task``; the primary one is ``PRIMARY[task]``."""
    out = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(labels)
    if task in ("classification", "binary"):
        pred = predictions(task, out)
        return {"accuracy": float(100.0 * np.mean(pred == y.reshape(-1)))}
    if task == "regression":
        pred = out.reshape(len(out), -1)[:, 0]
        target = y.reshape(-1).astype(np.float64)
        ss_res = float(np.sum((target - pred) ** 2))
        ss_tot = float(np.sum((target - target.mean()) ** 2)) or 1e-12
        return {"r2": 1.0 - ss_res / ss_tot, "mae": float(np.mean(np.abs(target - pred)))}
    return {}


def primary_metric(task: str, outputs: np.ndarray, labels: np.ndarray) -> tuple[str, float] | None:
    name = PRIMARY.get(task)
    if name is None:
        return None
    return name, task_metrics(task, outputs, labels)[name]


def metric_drop(name: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline``, in the metric's units (positive = worse)."""
    return (baseline - value) if HIGHER_IS_BETTER.get(name, True) else (value - baseline)


@dataclass(frozen=True)
class Fidelity:
    """How closely a variant's outputs follow the fp32 baseline's on the same inputs."""

    top1_agreement: float | None  # fraction of samples with the same predicted class (classification)
    cosine: float  # mean per-sample cosine similarity of the output vectors
    sqnr_db: float  # 10·log10(‖ref‖² / ‖ref − out‖²) over all outputs; inf when identical
    max_abs_err: float

    def as_dict(self) -> dict[str, float | None]:
        d = asdict(self)
        if np.isinf(self.sqnr_db):
            d["sqnr_db"] = 999.0  # JSON has no infinity; 999 dB means bit-identical
        return d


def fidelity(task: str, reference: np.ndarray, outputs: np.ndarray) -> Fidelity:
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: baseline {ref.shape}, variant {out.shape}")
    err = ref - out
    noise = float(np.sum(err**2))
    signal = float(np.sum(ref**2))
    sqnr = float("inf") if noise == 0.0 else 10.0 * np.log10(max(signal, 1e-300) / noise)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(err == 0, axis=1), 1.0, 0.0))
    top1 = None
    if task in ("classification", "binary") or (task == "unknown" and ref.shape[1] > 1):
        t = task if task != "unknown" else "classification"
        top1 = float(np.mean(predictions(t, ref) == predictions(t, out)))
    return Fidelity(
        top1_agreement=top1,
        cosine=float(np.mean(cos)),
        sqnr_db=sqnr,
        max_abs_err=float(np.max(np.abs(err))) if err.size else 0.0,
    )
