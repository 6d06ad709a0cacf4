"""The option groups of compress and bench as typed values, checked before any work."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError

Progress = Callable[[str], None]
SHAPES_HINT = "NAME:MIN/OPT/MAX (e.g. x:1x3x48x64/1x3x48x320/1x3x48x960)"


def quiet(_msg: str) -> None:
    return None


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model file (``--arch``, ``--trust-pickle``, ``--input-shape``)."""

    arch: str | None = None
    trust_pickle: bool = False
    input_shape: str | None = None


@dataclass(frozen=True)
class DataOptions:
    """Which data calibrates and evaluates (``--data``, ``--calib``, ``--calib-data``) and the
    shapes of dynamic inputs (``--shapes``)."""

    data: str | Path | None = None
    calib: str = "data"
    calib_data: str | Path | None = None
    shapes: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class OutputOptions:
    """How fidelity is measured: ``--output-kind``, ``--decode``, ``--blank``, ``--metric``."""

    kind: str | None = None
    decode: str | None = None
    blank: int | None = None
    metric: str | None = None

    def check(self) -> None:
        """Fail early, before any work, on a bad --output-kind, --decode or --metric."""
        from edgekit.benchmarks.accuracy import DECODERS, KIND_NAMES, load_metric

        if self.kind is not None and self.kind not in KIND_NAMES:
            raise BadInputError(f"--output-kind must be one of {', '.join(KIND_NAMES)} (got {self.kind!r})")
        if self.decode is not None and self.decode not in DECODERS:
            raise BadInputError(f"--decode must be one of {', '.join(DECODERS)} (got {self.decode!r})")
        if self.metric is not None:
            load_metric(self.metric)

    def resolve(self, detected: Any) -> Any:
        """The output spec: what was detected (or recorded), with these overrides."""
        from edgekit.benchmarks.accuracy import resolve

        return resolve(detected, kind=self.kind, decode=self.decode, blank=self.blank, metric=self.metric)

    def from_bundle(self, model: dict[str, Any]) -> Any:
        """The output spec compress recorded in the manifest, with these overrides; None for a
        bundle made before output kinds (then it is detected again)."""
        from edgekit.benchmarks.accuracy import OutputSpec

        if not model.get("output_kind") and not self.kind:
            return None
        recorded = OutputSpec(
            kind=model.get("output_kind") or self.kind or "raw",
            decode=model.get("decode"),
            blank=int(model.get("blank") or 0),
            source="bundle manifest",
        )
        return self.resolve(recorded)


@dataclass(frozen=True)
class MeasureOptions:
    """How variants are timed: batch sizes, seconds per variant and batch, threads, memory."""

    batches: Sequence[int] = (1,)
    time_budget_s: float = 1.0
    threads: int | None = None
    with_memory: bool = True

    def resolved_threads(self) -> tuple[int, str]:
        return threads(self.threads)


def threads(value: int | None) -> tuple[int, str]:
    """``value`` or the default (``EDGEKIT_THREADS``/``OMP_NUM_THREADS``, else physical cores)."""
    from edgekit.benchmarks.latency import default_threads

    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"--threads must be a positive whole number (got {value!r})")
        return value, "--threads"
    return default_threads()


def threads_info(threads: int, source: str) -> dict[str, Any]:
    """What the report says of threads: the physical cores, where the count came from, and the
    counts every variant was timed at (each row's ``threads`` is its fastest)."""
    from edgekit.benchmarks.latency import physical_cores, thread_choices

    tried = list(thread_choices(threads, source))
    return {"physical_cores": physical_cores(), "threads_source": source, "threads_tried": tried}
