"""TensorRT on an NVIDIA device: build an engine from the bundle's ONNX (TensorRT Python API or
``trtexec``), check a Q/DQ ONNX meant for it, and run a built engine.

Engines are tied to the GPU and the TensorRT version that built them, so they are built on the
device itself (``edgekit build``). Nothing here imports ``tensorrt`` at module level: the checks
that need no GPU (shapes, command lines, the Q/DQ rules of :mod:`edgekit.export.trt_qdq`) run
anywhere. Running an engine uses
torch CUDA tensors as I/O buffers and the TensorRT 10 tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError, EdgekitError, MissingDependencyError, require
from edgekit.export.trt_qdq import check_trt_qdq
from edgekit.runtimes.base import Runtime, TensorSpec, precision_verdict, specs_from_onnx
from edgekit.runtimes.table import TENSORRT

__all__ = ["check_trt_qdq", "TensorRTRuntime", "build_engine", "gpu_available", "profile_shapes", "trtexec_command"]
PACKAGE = TENSORRT.package
EXTRA = TENSORRT.extra
Shape = tuple[int, ...]
ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]  # input → (min, opt, max)

# Format/Datatype words of the engine inspector → edgekit precision names.
_TRT_FORMATS = {
    "int8": "int8", "half": "fp16", "float": "fp32", "bfloat16": "bf16", "fp8": "fp8",
    "int4": "int4",
}


# --------------------------------------------------------------------------- device
def gpu_available() -> tuple[bool, str]:
    """Whether TensorRT can run here: an NVIDIA driver with a GPU and the ``tensorrt`` package.

    Never imports TensorRT and never touches the GPU (the lean TensorRT runtime crashes when it
    deserializes an engine without one). Returns ``(ok, reason)``; ``reason`` says what is there
    or what is missing.
    """
    if not _libcuda_loadable():
        return False, (
            "no NVIDIA GPU driver here (libcuda cannot be loaded); "
            "build and run TensorRT engines on the device"
        )
    smi = shutil.which("nvidia-smi")
    gpu = "libcuda present (no nvidia-smi, as on Jetson)"
    if smi:
        try:
            listed = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"nvidia-smi failed ({exc})"
        lines = [ln for ln in listed.stdout.splitlines() if ln.startswith("GPU")]
        if listed.returncode != 0 or not lines:
            detail = (listed.stderr or listed.stdout).strip().splitlines()
            return False, f"nvidia-smi lists no GPU ({detail[0] if detail else 'no output'})"
        gpu = lines[0]
    if importlib.util.find_spec(PACKAGE) is None:
        return False, (
            f"the {PACKAGE} package is not installed (pip install 'edgekit[{EXTRA}]' on the device)"
        )
    return True, gpu


def device_identity() -> dict[str, str] | None:
    """This device's GPU name and TensorRT version (what an engine is tied to), or None when
    TensorRT cannot run here. Imports TensorRT only when a GPU is there."""
    ok, detail = gpu_available()
    if not ok:
        return None
    import tensorrt as trt

    return {"gpu": gpu_name(detail), "tensorrt": str(getattr(trt, "__version__", "unknown"))}


def gpu_name(detail: str = "") -> str:
    """The GPU's name: nvidia-smi's, else the Jetson board model, else what ``gpu_available`` said."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    model = Path("/proc/device-tree/model")
    if model.is_file():
        return model.read_text(errors="replace").strip("\x00 \n")
    return detail or "unknown GPU"


def _libcuda_loadable() -> bool:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


# --------------------------------------------------------------------------- shapes
def profile_shapes(
    onnx_path: str | Path,
    *,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 32,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
) -> ProfileShapes:
    """Optimization-profile shapes (min, opt, max) for every input of ``onnx_path`` that has a
    dynamic axis. A dynamic axis 0 is the batch and spans ``min_batch..max_batch``; any other
    dynamic axis needs its shapes in ``shapes``. Inputs that are fully static need no profile
    and are left out. Reads the ONNX graph only: no TensorRT needed."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise BadInputError(
            "batch sizes must satisfy 1 <= min <= opt <= max, "
            f"got {min_batch}, {opt_batch}, {max_batch}"
        )
    inputs, _ = specs_from_onnx(onnx_path)
    given = dict(shapes or {})
    unknown = sorted(set(given) - {s.name for s in inputs})
    if unknown:
        raise BadInputError(
            f"shapes given for {unknown}, which are not inputs of {Path(onnx_path).name}; "
            f"its inputs are {[s.name for s in inputs]}"
        )
    result: ProfileShapes = {}
    for spec in inputs:
        if spec.name in given:
            result[spec.name] = _checked_profile(spec, given[spec.name])
            continue
        dynamic = [axis for axis, d in enumerate(spec.shape) if not isinstance(d, int)]
        if not dynamic:
            continue
        if dynamic != [0]:
            names = [spec.shape[a] or "?" for a in dynamic if a != 0]
            raise BadInputError(
                f"input {spec.name!r} has dynamic axes {dynamic} ({names}) besides the batch; "
                "give its min/opt/max shapes with --shapes NAME:MIN/OPT/MAX, "
                f"e.g. --shapes {spec.name}:{_example(spec)}"
            )
        rest = tuple(int(d) for d in spec.shape[1:])  # type: ignore[arg-type]
        result[spec.name] = ((min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    return result


def _example(spec: TensorSpec) -> str:
    dims = [[d, d, d] if isinstance(d, int) else [1, 8, 32] for d in spec.shape]
    return "/".join("x".join(str(d[i]) for d in dims) for i in range(3))


def _checked_profile(
    spec: TensorSpec, triple: tuple[Shape, Shape, Shape]
) -> tuple[Shape, Shape, Shape]:
    name = spec.name
    try:
        lo, opt, hi = (tuple(int(d) for d in s) for s in triple)
    except (TypeError, ValueError) as exc:
        message = f"shapes for {name!r} must be three tuples of ints (min, opt, max)"
        raise BadInputError(message) from exc
    for s in (lo, opt, hi):
        if len(s) != spec.rank:
            raise BadInputError(f"shape {s} for {name!r} has rank {len(s)}, not {spec.rank}")
        for axis, (d, want) in enumerate(zip(s, spec.shape, strict=True)):
            if isinstance(want, int) and d != want:
                raise BadInputError(f"shape {s} for {name!r}: axis {axis} is static ({want})")
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)) or min(lo) < 1:
        raise BadInputError(
            f"shapes for {name!r} must satisfy 1 <= min <= opt <= max per axis, "
            f"got {lo}, {opt}, {hi}"
        )
    return lo, opt, hi


# --------------------------------------------------------------------------- trtexec
def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    fp16: bool = False,
    int8: bool = False,
    timing_cache: str | Path | None = None,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
    workspace_mb: int | None = None,
    strongly_typed: bool = False,
    executable: str = "trtexec",
) -> list[str]:
    """The ``trtexec`` command line that builds the same engine as :func:`build_engine`.

    For an explicit Q/DQ ONNX, ``int8=True`` only allows INT8 kernels where the Q/DQ nodes say
    so (no calibrator is involved) and ``fp16=True`` lets the unquantized layers use FP16.
    ``strongly_typed=True`` (``--stronglyTyped``) is the alternative: precisions come from the
    ONNX types alone and the precision flags are not allowed. ``shapes`` comes from
    :func:`profile_shapes` (inputs with dynamic axes only).
    """
    _check_precision_flags(fp16, int8, strongly_typed)
    cmd = [executable, f"--onnx={Path(onnx_path)}", f"--saveEngine={Path(engine_path)}"]
    if strongly_typed:
        cmd.append("--stronglyTyped")
    if fp16:
        cmd.append("--fp16")
    if int8:
        cmd.append("--int8")
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={Path(timing_cache)}")
    if shapes:
        for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            spec = ",".join(
                f"{_trtexec_name(name)}:{'x'.join(str(d) for d in triple[index])}"
                for name, triple in shapes.items()
            )
            cmd.append(f"{flag}={spec}")
    if workspace_mb is not None:
        if workspace_mb < 1:
            raise BadInputError(f"workspace_mb must be at least 1, got {workspace_mb}")
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    cmd += ["--profilingVerbosity=detailed", "--skipInference"]
    return cmd


def _trtexec_name(name: str) -> str:
    # trtexec splits shape specs on ':' and ','; names holding them must be single-quoted.
    return f"'{name}'" if any(c in name for c in ":,") else name


def _check_precision_flags(fp16: bool, int8: bool, strongly_typed: bool) -> None:
    if strongly_typed and (fp16 or int8):
        raise BadInputError(
            "a strongly typed build takes its precisions from the ONNX types; "
            "drop fp16/int8 or strongly_typed"
        )


# --------------------------------------------------------------------------- build
def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    fp16: bool = False,
    int8: bool = False,
    timing_cache: str | Path | None = None,
    workspace_mb: int = 1024,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 32,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
    strongly_typed: bool = False,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX file with the TensorRT 10 Python API.

    Precision flags as in :func:`trtexec_command`. The optimization profile covers
    ``min_batch..max_batch`` on a dynamic batch axis (``shapes`` for other dynamic axes). With
    ``timing_cache`` the builder reads the cache when the file exists and writes it back after
    the build, so rebuilds on the same device skip the kernel timing. Writes the engine
    atomically and returns its path.
    """
    onnx_file = Path(onnx_path)
    if not onnx_file.is_file():
        raise BadInputError(f"ONNX file {onnx_file} does not exist; check the path")
    if onnx_file.suffix.lower() != ".onnx":
        raise BadInputError(f"{onnx_file.name} is not an .onnx file; TensorRT builds from ONNX")
    _check_precision_flags(fp16, int8, strongly_typed)
    if workspace_mb < 1:
        raise BadInputError(f"workspace_mb must be at least 1, got {workspace_mb}")
    profile = profile_shapes(
        onnx_file, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, shapes=shapes
    )
    require(PACKAGE, package=PACKAGE, extra=EXTRA)
    ok, reason = gpu_available()
    if not ok:
        raise BadInputError(f"cannot build a TensorRT engine here: {reason}")
    import tensorrt as trt

    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        raise MissingDependencyError(
            "the installed TensorRT is the lean runtime, which cannot build engines; "
            f"install the full tensorrt package: pip install 'edgekit[{EXTRA}]'"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = " | ".join(errors) or "no parser message"
        raise BadInputError(f"TensorRT cannot parse {onnx_file.name}: {detail}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: enables INT8 kernels, no calibrator
    if profile:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    cache_file = Path(timing_cache) if timing_cache is not None else None
    if cache_file is not None:
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgekitError(
            f"TensorRT failed to build an engine from {onnx_file.name}; see the TensorRT log above"
        )
    out = Path(engine_path)
    _atomic_write(out, memoryview(serialized))
    if cache_file is not None:
        _atomic_write(cache_file, memoryview(config.get_timing_cache().serialize()))
    return out


def _atomic_write(path: Path, data: memoryview | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- runtime
class TensorRTRuntime(Runtime):
    """A serialized TensorRT engine on the first CUDA device; I/O through torch CUDA tensors."""

    name = TENSORRT.name

    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        ok, reason = gpu_available()
        if not ok:
            raise BadInputError(f"cannot run a TensorRT engine here: {reason}")
        require("torch", package="torch")
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BadInputError(
                "torch cannot see a CUDA device; TensorRT engines run through torch CUDA tensors"
            )
        self._trt, self._torch = trt, torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BadInputError(
                f"TensorRT cannot deserialize {path.name}; engines are tied to the GPU and "
                "TensorRT version that built them: rebuild it here with `edgekit build`"
            )
        self._context = self._engine.create_execution_context()
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dims = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
            spec = TensorSpec(name, dims, dtype)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        return inputs, outputs

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        stream = torch.cuda.current_stream()
        keep = []  # device tensors must live until the stream has finished
        for name, arr in feed.items():
            tensor = torch.from_numpy(np.ascontiguousarray(arr)).to("cuda")
            if not self._context.set_input_shape(name, tuple(arr.shape)):
                raise BadInputError(
                    f"input {name!r} shape {tuple(arr.shape)} is outside the engine's "
                    "optimization profile; rebuild with a wider min/max batch"
                )
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = []
        for spec in self._outputs or []:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            out = torch.empty(shape, dtype=_torch_dtype(torch, spec.dtype), device="cuda")
            self._context.set_tensor_address(spec.name, out.data_ptr())
            results.append(out)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise EdgekitError("TensorRT failed to run the engine; see the TensorRT log above")
        stream.synchronize()
        del keep
        return [t.cpu().numpy() for t in results]

    def _describe(self) -> dict[str, Any]:
        trt = self._trt
        info: dict[str, Any] = {
            "device": "cuda:0",
            "device_name": self._torch.cuda.get_device_name(0),
        }
        try:
            inspector = self._engine.create_engine_inspector()
            text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            layers = json.loads(text).get("Layers", [])
        except Exception:  # engine built without detailed profiling verbosity
            layers = []
        counts: Counter[str] = Counter()
        for layer in layers:
            if isinstance(layer, dict) and layer.get("Outputs"):
                word = str(layer["Outputs"][0].get("Format/Datatype", "")).split(" ")[0].lower()
                counts[_TRT_FORMATS.get(word, word)] += 1
        if counts:
            info["ops_by_precision"] = dict(counts)
            info["precision"] = precision_verdict(counts)
        return info


def _torch_dtype(torch: Any, dtype: str) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
