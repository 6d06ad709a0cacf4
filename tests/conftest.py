"""Shared fixtures. Tests run torch with one thread: these machines are shared and small."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(name)`` → (TrainResult, saved TorchScript path): each reference model is trained
    once per test session (seed 0, one thread) and shared by every test that needs it."""
    from edgekit import zoo

    cache: dict[str, tuple[object, object]] = {}
    root = tmp_path_factory.mktemp("reference-models")

    def get(name: str):
        if name not in cache:
            result = zoo.train(name, seed=0, threads=1)
            path = root / f"{name}.pt"
            zoo.save(result, path)
            cache[name] = (result, path)
        return cache[name]

    return get


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the size of the trust fault matrix (tests/test_trust.py) when it ran."""
    rows = getattr(terminalreporter.config, "_trust_matrix_rows", None)
    if rows:
        terminalreporter.write_line(rows)
