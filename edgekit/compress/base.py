"""The technique contract: a frozen config dataclass plus a handler registered for its type.

Two stages exist. *Model* techniques (pruning, distillation, QAT) turn a torch module into another
torch module before export. *Graph* techniques (quantization, FP16) turn the exported fp32 ONNX
into one or more deployable :class:`Variant` files for a runtime. Handlers never import a runtime:
what they need from the runtimes comes in :attr:`Context.backends`
(:class:`~edgekit.compress.backend.Backends`), which the API layer builds from the runtime table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgekit.artifact import Artifact
from edgekit.compress.backend import Backends
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

Stage = Literal["model", "graph"]


Variant = Artifact  # what a graph technique makes: one artifact type from technique to manifest


@dataclass
class Context:
    """What a technique may use: data splits, a scratch directory, the seed and a log."""

    workdir: Path
    calib: Dataset
    eval: Dataset
    train: Dataset | None = None  # labelled training data, for fine-tuning (reference models, or --data with y)
    seed: int = 0
    task: str = "unknown"
    baseline: Path | None = None  # the source model's fp32 ONNX, which the final gate compares against
    threads: int = 1  # the threads the final measurement uses
    budget: Any = None  # edgekit.benchmarks.gate.Budget when the user set one (--max-drop …): techniques may
    # use it to search for a variant within budget (e.g. keep sensitive layers in float)
    output: Any = None  # edgekit.benchmarks.accuracy.OutputSpec: how the output is used (the gate's yardstick)
    records: dict[str, Any] = field(default_factory=dict)  # technique → measured facts for the report
    backends: Backends | None = None  # what graph techniques need from the runtimes (edgekit.benchmarks.backends)
    progress: Callable[[str], None] = lambda _msg: None


C = TypeVar("C")
_HANDLERS: dict[type, tuple[Stage, Callable[..., Any]]] = {}


def register(config_type: type, stage: Stage) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register(PruneConfig, "model")`` over ``def _prune(config, module, ctx) -> module``;
    ``@register(Int8Config, "graph")`` over ``def _int8(config, onnx_path, ctx) -> list[Variant]``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLERS[config_type] = (stage, fn)
        return fn

    return deco


def handler_for(config: object) -> tuple[Stage, Callable[..., Any]]:
    try:
        return _HANDLERS[type(config)]
    except KeyError:
        known = ", ".join(sorted(t.__name__ for t in _HANDLERS)) or "none registered yet"
        raise BadInputError(f"no technique handles {type(config).__name__}; known: {known}") from None
