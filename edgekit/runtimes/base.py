"""The runtime contract: load a model file, run named numpy feeds, say what really ran.

Public methods validate and give clear errors; subclasses implement ``_load``, ``_run`` and
``_describe``. A subclass never imports its runtime package at module level: :meth:`Runtime.load`
checks that the package is installed (naming the pip extra) before ``_load`` imports it.
"""

from __future__ import annotations

import importlib.metadata
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from edgekit.errors import BadInputError, EdgekitError, error_line, require

if TYPE_CHECKING:
    from edgekit.runtimes.table import RuntimeInfo

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Layer types whose precision decides how a model really runs (OpenVINO runtime-graph names and
# ONNX op types); reorders, reshapes and constants are left out of the verdict.
COMPUTE_LAYERS = frozenset(
    {
        "Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
        "Conv", "ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
        "QGemm", "MatMulNBits", "FusedConv", "FusedMatMul", "FusedGemm", "DynamicQuantizeMatMul",
        "RNN", "LSTM", "GRU", "ScaledDotProductAttention", "Attention", "MultiHeadAttention",
    }
)
_PRECISION_NAMES = {
    "f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bf16": "bf16",
    "bfloat16": "bf16", "i8": "int8", "u8": "int8", "int8": "int8", "uint8": "int8",
}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: ``shape`` holds an int per static axis and a name (or ``None``)
    per dynamic one; ``dtype`` is a numpy dtype name such as ``"float32"`` or ``"int64"``."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class BoundCall(NamedTuple):
    """One inference over one feed whose inputs were bound to the runtime beforehand, split the way
    the runtimes' own benchmark tools time it: ``prepare()`` makes this feed the current input (no
    copy; not timed), ``infer()`` is the inference alone (timed), ``read()`` returns the outputs of
    the last ``infer()`` as arrays the caller owns (not timed). ``elapsed_ns``, when the runtime
    times its own requests (OpenVINO's ``InferRequest.latency``, the clock ``benchmark_app``
    reports), gives the duration of the last ``infer()`` by that clock."""

    prepare: Callable[[], object]
    infer: Callable[[], object]
    read: Callable[[], list[np.ndarray]]
    elapsed_ns: Callable[[], float] | None = None


class Runtime(ABC):
    """One inference engine behind one interface.

    ``rt = get_runtime("onnxruntime", threads=1).load("model.onnx")`` then
    ``outputs = rt.run({"x": batch})`` (a list of arrays in the order of ``rt.outputs``).
    """

    name: ClassVar[str]  # its row in edgekit.runtimes.table, which holds its package and file suffixes

    @classmethod
    def info(cls) -> RuntimeInfo:
        """This runtime's row of the runtime table (package, pip extra, file suffixes, …); a
        subclass that is not in the table has its parent's row."""
        from edgekit.runtimes.table import find, get

        for klass in cls.__mro__:
            row = find(str(klass.__dict__.get("name", "")))
            if row is not None:
                return row
        return get(cls.name)  # raises, naming the known runtimes

    @property
    def package(self) -> str:
        return self.info().package

    @property
    def module(self) -> str:
        return self.info().module

    @property
    def extra(self) -> str | None:
        return self.info().extra

    @property
    def suffixes(self) -> tuple[str, ...]:
        return self.info().suffixes

    def __init__(self, threads: int = 1, precision_hint: str | None = None) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BadInputError(f"threads must be a positive integer, got {threads!r}")
        if precision_hint is not None and precision_hint not in PRECISIONS:
            raise BadInputError(
                f"unknown precision hint {precision_hint!r}; choose one of {', '.join(PRECISIONS)}"
            )
        self.threads = threads
        self.precision_hint = precision_hint
        self.path: Path | None = None
        self._inputs: list[TensorSpec] | None = None
        self._outputs: list[TensorSpec] | None = None

    # ----------------------------------------------------------------- public, validating
    def load(self, path: str | Path) -> Runtime:
        """Load a model file; returns ``self`` so calls chain. Raises :class:`BadInputError` for a
        missing or unsupported file and :class:`MissingDependencyError` for a missing package."""
        p = Path(path)
        if not p.exists():
            raise BadInputError(f"model file {p} does not exist; check the path")
        if not p.is_file():
            raise BadInputError(f"{p} is a directory; pass the {self._kinds()} model file itself")
        if p.suffix.lower() not in self.suffixes:
            raise BadInputError(
                f"{self.name} cannot load {p.name}: expected a {self._kinds()} file"
            )
        require(self.module, package=self.package, extra=self.extra)
        try:
            inputs, outputs = self._load(p)
        except BadInputError:
            raise
        except Exception as exc:  # the runtime's own parser rejected the file
            first = error_line(exc)
            raise BadInputError(
                f"{self.name} could not load {p}: {first}; "
                f"check that it is a valid {self._kinds()} model"
            ) from exc
        self.path, self._inputs, self._outputs = p, list(inputs), list(outputs)
        return self

    @property
    def loaded(self) -> bool:
        return self._inputs is not None

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs, in the order the model declares them."""
        if self._inputs is None:
            raise BadInputError(f"the {self.name} runtime has no model yet; call load(path) first")
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs, in the order :meth:`run` returns them."""
        if self._outputs is None:
            raise BadInputError(f"the {self.name} runtime has no model yet; call load(path) first")
        return list(self._outputs)

    def validate(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check names, dtypes, ranks and static dimensions of ``feed`` against :attr:`inputs`.

        Returns the feed keyed in the model's input order. Nothing is cast: a float64 array for a
        float32 input is an error, not a silent copy.
        """
        specs = self.inputs
        if not isinstance(feed, Mapping):
            raise BadInputError(
                f"a feed is a dict of input name → numpy array, got {type(feed).__name__}"
            )
        expected = [s.name for s in specs]
        missing = [n for n in expected if n not in feed]
        unknown = [n for n in feed if n not in expected]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise BadInputError(
                f"feed names do not match the model ({', '.join(parts)}); "
                f"the model's inputs are {expected}"
            )
        ordered: dict[str, np.ndarray] = {}
        for spec in specs:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray):
                raise BadInputError(
                    f"input {spec.name!r} must be a numpy array, got {type(arr).__name__}"
                )
            if arr.dtype.name != spec.dtype:
                raise BadInputError(
                    f"input {spec.name!r} has dtype {arr.dtype.name} "
                    f"but the model expects {spec.dtype}; "
                    f"convert it first (array.astype('{spec.dtype}'))"
                )
            if arr.ndim != spec.rank:
                raise BadInputError(
                    f"input {spec.name!r} has shape {tuple(arr.shape)} (rank {arr.ndim}) "
                    f"but the model expects rank {spec.rank} {_shape_text(spec.shape)}"
                )
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
                if isinstance(want, int) and want >= 0 and got != want:
                    raise BadInputError(
                        f"input {spec.name!r} has shape {tuple(arr.shape)} but the model expects "
                        f"{_shape_text(spec.shape)} (axis {axis} must be {want})"
                    )
            ordered[spec.name] = arr
        return ordered

    def run(self, feed: Mapping[str, np.ndarray], *, validate: bool = True) -> list[np.ndarray]:
        """Run one inference; returns one array per output, in the order of :attr:`outputs`.

        ``validate=False`` skips the checks for a feed already passed through :meth:`validate`
        (the latency loop does this so it times the runtime, not the checks).
        """
        if validate:
            checked = self.validate(feed)
        else:
            checked = feed if isinstance(feed, dict) else dict(feed)
        outputs = self._run(checked)
        declared = len(self._outputs or ())
        if len(outputs) != declared:
            raise EdgekitError(
                f"{self.name} returned {len(outputs)} outputs but the model declares {declared}"
            )
        return outputs

    def bind_for_timing(self, feed: Mapping[str, np.ndarray]) -> BoundCall:
        """``feed`` (already passed through :meth:`validate`) bound once for the latency loop.

        This default times :meth:`run` whole (output conversion included); runtimes override it to
        bind inputs without copying and leave output conversion out of ``infer``. Outputs read
        through the bound call equal :meth:`run`'s on the same feed."""
        checked = dict(feed)
        last: list[list[np.ndarray]] = [[]]

        def infer() -> None:
            last[0] = self.run(checked, validate=False)

        return BoundCall(_nothing, infer, lambda: last[0])

    def describe(self) -> dict[str, Any]:
        """What this runtime is and what it really ran: version, threads, device, precision."""
        info: dict[str, Any] = {
            "runtime": self.name,
            "package": self.package,
            "version": self.version(),
            "threads": self.threads,
            "precision_hint": self.precision_hint,
            "model": None if self.path is None else str(self.path),
        }
        if self.loaded:
            info["inputs"] = [s.as_dict() for s in self.inputs]
            info["outputs"] = [s.as_dict() for s in self.outputs]
            info.update(self._describe())
        return info

    @classmethod
    def version(cls) -> str | None:
        """Version of the runtime package (without importing it when it is not imported yet)."""
        info = cls.info()
        mod = sys.modules.get(info.module)
        if mod is not None and isinstance(getattr(mod, "__version__", None), str):
            return str(mod.__version__)
        try:
            return importlib.metadata.version(info.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    # ----------------------------------------------------------------- for subclasses
    @abstractmethod
    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Load the model at ``path`` (already checked to exist, with an accepted suffix, and with
        the runtime package installed).

        Returns:
            The input specs and output specs, each in the model's order.
        """

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference.

        Args:
            feed: one array per input, in :attr:`inputs` order, already validated.

        Returns:
            One array per output in :attr:`outputs` order; arrays the caller owns (not views
            of buffers the next call overwrites).
        """

    def _describe(self) -> dict[str, Any]:
        """Runtime-specific facts about the loaded model: ``device``, ``precision`` actually used,
        per-precision op counts. Only called after a successful load."""
        return {}

    def _kinds(self) -> str:
        return " or ".join(self.suffixes)

    def __repr__(self) -> str:
        where = f" {self.path.name}" if self.path else ""
        return f"<{type(self).__name__}{where} threads={self.threads}>"


def _nothing() -> None:
    return None


def _shape_text(shape: tuple[int | str | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def precision_name(kind: str) -> str:
    """edgekit's name for a precision label (``f32`` → ``fp32``, ``u8`` → ``int8``)."""
    return _PRECISION_NAMES.get(kind, kind)


def precision_verdict(counts: Mapping[str, int]) -> str:
    """Name the precision of a model from per-precision counts of its compute layers:
    one precision → its name (``fp32``, ``fp16``, ``bf16``, ``int8``), several → ``mixed``."""
    used = {precision_name(k) for k, n in counts.items() if n > 0}
    if not used:
        return "unknown"
    return used.pop() if len(used) == 1 else "mixed"


def specs_from_onnx(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs read from an ONNX file's graph (no runtime needed).

    Useful to give a TorchScript model, which does not record its input shapes, the specs of
    the ONNX exported from it.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"ONNX file {p} does not exist; check the path")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise BadInputError(f"{p} is not a readable ONNX file ({exc})") from exc
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        ttype = value.type.tensor_type
        dims: list[int | str | None] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        return TensorSpec(value.name, tuple(dims), dtype)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs
