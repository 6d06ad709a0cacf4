"""Task metrics: one module per metric, each registering a :class:`Metric`.

A new metric is one module here that calls :func:`~edgekit.metrics.base.register`, plus its name
in :data:`MODULES` (and in :data:`TASKS` if a task reports it). The primary metric of a task is
the first of its entry in :data:`TASKS`: it decides the gate when there are labels.
"""

from __future__ import annotations

import importlib

import numpy as np

from edgekit.metrics.base import _REGISTRY, Metric, Scoring, register
from edgekit.metrics.outputs import Outputs, as_outputs, pooled

MODULES = ("accuracy", "r2", "mae", "sequence_accuracy", "cer", "centroid_accuracy")
for _module in MODULES:
    importlib.import_module(f"edgekit.metrics.{_module}")

# The metrics of each task, the primary one first. Embeddings and sequences are scored through
# their output kind (edgekit.benchmarks.accuracy.KINDS), which knows the decoding and the fp32
# reference they need.
TASKS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "binary": ("accuracy",),
    "regression": ("r2", "mae"),
}


def get(name: str) -> Metric:
    """The registered metric ``name``."""
    from edgekit.errors import BadInputError

    try:
        return _REGISTRY[name]
    except KeyError:
        raise BadInputError(f"unknown metric {name!r}; choose one of: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def higher_is_better(name: str) -> bool:
    """Whether a higher value of metric ``name`` is better (unknown names: True)."""
    metric = _REGISTRY.get(name)
    return True if metric is None else metric.higher_is_better


def compute(metrics: tuple[str, ...], scoring: Scoring) -> dict[str, float]:
    """The values of ``metrics`` that apply to ``scoring``, by name."""
    values = {name: _REGISTRY[name](scoring) for name in metrics}
    return {name: float(v) for name, v in values.items() if v is not None}


def task_metrics(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of ``task`` (none for a task without any); the primary one is ``TASKS[task][0]``."""
    return compute(TASKS.get(task, ()), Scoring(Outputs(np.asarray(outputs)), np.asarray(labels), task))


def primary_metric(task: str, outputs: np.ndarray, labels: np.ndarray) -> tuple[str, float] | None:
    """The name and value of ``task``'s primary metric, or None for a task without metrics."""
    if task not in TASKS:
        return None
    name = TASKS[task][0]
    return name, task_metrics(task, outputs, labels)[name]


def default_budgets() -> dict[str, float]:
    """The drop the gate allows per metric without ``--max-drop`` (metrics that declare one)."""
    return {name: m.default_budget for name, m in _REGISTRY.items() if m.default_budget is not None}


def metric_drop(name: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline``, in the metric's units (positive = worse)."""
    return (baseline - value) if higher_is_better(name) else (value - baseline)


__all__ = [
    "MODULES",
    "TASKS",
    "Metric",
    "Outputs",
    "Scoring",
    "as_outputs",
    "compute",
    "default_budgets",
    "get",
    "higher_is_better",
    "metric_drop",
    "names",
    "pooled",
    "primary_metric",
    "register",
    "task_metrics",
]
