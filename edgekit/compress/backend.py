"""What the graph techniques need from the runtimes, handed to them in :class:`Context.backends`.

NNCF style: the technique (:mod:`edgekit.compress.quantize`, :mod:`edgekit.compress.fp16`, the
budget search) holds the logic; each runtime's :class:`RuntimeBackend` holds what differs per
runtime — which function produces its INT8 or FP16 artifact, which layers it can keep in float,
how its artifacts are inspected. Each runtime module defines its backend (``techniques()``) and
the runtime table names it; the API layer builds :class:`Backends` from that table, so techniques
never import a runtime and a new runtime needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.errors import BadInputError

if TYPE_CHECKING:
    from edgekit.compress.base import Variant
    from edgekit.io.data import Dataset

Feeds = list[dict[str, np.ndarray]]


class Int8Settings(Protocol):
    """The INT8 settings a backend reads (:class:`edgekit.compress.quantize.Int8Config` has them):
    backends depend on this, not on the technique."""

    @property
    def per_channel(self) -> bool: ...
    @property
    def calib_method(self) -> str: ...
    @property
    def exclude(self) -> tuple[str, ...]: ...
    @property
    def symmetric_activations(self) -> bool: ...
    @property
    def reduce_range(self) -> bool: ...
    @property
    def smooth_alpha(self) -> float: ...


class Int8Builder(Protocol):
    def __call__(
        self,
        config: Int8Settings,
        onnx_path: Path,
        feeds: Feeds,
        out: Path,
        /,
        *,
        transformer: str | None = None,
        calibration_cache: Path | None = None,
    ) -> Variant:
        """Quantize ``onnx_path`` statically with ``config`` (``config.exclude`` kept in float),
        calibrated on ``feeds``, into ``out``.

        Args:
            transformer: why the transformer scheme applies (None: the default scheme).
            calibration_cache: a file that keeps calibrated ranges across calls (may be ignored).

        Returns:
            The variant, its files written.
        """


class Judge(Protocol):
    """Judges a variant as the final gate does (built by the API layer)."""

    metric_name: str | None

    def __call__(self, path: Path, runtime: str) -> Any:
        """Run the model file ``path`` in ``runtime`` on the held-out data; returns the gate's
        verdict (``reason`` — None when within budget —, ``metric``, ``metric_drop``, ``fidelity``)."""


@dataclass(frozen=True)
class RuntimeBackend:
    """What the techniques need from one runtime. Paths are relative to the technique's workdir."""

    runtime: str  # the runtime table name
    title: str  # for progress lines, e.g. "ONNX Runtime"
    prefix: str  # variant-name prefix, e.g. "ort"
    folder: str = ""  # workdir sub-folder of its files ("" = the workdir itself)
    int8: Int8Builder | None = None  # static INT8
    int8_out: str = ""
    int8_dynamic: Callable[..., Variant] | None = None  # (config, onnx_path, out, *, name=...) → Variant
    int8_dynamic_out: str = ""
    fp16: Callable[[Path, Path], Variant] | None = None  # (onnx_path, out) → Variant
    fp16_out: str = ""
    # The Q/DQ placement that ranks its layers for the accuracy-budget search, and whether the
    # transformer scheme replaces it on transformers.
    placement: str = ""
    follows_transformer: bool = True
    keep_float: Callable[[Path, list[str]], list[str]] | None = None  # ONNX nodes it can keep in float
    # ONNX nodes it quantizes that the Q/DQ placement cannot rank (NNCF's INT8 LSTM): tried first.
    unranked: Callable[[Path], list[str]] | None = None
    summary: Callable[[Path], dict[str, Any]] | None = None  # what a quantized artifact contains
    default_scheme: str | None = None  # the "scheme: …" note of an INT8 variant that has none
    measured_in: str | None = None  # the runtime that executes its artifacts here (None: itself)
    proxy_note: str | None = None  # why figures measured in ``measured_in`` are only a proxy
    device_build: bool = False  # its deployable file is built on the device: no latency here
    on_cpu: bool = True  # it computes on this machine's CPU (CPU INT8/FP16 advice applies)
    int8_extras: Callable[[Path, Path, dict[str, Any], Callable[[str], None]], list[Variant]] | None = None
    # (onnx_path, workdir, record, progress) → further variants an INT8 step offers (e.g. OpenVINO bf16)


@dataclass
class Backends:
    """The runtimes, as the techniques see them."""

    runtimes: Mapping[str, RuntimeBackend]
    load: Callable[[str, Path, int], Any]  # (runtime, model file, threads) → a loaded runtime (.inputs, .run)
    judge: Callable[[Path, Dataset, Any, int, Any], Judge]  # (fp32 ONNX, eval data, budget, threads, output)
    reference: str = field(default="")  # the runtime that runs the fp32 ONNX the gate compares with

    def get(self, runtime: str) -> RuntimeBackend:
        """The backend of ``runtime``; unknown names raise :class:`BadInputError` listing the known."""
        try:
            return self.runtimes[runtime]
        except KeyError:
            known = ", ".join(self.runtimes)
            raise BadInputError(f"runtimes={runtime!r} is not valid; choose one of: {known}") from None

    def names(self) -> list[str]:
        return list(self.runtimes)


def check_runtimes(what: str, runtimes: tuple[str, ...]) -> None:
    """At least one runtime, none twice. Whether each is known is checked against the runtime
    backends the technique receives (the runtime table)."""
    if not runtimes:
        raise BadInputError(f"{what} needs at least one runtime, e.g. runtimes=['onnxruntime']")
    for rt in runtimes:
        if not isinstance(rt, str) or not rt:
            raise BadInputError(f"runtimes must list runtime names (strings), got {rt!r}")
    if len(set(runtimes)) != len(runtimes):
        raise BadInputError(f"runtimes {runtimes} lists a runtime twice")


def need(backends: Backends | None) -> Backends:
    """``backends``, or an error saying the context was built without them."""
    if backends is None:
        raise BadInputError(
            "this technique needs the runtime backends in its context; build it with "
            "Context(..., backends=edgekit.benchmarks.backends.for_techniques())"
        )
    return backends


def graph_step_backends(
    onnx_path: Path, backends: Backends | None, runtimes: Sequence[str], usable: Callable[[RuntimeBackend], bool],
    cannot: str,
) -> tuple[Path, Backends, list[RuntimeBackend]]:  # fmt: skip
    """What a graph technique starts from: the resolved input ONNX (which must exist), the
    backends, and those of ``runtimes``; a runtime whose backend is not ``usable`` is refused
    with "edgekit cannot ``cannot`` for it"."""
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise BadInputError(f"ONNX model {onnx_path} does not exist; export the model first")
    have = need(backends)
    chosen = [have.get(rt) for rt in runtimes]
    for b in chosen:
        if not usable(b):
            raise BadInputError(f"edgekit cannot {cannot} for {b.runtime} (it has no such backend)")
    return onnx_path, have, chosen
