"""The metric registry: every task metric is one registered module, and a new one is one more."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import metrics
from edgekit.benchmarks.gate import DEFAULT_MAX_DROP
from edgekit.metrics import Metric, Outputs, Scoring, compute, metric_drop, register, task_metrics
from edgekit.metrics.base import _REGISTRY


def test_each_module_registers_its_metric() -> None:
    assert set(metrics.names()) == set(metrics.MODULES)
    for task, names in metrics.TASKS.items():
        assert all(n in metrics.names() for n in names), task
    assert not metrics.get("cer").higher_is_better and metrics.get("r2").higher_is_better


def test_default_budgets_are_the_gates() -> None:
    assert DEFAULT_MAX_DROP == {"accuracy": 1.0, "r2": 0.01, "sequence_accuracy": 1.0, "centroid_accuracy": 1.0}


def test_task_metrics_on_known_outputs() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert task_metrics("classification", scores, np.array([1, 0, 0, 0])) == {"accuracy": 75.0}
    assert task_metrics("binary", scores[:, :1], np.array([0, 1, 0, 1])) == {"accuracy": 100.0}
    reg = task_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert list(reg) == ["r2", "mae"]
    assert reg["r2"] == pytest.approx(1 - 1 / (14 / 3)) and reg["mae"] == pytest.approx(1 / 3)
    assert task_metrics("embedding", scores, np.array([0, 1, 0, 1])) == {}


def test_sequence_metrics_need_ctc_decoding() -> None:
    # two samples, 4 positions, 3 classes (blank 0): reads [1, 2] and [2]
    ids = np.array([[1, 1, 0, 2], [0, 2, 2, 0]])
    out = Outputs(np.eye(3)[ids])
    labels = np.array([[1, 2], [1, -1]])
    assert compute(("sequence_accuracy", "cer"), Scoring(out, labels, "sequence", blank=0)) == {
        "sequence_accuracy": 50.0,
        "cer": pytest.approx(1 / 3),
    }
    assert compute(("sequence_accuracy", "cer"), Scoring(out, labels, "sequence")) == {}


def test_a_new_metric_is_one_registration() -> None:
    def within_one(s: Scoring) -> float:
        return float(np.mean(np.abs(s.outputs.values.reshape(-1) - s.labels) <= 1.0))

    metric = register(Metric("within_one", within_one, higher_is_better=True, default_budget=0.05))
    try:
        got = compute(("within_one",), Scoring(Outputs(np.array([1.0, 5.0])), np.array([1.5, 2.0]), "regression"))
        assert got == {"within_one": 0.5}
        assert metrics.default_budgets()["within_one"] == 0.05
        assert metric_drop("within_one", 0.9, 0.8) == pytest.approx(0.1)
        with pytest.raises(ValueError, match="registered twice"):
            register(metric)
    finally:
        del _REGISTRY["within_one"]
