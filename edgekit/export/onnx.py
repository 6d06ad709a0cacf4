"""Export a model to one self-contained ONNX file and prove it computes what the model computes.

Every export ends with :func:`check_parity` on the caller's real sample, at its own batch size
and at a second one (batch 1, or 2 when the sample is a single row); a mismatch is an error.
The file has a dynamic batch axis named ``batch`` on every input and output, opset ≥ 13
(ONNX Runtime's per-channel quantization needs it), and no external data file.

Axes besides the batch (a sequence length, an image width) are dynamic when the model's
metadata declares them: ``dynamic_axes: {"input_ids": {"1": "sequence"}, "output": {...}}``
(input or output name → axis → symbol; inputs sharing a symbol share the size). The graph keeps
those axes symbolic, and parity is also checked on the sample cut to about half along them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BadInputError, IntegrityError
from edgekit.io.atomic import atomic_write_bytes
from edgekit.io.models import META_FILE, InputSpec, LoadedModel, forward_input_names

if TYPE_CHECKING:
    import onnx
    import torch

MIN_OPSET = 13
DYNAMO_MIN_OPSET = 18  # the dynamo exporter implements 18+; asking for less makes it down-convert
BATCH = "batch"

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely it matches the source model."""

    path: Path
    opset: int
    exporter: str  # "torchscript" | "dynamo" | "onnx" (an ONNX input, normalised)
    max_abs_err: float
    input_names: list[str]
    output_names: list[str]


def export_onnx(
    model: LoadedModel | torch.nn.Module,
    out: Path,
    *,
    sample: dict[str, np.ndarray],
    opset: int = 17,
    atol: float = 1e-4,
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[Any, str]] | None = None,
) -> ExportResult:
    """Export ``model`` to ``out`` (one ``.onnx`` file) and check it against torch on ``sample``.

    ``sample`` maps input names to real arrays with the batch axis first. Input names come from
    ``model.inputs`` when known, else from ``sample``'s keys (in order). An ONNX input is
    normalised instead (opset raised to ≥ 13, checked, shapes inferred, names kept). ``out`` is
    written only when the parity check passes (:class:`IntegrityError` otherwise).
    ``dynamic_axes`` (default: the model metadata's) makes axes besides the batch dynamic.
    """
    if opset < MIN_OPSET:
        raise BadInputError(
            f"opset {opset} is too old; use {MIN_OPSET} or newer "
            "(ONNX Runtime quantization needs it)"
        )
    out = Path(out)
    if isinstance(model, LoadedModel) and not model.is_torch:
        if model.onnx_path is None:
            raise BadInputError(
                f"{model.path} has neither a torch module nor an ONNX file to export"
            )
        return _normalise_onnx(model.onnx_path, out, sample, opset, atol, dynamic_batch)

    module, specs, meta, is_program = _unpack(model)
    axes = declared_axes(meta.get("dynamic_axes") if dynamic_axes is None else dynamic_axes)
    names = [s.name for s in specs] or _names_from_forward(module, sample)
    feed = _bind(sample, names, {s.name: s.dtype for s in specs})
    trace = feed
    if dynamic_batch and _batch_size(feed) == 1:
        # A batch of 1 would be specialised as a constant by tracing; use the sample twice.
        trace = {k: np.concatenate([v, v]) for k, v in feed.items()}
    if is_program and dynamic_batch and _static_batch_placeholders(module):
        raise BadInputError(
            "this torch.export program has a fixed batch size "
            f"({', '.join(_static_batch_placeholders(module))}); re-export it with "
            "dynamic_shapes={0: torch.export.Dim('batch')} per input, or export with a static batch"
        )
    output_names = _output_names(module, trace)

    failures: list[str] = []
    parity_error: IntegrityError | None = None
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        for exporter in _exporter_order(module, is_program):
            raw = Path(tmp) / f"{exporter}.raw.onnx"
            try:
                with _eval_mode(module), _quiet():
                    _EXPORTERS[exporter](
                        module, _tensors(trace), raw, names, output_names, opset, dynamic_batch, axes
                    )
                proto = _finalise(raw, dynamic_batch, meta, axes)
            except IntegrityError as exc:
                failures.append(f"{exporter}: {exc}")
                continue
            except Exception as exc:  # the exporters raise many kinds of errors
                failures.append(f"{exporter}: {_first_line(exc)}")
                continue
            final = Path(tmp) / f"{exporter}.onnx"
            final.write_bytes(proto.SerializeToString())
            try:
                err = _parity_at_two_batches(final, module, feed, atol, dynamic_batch)
                shorter = _cut_along_axes(feed, axes)
                if shorter is not None:
                    err = max(err, check_parity(final, module, shorter, atol))
            except IntegrityError as exc:
                parity_error = parity_error or exc
                failures.append(f"{exporter}: {exc}")
                continue
            atomic_write_bytes(out, final.read_bytes())
            return ExportResult(
                path=out,
                opset=_opset(proto),
                exporter=exporter,
                max_abs_err=err,
                input_names=names,
                output_names=output_names,
            )
    if parity_error is not None:
        raise parity_error
    raise BadInputError(
        "the model could not be exported to ONNX (" + " | ".join(failures) + "); make it traceable "
        "(no data-dependent Python control flow) or export it to ONNX yourself and pass the .onnx"
    )


def declared_axes(raw: Any) -> dict[str, dict[int, str]]:
    """Dynamic axes besides the batch, as ``{name: {axis: symbol}}`` with int axes ≥ 1, from
    metadata (``{"input_ids": {"1": "sequence"}}``); axis 0 is always the batch and is dropped."""
    if not raw:
        return {}
    try:
        axes = {
            str(name): {int(axis): str(sym) for axis, sym in dict(per).items()}
            for name, per in dict(raw).items()
        }
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"dynamic_axes {raw!r} is malformed ({exc}); write e.g. "
            '{"input_ids": {"1": "sequence"}}'
        ) from exc
    if any(a < 0 for per in axes.values() for a in per):
        raise BadInputError(f"dynamic_axes {raw!r} has a negative axis; count axes from 0 (batch)")
    return {n: {a: s for a, s in per.items() if a > 0} for n, per in axes.items()}


def check_parity(
    onnx_path: Path,
    module: torch.nn.Module | LoadedModel | Path | str,
    sample: dict[str, np.ndarray],
    atol: float,
) -> float:
    """Run ``onnx_path`` in ONNX Runtime (1 thread) and ``module`` on the same real ``sample``.

    ``module`` is a torch module, a :class:`LoadedModel`, or the path of a reference ONNX file.
    Returns the largest absolute difference over all outputs. Raises :class:`IntegrityError` when
    it exceeds ``atol`` scaled by the outputs' magnitude (``atol × max(1, max|reference|)``, so
    large regression outputs are judged relative to their size), or when shapes differ.
    """
    session = _session(Path(onnx_path))
    names = [i.name for i in session.get_inputs()]
    feed = _bind(sample, names, {})
    feed = {
        i.name: feed[i.name].astype(_ORT_TYPES.get(i.type, feed[i.name].dtype), copy=False)
        for i in session.get_inputs()
    }
    try:
        got = session.run(None, feed)
    except Exception as exc:
        raise IntegrityError(
            f"ONNX Runtime cannot run the ONNX model on the sample: {_first_line(exc)}"
        ) from exc
    ref = _reference(module, feed)
    if len(got) != len(ref):
        raise IntegrityError(f"ONNX model has {len(got)} outputs but the reference has {len(ref)}")
    err, scale = 0.0, 1.0
    for i, (a, b) in enumerate(zip(got, ref, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise IntegrityError(
                f"ONNX output {i} has shape {a.shape} but the reference gives {b.shape}"
            )
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        same_nan = np.isnan(a64) & np.isnan(b64)
        diff = np.where(same_nan, 0.0, np.nan_to_num(diff, nan=np.inf))
        if diff.size:
            err = max(err, float(diff.max()))
            finite = np.abs(b64[np.isfinite(b64)])
            if finite.size:
                scale = max(scale, float(finite.max()))
    limit = atol * scale
    if err > limit:
        raise IntegrityError(
            f"ONNX output differs from torch by {err:.3g} > {limit:.3g} (atol {atol:g}); the "
            "exported graph does not compute what the model does (data-dependent control flow, "
            "or values traced as constants?)"
        )
    return err


def model_params(onnx_path: Path) -> int:
    """Number of weight values in an ONNX file's initializers: float tensors, and the 8- and
    4-bit integer tensors of quantized weights (int32/int64 shape and index tensors excluded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kinds = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    }
    return sum(
        int(np.prod(t.dims, dtype=np.int64))
        for t in model.graph.initializer
        if t.data_type in kinds
    )


# -- torch side -------------------------------------------------------------------------------


def _unpack(
    model: LoadedModel | torch.nn.Module,
) -> tuple[Any, list[InputSpec], dict[str, Any], bool]:
    if isinstance(model, LoadedModel):
        return (
            model.module,
            list(model.inputs),
            dict(model.meta),
            model.format == "exported_program",
        )
    return model, [], {}, False


def _names_from_forward(module: Any, sample: Mapping[str, np.ndarray]) -> list[str]:
    """Input names for a bare module: the sample's keys, in ``forward``'s argument order."""
    params = forward_input_names(module)
    if not params or set(params) == set(sample) or (len(params) == 1 and len(sample) == 1):
        keys = list(sample)
        return sorted(keys, key=params.index) if set(params) == set(keys) else keys
    raise BadInputError(
        f"the model's forward takes {params} but the sample has arrays {list(sample)}; "
        "name one array per argument"
    )


def _static_batch_placeholders(module: Any) -> list[str]:
    """Inputs of a torch.export graph module whose first axis was recorded as a fixed size."""
    import torch

    fixed = []
    for node in module.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], int):
            fixed.append(f"{node.name}: {val.shape[0]}")
    return fixed


def _exporter_order(module: Any, is_program: bool) -> list[str]:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return ["torchscript"]
    if is_program:
        return ["dynamo"]  # the TorchScript exporter needs .train(), which these modules refuse
    if isinstance(module, torch.fx.GraphModule):
        return ["dynamo", "torchscript"]
    # The TorchScript exporter first: fast (~0.1 s against ~1.5 s on a small CNN), honours opset 17
    # without conversion, and is the one that handles NNCF-stripped models.
    return ["torchscript", "dynamo"]


def _export_torchscript(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    names: list[str],
    outputs: list[str],
    opset: int,
    dynamic: bool,
    extra_axes: Mapping[str, Mapping[int, str]],
) -> None:
    import torch

    axes: dict[str, dict[int, str]] = {}
    for n in [*names, *outputs]:
        axes[n] = {0: BATCH} if dynamic else {}
        axes[n].update(extra_axes.get(n, {}))
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=names,
        output_names=outputs,
        dynamic_axes={n: a for n, a in axes.items() if a} or None,
        do_constant_folding=True,
    )


def _export_dynamo(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    names: list[str],
    outputs: list[str],
    opset: int,
    dynamic: bool,
    extra_axes: Mapping[str, Mapping[int, str]],
) -> None:
    import torch

    dims = {BATCH: torch.export.Dim(BATCH)}
    per_input: list[dict[int, Any]] = []
    for name in names:
        wanted = {0: BATCH} if dynamic else {}
        wanted.update(extra_axes.get(name, {}))
        per_input.append({a: dims.setdefault(sym, torch.export.Dim(sym)) for a, sym in wanted.items()})
    shapes = tuple(per_input) if any(per_input) else None
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=True,
        opset_version=max(opset, DYNAMO_MIN_OPSET),
        input_names=names,
        output_names=outputs,
        dynamic_shapes=shapes,
        external_data=False,
        verbose=False,
        optimize=True,
    )


_EXPORTERS: dict[str, Callable[..., None]] = {
    "torchscript": _export_torchscript,
    "dynamo": _export_dynamo,
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' noise: the TorchScript exporter warns it is deprecated, the dynamo
    exporter logs missing torchvision ops and opset conversions, tracing warns about constants.
    The parity checks that follow every export are what tells a good export from a bad one."""
    import torch

    loggers = [
        logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    ]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        # Emitted for every GRU/LSTM; the parity check at a second batch size tests exactly that.
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    """Put a module in eval mode for the duration.

    Graph modules from torch.export refuse ``.eval()``: their behaviour is baked into the graph,
    so only their ``training`` flags (which exporters warn about) are cleared and restored.
    """
    import torch

    flags = {m: m.training for m in module.modules()} if isinstance(module, torch.nn.Module) else {}
    try:
        module.eval()
    except NotImplementedError:
        for m in flags:
            m.training = False
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _tensors(feed: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(np.array(v, copy=True)) for v in feed.values())


def _flatten(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, Mapping):
        return [t for item in out.values() for t in _flatten(item)]
    raise BadInputError(
        f"the model returns a {type(out).__name__}; edgekit exports models returning tensors"
    )


def _run_torch(module: Any, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad(), _eval_mode(module):
        try:
            out = module(*_tensors(feed))
        except Exception as exc:
            raise BadInputError(
                f"the model fails on the sample {_shapes(feed)}: {_first_line(exc)}; "
                "check --input-shape or the data"
            ) from exc
    return [t.detach().cpu().numpy() for t in _flatten(out)]


def _output_names(module: Any, feed: Mapping[str, np.ndarray]) -> list[str]:
    n = len(_run_torch(module, feed))
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _reference(module: Any, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if isinstance(module, LoadedModel):
        if module.is_torch:
            module = module.module
        elif module.onnx_path is not None:
            module = module.onnx_path
    if isinstance(module, (str, Path)):
        return _run_onnx(Path(module), feed)
    return _run_torch(module, feed)


# -- ONNX side --------------------------------------------------------------------------------


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # failures surface as exceptions; do not also log them
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise IntegrityError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from exc


def _run_onnx(path: Path, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run a reference ONNX file; one with a fixed batch size B is fed in chunks of B."""
    session = _session(path)
    n = _batch_size(feed)
    fixed = {i.shape[0] for i in session.get_inputs() if i.shape and isinstance(i.shape[0], int)}
    step = n
    if len(fixed) == 1 and n % min(fixed) == 0:
        step = min(fixed)
    chunks = []
    for start in range(0, n, step):
        part = {
            i.name: np.asarray(feed[i.name][start : start + step]).astype(
                _ORT_TYPES.get(i.type, feed[i.name].dtype), copy=False
            )
            for i in session.get_inputs()
        }
        chunks.append(session.run(None, part))
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def _finalise(
    raw: Path,
    dynamic: bool,
    meta: Mapping[str, Any],
    axes: Mapping[str, Mapping[int, str]] | None = None,
) -> onnx.ModelProto:
    """Load an exporter's output (pulling in any external data), name the batch axis and the
    declared dynamic axes, check them."""
    import onnx

    proto = onnx.load(str(raw))
    if axes:
        _name_axes(proto, axes)
    if dynamic:
        _name_batch_axis(proto)
        fixed = [v.name for v in _io(proto) if not _dim0_is_dynamic(v)]
        if fixed:
            raise IntegrityError(
                f"the exported batch axis of {', '.join(fixed)} is fixed; the model probably "
                "hard-codes its batch size (e.g. x.view(1, -1)): use x.flatten(1) or "
                "x.view(x.size(0), -1)"
            )
    if meta:
        _set_meta(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def _normalise_onnx(
    src: Path, out: Path, sample: dict[str, np.ndarray], opset: int, atol: float, dynamic: bool
) -> ExportResult:
    """An ONNX input: opset raised to ≥ 13, checked, shapes inferred, batch axis made dynamic."""
    import onnx
    from onnx import version_converter

    try:
        proto = onnx.load(str(src))
    except Exception as exc:
        raise BadInputError(f"cannot read ONNX file {src}: {_first_line(exc)}") from exc
    if _opset(proto) < MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as exc:
            raise BadInputError(
                f"{src} uses opset {_opset(proto)} and cannot be converted to {opset} "
                f"({_first_line(exc)}); re-export it with opset ≥ {MIN_OPSET}"
            ) from exc
    names = [i.name for i in _real_inputs(proto)]
    feed = _bind(sample, names, {})
    fixed_batch = {
        v.type.tensor_type.shape.dim[0].dim_value
        for v in _real_inputs(proto)
        if not _dim0_is_dynamic(v) and v.type.tensor_type.shape.dim
    }
    made_dynamic = dynamic and bool(fixed_batch)
    if made_dynamic:
        if len(fixed_batch) != 1:
            raise BadInputError(
                f"{src} has inputs with different fixed batch sizes {sorted(fixed_batch)}"
            )
        size = fixed_batch.pop()
        feed = {k: v[: len(v) - len(v) % size] for k, v in feed.items()}
        if _batch_size(feed) == 0:
            raise BadInputError(
                f"{src} has a fixed batch size of {size}; give a sample of at least {size} rows"
            )
        _make_batch_dynamic(proto, size)
    # Shape inference is advisory: a model it cannot follow still runs.
    with contextlib.suppress(Exception):
        proto = onnx.shape_inference.infer_shapes(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise BadInputError(
            f"{src} is not a valid ONNX model after normalisation: {_first_line(exc)}"
        ) from exc

    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        final = Path(tmp) / "model.onnx"
        final.write_bytes(proto.SerializeToString())
        try:
            err = _parity_at_two_batches(final, src, feed, atol, dynamic)
        except IntegrityError as exc:
            if made_dynamic:
                raise BadInputError(
                    f"{src} has a fixed batch size that cannot be made dynamic ({exc}); "
                    "re-export it with a dynamic batch axis, or export with a static batch"
                ) from exc
            raise
        atomic_write_bytes(out, final.read_bytes())
    return ExportResult(
        path=out,
        opset=_opset(proto),
        exporter="onnx",
        max_abs_err=err,
        input_names=names,
        output_names=[o.name for o in proto.graph.output],
    )


def _parity_at_two_batches(
    path: Path, reference: Any, feed: dict[str, np.ndarray], atol: float, dynamic: bool
) -> float:
    """Parity on the whole sample and, when the batch is dynamic, at a second batch size too
    (its first row alone, or the single row twice)."""
    err = check_parity(path, reference, feed, atol)
    if dynamic:
        if _batch_size(feed) > 1:
            other = {k: v[:1] for k, v in feed.items()}
        else:
            other = {k: np.concatenate([v, v]) for k, v in feed.items()}
        err = max(err, check_parity(path, reference, other, atol))
    return err


def _real_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def _io(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [*_real_inputs(proto), *proto.graph.output]


def _dim0_is_dynamic(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Rename the exporter's symbol for the batch axis (e.g. ``s77``) to ``batch`` everywhere."""
    symbols = {
        v.type.tensor_type.shape.dim[0].dim_param
        for v in _real_inputs(proto)
        if v.type.tensor_type.shape.dim
    } - {""}
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH


def _name_axes(proto: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Give the declared dynamic axes of the inputs and outputs their symbols (the dynamo exporter
    writes its own, e.g. ``s53``), everywhere the exporter's symbol appears; a declared axis that
    came out with a fixed size is an error."""
    renames: dict[str, str] = {}
    fixed = []
    for value in _io(proto):
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in axes.get(value.name, {}).items():
            if axis >= len(dims):
                fixed.append(f"{value.name}[{axis}] (the tensor has {len(dims)} axes)")
            elif dims[axis].HasField("dim_value") and dims[axis].dim_value > 0:
                fixed.append(f"{value.name}[{axis}] = {dims[axis].dim_value}")
            elif dims[axis].dim_param:
                renames.setdefault(dims[axis].dim_param, symbol)
            else:
                dims[axis].dim_param = symbol
    if fixed:
        raise IntegrityError(
            f"declared dynamic axes came out fixed: {', '.join(fixed)}; the model probably "
            "turns that size into a constant (use tensor.shape inside forward, not Python ints)"
        )
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _cut_along_axes(
    feed: Mapping[str, np.ndarray], axes: Mapping[str, Mapping[int, str]]
) -> dict[str, np.ndarray] | None:
    """The sample cut to about half its size along every declared dynamic input axis (inputs
    sharing a symbol are cut alike), or None when no input has one of at least 2."""
    sizes: dict[str, int] = {}
    for name, arr in feed.items():
        for axis, symbol in axes.get(name, {}).items():
            if axis < arr.ndim:
                sizes.setdefault(symbol, arr.shape[axis])
    if not any(size >= 2 for size in sizes.values()):
        return None
    cut = {}
    for name, arr in feed.items():
        index: list[slice] = [slice(None)] * arr.ndim
        for axis, symbol in axes.get(name, {}).items():
            if axis < arr.ndim and sizes[symbol] >= 2:
                index[axis] = slice(0, (sizes[symbol] + 1) // 2)
        cut[name] = np.ascontiguousarray(arr[tuple(index)])
    return cut


def _make_batch_dynamic(proto: onnx.ModelProto, size: int) -> None:
    for value in _io(proto):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == size:
            dims[0].dim_param = BATCH
    del proto.graph.value_info[:]  # intermediate shapes were inferred for the fixed batch


def _set_meta(proto: onnx.ModelProto, meta: Mapping[str, Any]) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == META_FILE:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_FILE, json.dumps(dict(meta), sort_keys=True)


def _opset(proto: onnx.ModelProto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


# -- samples ----------------------------------------------------------------------------------


def _bind(
    sample: Mapping[str, np.ndarray], names: Sequence[str], dtypes: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """The sample keyed and ordered by the model's input names, cast to the declared dtypes.

    Integer arrays stay integer; float arrays without a declared dtype become float32.
    """
    if not sample:
        raise BadInputError("the export sample is empty; give one real array per model input")
    if set(names) <= set(sample):
        picked = {n: np.asarray(sample[n]) for n in names}
    elif len(names) == 1 and len(sample) == 1:
        picked = {names[0]: np.asarray(next(iter(sample.values())))}
    else:
        raise BadInputError(
            f"the sample has arrays {sorted(sample)} but the model's inputs are {list(names)}; "
            "name one array per input"
        )
    feed = {}
    for name, arr in picked.items():
        if arr.ndim == 0:
            raise BadInputError(f"sample array {name!r} is a scalar; it needs a batch axis first")
        if name in dtypes:
            arr = arr.astype(dtypes[name], copy=False)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
        feed[name] = arr
    if len({len(v) for v in feed.values()}) != 1:
        raise BadInputError(f"sample arrays have different batch sizes {_shapes(feed)}")
    return feed


def _batch_size(feed: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feed.values())))


def _shapes(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in feed.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
