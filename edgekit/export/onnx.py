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
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BadInputError, IntegrityError
from edgekit.export.graph import (
    BATCH,
    cut_along_axes,
    dim0_is_dynamic,
    finalise,
    make_batch_dynamic,
    opset_of,
    real_inputs,
)
from edgekit.export.parity import (
    as_tensors,
    bind_sample,
    check_parity,
    default_output_names,
    eval_mode,
    first_line,
    parity_at_two_batches,
    sample_batch,
)
from edgekit.io.atomic import atomic_write_bytes
from edgekit.io.models import InputSpec, LoadedModel, forward_input_names

if TYPE_CHECKING:
    import torch

MIN_OPSET = 13
DYNAMO_MIN_OPSET = 18  # the dynamo exporter implements 18+; asking for less makes it down-convert


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
    feed = bind_sample(sample, names, {s.name: s.dtype for s in specs})
    trace = feed
    if dynamic_batch and sample_batch(feed) == 1:
        # A batch of 1 would be specialised as a constant by tracing; use the sample twice.
        trace = {k: np.concatenate([v, v]) for k, v in feed.items()}
    if is_program and dynamic_batch and _static_batch_placeholders(module):
        raise BadInputError(
            "this torch.export program has a fixed batch size "
            f"({', '.join(_static_batch_placeholders(module))}); re-export it with "
            "dynamic_shapes={0: torch.export.Dim('batch')} per input, or export with a static batch"
        )
    output_names = default_output_names(module, trace)

    failures: list[str] = []
    parity_error: IntegrityError | None = None
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        for exporter in _exporter_order(module, is_program):
            raw = Path(tmp) / f"{exporter}.raw.onnx"
            try:
                with eval_mode(module), _quiet():
                    _EXPORTERS[exporter](
                        module, as_tensors(trace), raw, names, output_names, opset, dynamic_batch, axes
                    )
                proto = finalise(raw, dynamic_batch, meta, axes)
            except IntegrityError as exc:
                failures.append(f"{exporter}: {exc}")
                continue
            except Exception as exc:  # the exporters raise many kinds of errors
                failures.append(f"{exporter}: {first_line(exc)}")
                continue
            final = Path(tmp) / f"{exporter}.onnx"
            final.write_bytes(proto.SerializeToString())
            try:
                err = parity_at_two_batches(final, module, feed, atol, dynamic_batch)
                shorter = cut_along_axes(feed, axes)
                if shorter is not None:
                    err = max(err, check_parity(final, module, shorter, atol))
            except IntegrityError as exc:
                parity_error = parity_error or exc
                failures.append(f"{exporter}: {exc}")
                continue
            atomic_write_bytes(out, final.read_bytes())
            return ExportResult(
                path=out,
                opset=opset_of(proto),
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


# -- ONNX input -------------------------------------------------------------------------------


def _normalise_onnx(
    src: Path, out: Path, sample: dict[str, np.ndarray], opset: int, atol: float, dynamic: bool
) -> ExportResult:
    """An ONNX input: opset raised to ≥ 13, checked, shapes inferred, batch axis made dynamic."""
    import onnx
    from onnx import version_converter

    try:
        proto = onnx.load(str(src))
    except Exception as exc:
        raise BadInputError(f"cannot read ONNX file {src}: {first_line(exc)}") from exc
    if opset_of(proto) < MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as exc:
            raise BadInputError(
                f"{src} uses opset {opset_of(proto)} and cannot be converted to {opset} "
                f"({first_line(exc)}); re-export it with opset ≥ {MIN_OPSET}"
            ) from exc
    names = [i.name for i in real_inputs(proto)]
    feed = bind_sample(sample, names, {})
    fixed_batch = {
        v.type.tensor_type.shape.dim[0].dim_value
        for v in real_inputs(proto)
        if not dim0_is_dynamic(v) and v.type.tensor_type.shape.dim
    }
    made_dynamic = dynamic and bool(fixed_batch)
    if made_dynamic:
        if len(fixed_batch) != 1:
            raise BadInputError(
                f"{src} has inputs with different fixed batch sizes {sorted(fixed_batch)}"
            )
        size = fixed_batch.pop()
        feed = {k: v[: len(v) - len(v) % size] for k, v in feed.items()}
        if sample_batch(feed) == 0:
            raise BadInputError(
                f"{src} has a fixed batch size of {size}; give a sample of at least {size} rows"
            )
        make_batch_dynamic(proto, size)
    # Shape inference is advisory: a model it cannot follow still runs.
    with contextlib.suppress(Exception):
        proto = onnx.shape_inference.infer_shapes(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise BadInputError(
            f"{src} is not a valid ONNX model after normalisation: {first_line(exc)}"
        ) from exc

    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        final = Path(tmp) / "model.onnx"
        final.write_bytes(proto.SerializeToString())
        try:
            err = parity_at_two_batches(final, src, feed, atol, dynamic)
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
        opset=opset_of(proto),
        exporter="onnx",
        max_abs_err=err,
        input_names=names,
        output_names=[o.name for o in proto.graph.output],
    )


__all__ = [
    "BATCH",
    "DYNAMO_MIN_OPSET",
    "MIN_OPSET",
    "ExportResult",
    "check_parity",
    "declared_axes",
    "export_onnx",
    "model_params",
]
