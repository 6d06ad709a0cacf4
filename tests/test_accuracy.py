from __future__ import annotations

import numpy as np
import pytest

from edgekit.benchmarks.accuracy import fidelity, metric_drop, primary_metric, task_metrics
from edgekit.benchmarks.gate import Budget, judge
from edgekit.errors import BadInputError


def test_classification_accuracy_in_percent() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [0.0, 1.0]])
    assert task_metrics("classification", logits, np.array([0, 1, 1, 1])) == {"accuracy": 75.0}


def test_binary_threshold_and_regression_r2() -> None:
    assert primary_metric("binary", np.array([[0.9], [0.2], [0.6]]), np.array([1, 0, 0])) == (
        "accuracy",
        pytest.approx(66.666, abs=1e-2),
    )
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = task_metrics("regression", y.reshape(-1, 1), y)
    assert m["r2"] == pytest.approx(1.0) and m["mae"] == 0.0
    assert task_metrics("regression", np.full((4, 1), 2.5), y)["r2"] == pytest.approx(0.0)


def test_metric_drop_sign() -> None:
    assert metric_drop("accuracy", 98.0, 97.0) == pytest.approx(1.0)
    assert metric_drop("mae", 2.0, 3.0) == pytest.approx(1.0)


def test_fidelity_identical_and_noisy() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 10))
    same = fidelity("classification", ref, ref.copy())
    assert same.top1_agreement == 1.0 and same.cosine == pytest.approx(1.0) and np.isinf(same.sqnr_db)
    assert same.as_dict()["sqnr_db"] == 999.0
    noisy = fidelity("classification", ref, ref + 0.1 * rng.standard_normal(ref.shape))
    assert 15 < noisy.sqnr_db < 25  # signal power 1, noise power 0.01 → 20 dB
    assert noisy.top1_agreement < 1.0 and noisy.max_abs_err > 0.1


def test_gate_with_labels_uses_metric_drop() -> None:
    b = Budget()
    assert judge(b, metric="accuracy", metric_drop=0.5, fidelity={}) is None
    assert "drops 1.50 > budget 1" in judge(b, metric="accuracy", metric_drop=1.5, fidelity={})
    assert judge(Budget(max_drop=0.01), metric="r2", metric_drop=0.02, fidelity={}) is not None


def test_gate_without_labels_uses_fidelity() -> None:
    b = Budget()
    assert judge(b, metric=None, metric_drop=None, fidelity={"top1_agreement": 0.995, "cosine": 0.999}) is None
    assert "top-1 agreement" in judge(b, metric=None, metric_drop=None, fidelity={"top1_agreement": 0.9, "cosine": 1.0})
    assert "cosine" in judge(b, metric=None, metric_drop=None, fidelity={"top1_agreement": None, "cosine": 0.5})
    strict = Budget(min_top1_agreement=1.0, min_sqnr_db=80)
    assert "SQNR" in judge(
        strict, metric=None, metric_drop=None, fidelity={"top1_agreement": 1.0, "cosine": 1.0, "sqnr_db": 40}
    )


def test_budget_validation() -> None:
    with pytest.raises(BadInputError):
        Budget(max_drop=-1)
