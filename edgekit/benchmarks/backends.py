"""The runtime backends the techniques receive in their context, built from the runtime table.

Techniques never import a runtime: what they need — each runtime's backend, a way to load a
model file into a runtime, and a judge that measures a variant the way the final gate does — is
built here, above both layers, and handed over in :attr:`edgekit.compress.base.Context.backends`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.benchmarks.gate import Budget
from edgekit.compress.backend import Backends
from edgekit.io.data import Dataset
from edgekit.runtimes.table import ONNXRUNTIME

REFERENCE_RUNTIME = ONNXRUNTIME.name  # runs the fp32 ONNX every variant is compared with


class Evaluator:
    """Measures variants like the final gate does: on the held-out data, against the fp32
    model's outputs (in the reference runtime), with the task metric when there are labels."""

    def __init__(
        self, fp32_onnx: Path, data: Dataset, budget: Budget, threads: int = 1, output: Any = None
    ) -> None:
        from edgekit.benchmarks.harness import OutputJudge, detect_output, run_outputs

        self.data, self.threads = data, threads
        rt = load(REFERENCE_RUNTIME, fp32_onnx, threads)
        reference = run_outputs(rt, data)
        self.judge = OutputJudge(output or detect_output(rt, data, reference), reference, data, budget)
        self.metric_name = self.judge.metric_name

    def __call__(self, path: Path, runtime: str) -> Any:
        from edgekit.benchmarks.harness import run_outputs

        return self.judge(run_outputs(load(runtime, path, self.threads), self.data))


def load(runtime: str, path: Path, threads: int) -> Any:
    """``runtime`` (a table name or alias) with the model file ``path`` loaded."""
    from edgekit.runtimes import get_runtime

    return get_runtime(runtime, threads=threads).load(path)


def for_techniques(runtimes: Any = None) -> Backends:
    """The backends of every runtime compress can target (or of those in ``runtimes``)."""
    from edgekit.runtimes import technique_backends

    return Backends(technique_backends(runtimes), load=load, judge=Evaluator, reference=REFERENCE_RUNTIME)
