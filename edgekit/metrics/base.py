"""A metric: a name, how it is computed, which way is better, and its default budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekit.metrics.outputs import Outputs


@dataclass(frozen=True)
class Scoring:
    """What a metric is computed from: the model's outputs on the evaluation set, its labels and
    the task.

    ``reference`` is the fp32 model's output on the same samples (metrics that measure a variant
    against the fp32 geometry use it); ``blank`` is the CTC blank class when the output is read by
    CTC decoding, None otherwise.
    """

    outputs: Outputs
    labels: np.ndarray
    task: str = "classification"  # classification | binary | regression | embedding | sequence
    reference: Outputs | None = None
    blank: int | None = None


@dataclass(frozen=True)
class Metric:
    """A task metric. ``fn`` returns its value, or None when it does not apply to these outputs
    and labels. ``default_budget`` is the drop the gate allows without ``--max-drop``, in the
    metric's units (None: the gate's general default)."""

    name: str
    fn: Callable[[Scoring], float | None]
    higher_is_better: bool
    default_budget: float | None = None
    unit: str = ""

    def __call__(self, scoring: Scoring) -> float | None:
        return self.fn(scoring)


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the registry (each metric module calls this once)."""
    if metric.name in _REGISTRY:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    _REGISTRY[metric.name] = metric
    return metric
