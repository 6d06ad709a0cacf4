"""Edits of an exported ONNX graph: the symbolic batch and declared axes, metadata, opset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import IntegrityError
from edgekit.io.models import META_FILE

if TYPE_CHECKING:
    import onnx


BATCH = "batch"


def finalise(
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
        fixed = [v.name for v in graph_io(proto) if not dim0_is_dynamic(v)]
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


def real_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def graph_io(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [*real_inputs(proto), *proto.graph.output]


def dim0_is_dynamic(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Rename the exporter's symbol for the batch axis (e.g. ``s77``) to ``batch`` everywhere."""
    symbols = {
        v.type.tensor_type.shape.dim[0].dim_param
        for v in real_inputs(proto)
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
    for value in graph_io(proto):
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


def cut_along_axes(
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


def make_batch_dynamic(proto: onnx.ModelProto, size: int) -> None:
    for value in graph_io(proto):
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


def opset_of(proto: onnx.ModelProto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
