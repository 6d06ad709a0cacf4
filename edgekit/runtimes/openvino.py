"""OpenVINO on the CPU: IR (.xml + .bin) or ONNX, compiled for latency with an explicit
inference precision, run through a synchronous infer request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.runtimes.base import (
    COMPUTE_LAYERS,
    BoundCall,
    Runtime,
    TensorSpec,
    precision_name,
    precision_verdict,
)
from edgekit.runtimes.table import OPENVINO

DEVICE = "CPU"
# The CPU plugin runs in bf16 by default on CPUs with bf16 support, so an "fp32" variant would
# not really be fp32; edgekit always says which precision it wants.
_TENSOR_CACHE = 64  # input arrays whose bound tensors are kept (the latency loop cycles 8 feeds)
_HINTS = {None: "f32", "fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}


class OpenVINORuntime(Runtime):
    """OpenVINO, CPU plugin."""

    name = OPENVINO.name

    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").exists():
            weights = path.with_suffix(".bin").name
            raise BadInputError(f"OpenVINO IR {path} has no weights file {weights} beside it")
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        model = core.read_model(str(path))
        try:
            self._batch_dynamic = _make_batch_dynamic(model)
        except Exception:  # a batch hard-coded in the graph (e.g. in a Reshape): keep it static
            model = core.read_model(str(path))
            self._batch_dynamic = False
        config = {
            props.inference_num_threads: self.threads,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: getattr(ov.Type, _HINTS[self.precision_hint]),
            # The latency hint pins the inference thread to a core on Linux, the same first core in
            # every process: on a shared machine the p50 of one bundle then varied 1.32x from process
            # to process (edge-cnn INT8, 6 runs) against 1.05x unpinned. The scheduler places it.
            hints.enable_cpu_pinning: False,
        }
        self._compiled = core.compile_model(model, DEVICE, config)
        self._request = self._compiled.create_infer_request()
        self._core = core
        self._layers: list[dict[str, str]] | None = None
        inputs = [_spec(p, f"input_{i}") for i, p in enumerate(self._compiled.inputs)]
        outputs = [_spec(p, f"output_{i}") for i, p in enumerate(self._compiled.outputs)]
        self._index = {s.name: i for i, s in enumerate(inputs)}
        self._n_outputs = len(outputs)
        self._tensors: dict[int, tuple[np.ndarray, Any]] = {}
        try:
            from openvino._pyopenvino import InferRequest as _Raw

            self._raw_infer: Any = _Raw.infer
        except ImportError:
            self._raw_infer = None
        return inputs, outputs

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Inputs are bound as tensors over the caller's arrays, cached per array: the latency loop
        # cycles a few feeds, and wrapping an array on every call cost ~25 % of a 0.1 ms model
        # (compared with OpenVINO's benchmark_app on the same IR). Outputs are copied out.
        request = self._request
        if len(feed) == 1:
            inputs: Any = self._tensor(next(iter(feed.values())))
        else:
            inputs = {self._index[k]: self._tensor(v) for k, v in feed.items()}
        self._infer(inputs)
        return [request.get_output_tensor(i).data.copy() for i in range(self._n_outputs)]

    def _infer(self, inputs: Any) -> None:
        # The compiled extension's infer() takes tensors as they are; the Python wrapper around it
        # adds input checks and a result dict (~10 µs a call, 10 % of a 0.1 ms model). The outputs
        # are read from the request, so nothing of the wrapper is lost; any mismatch (another
        # OpenVINO version) falls back to the public call for good.
        if self._raw_infer is not None:
            try:
                self._raw_infer(self._request, inputs, True, False)
                return
            except TypeError:
                self._raw_infer = None
        self._request.infer(inputs, share_outputs=True)

    def bind_for_timing(self, feed: Mapping[str, np.ndarray]) -> BoundCall:
        """The feed as tensors over its arrays (no copy), made once; ``prepare`` sets them on the one
        infer request, ``infer`` runs it with nothing else to set, ``read`` copies the outputs out.

        ``elapsed_ns`` is the request's own latency, measured in C++ around the inference: the
        figure ``benchmark_app`` reports. The Python binding builds a result dict after every
        ``infer`` (5–10 µs here, what no C++ caller pays), which a clock around the Python call
        would add to every sample."""
        request = self._request
        tensors = {self._index[k]: self._tensor(v) for k, v in feed.items()}
        if len(tensors) == 1:
            prepare = partial(request.set_input_tensor, next(iter(tensors.values())))
        else:
            prepare = partial(request.set_input_tensors, tensors)

        def read() -> list[np.ndarray]:
            return [request.get_output_tensor(i).data.copy() for i in range(self._n_outputs)]

        def elapsed_ns() -> float:
            return float(request.latency) * 1e6  # milliseconds

        return BoundCall(prepare, partial(self._infer, {}), read, elapsed_ns)

    def compile_config(self) -> dict[str, str]:
        """The CPU properties the model was compiled with, in the form ``benchmark_app -load_config``
        takes them, so the tool compiles the same model the same way."""
        import openvino as ov

        keys = (
            "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT",
            "ENABLE_CPU_PINNING",
        )
        config = {}
        for key in keys:
            value = self._compiled.get_property(key)
            if isinstance(value, bool):
                config[key] = "YES" if value else "NO"
            else:
                config[key] = value.get_type_name() if isinstance(value, ov.Type) else str(value)
        return config

    def compiled_property(self, name: str) -> str:
        """One property of the compiled model, printed as ``benchmark_app`` prints it."""
        return str(self._compiled.get_property(name))

    def _tensor(self, arr: np.ndarray) -> Any:
        import openvino as ov

        hit = self._tensors.get(id(arr))
        if hit is not None and hit[0] is arr:
            return hit[1]
        if len(self._tensors) >= _TENSOR_CACHE:
            self._tensors.clear()
        if not (arr.flags.c_contiguous and arr.flags.writeable):  # OpenVINO shares only writeable memory
            return ov.Tensor(np.array(arr, order="C"), shared_memory=True)
        tensor = ov.Tensor(arr, shared_memory=True)
        self._tensors[id(arr)] = (arr, tensor)  # holding arr keeps its id from being reused meanwhile
        return tensor

    def layers(self) -> list[dict[str, str]]:
        """Every layer of the compiled (runtime) graph: name, type and the precision it runs in."""
        if self._layers is None:
            rows = []
            for op in self._compiled.get_runtime_model().get_ordered_ops():
                info = op.get_rt_info()
                rows.append(
                    {
                        "name": op.get_friendly_name(),
                        "type": info["layerType"].astype(str),
                        "precision": info["runtimePrecision"].astype(str),
                        "kernel": info["primitiveType"].astype(str),
                    }
                )
            self._layers = rows
        return self._layers

    def _describe(self) -> dict[str, Any]:
        import openvino.properties as props
        import openvino.properties.hint as hints

        layers = self.layers()
        compute = Counter(row["precision"] for row in layers if row["type"] in COMPUTE_LAYERS)
        return {
            "device": DEVICE,
            "device_name": self._core.get_property(DEVICE, props.device.full_name),
            "execution_devices": list(self._compiled.get_property(props.execution_devices)),
            "inference_precision": _precision_name(
                self._compiled.get_property(hints.inference_precision)
            ),
            "threads_used": int(self._compiled.get_property(props.inference_num_threads)),
            "batch_dynamic": self._batch_dynamic,
            "ops_by_precision": dict(Counter(row["precision"] for row in layers)),
            "compute_ops_by_precision": dict(compute),
            "precision": precision_verdict(compute),
        }


def _make_batch_dynamic(model: Any) -> bool:
    """Make axis 0 of every input dynamic when it is static, so one compiled model serves every
    batch size. Returns whether the batch axis is dynamic afterwards; raises when the graph
    cannot be reshaped (the caller then keeps the model as it was)."""
    import openvino as ov

    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        if ps.rank.is_dynamic or ps.rank.get_length() == 0:
            return False
        if ps[0].is_static:
            ps = ov.PartialShape(ps)
            ps[0] = ov.Dimension(-1)
            shapes[port] = ps
    if shapes:
        model.reshape(shapes)
    return True


def _spec(port: Any, fallback: str) -> TensorSpec:
    """Spec of a port; tensors converted from torch may have no name (outputs usually)."""
    ps = port.get_partial_shape()
    dims: tuple[int | str | None, ...] = tuple(d.get_length() if d.is_static else None for d in ps)
    name = port.get_any_name() if port.get_names() else fallback
    return TensorSpec(name, dims, port.get_element_type().to_dtype().name)


def _precision_name(ov_type: Any) -> str:
    return precision_name(ov_type.get_type_name())


# CPU flags (as /proc/cpuinfo spells them) that give OpenVINO native bf16 arithmetic.
BF16_COMPUTE_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The BF16 and AMX flags of this CPU (from ``cpuinfo``, the text of /proc/cpuinfo, read
    from the system when None), sorted. Empty when there are none or the file is unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(f for f in value.split() if "bf16" in f or f.startswith("amx"))
    return sorted(flags)


def bf16_support(cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether OpenVINO can compute in bf16 on this CPU, and why (one line for the report)."""
    flags = cpu_bf16_flags(cpuinfo)
    found = [f for f in BF16_COMPUTE_FLAGS if f in flags]
    if found:
        return True, f"CPU has {', '.join(found)}: OpenVINO computes bf16 natively (ov-bf16 offered)"
    return False, (
        f"no ov-bf16 variant: the CPU has neither {' nor '.join(BF16_COMPUTE_FLAGS)} "
        "(bf16 would be emulated, slower than fp32)"
    )
