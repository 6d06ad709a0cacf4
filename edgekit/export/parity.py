"""Parity of an exported ONNX file with the model it came from, on the caller's real sample.

Both sides run the same bound sample: ONNX Runtime on one thread, torch in eval mode without
gradients (or a reference ONNX file). Differences are judged relative to the outputs' magnitude.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BadInputError, IntegrityError
from edgekit.io.models import LoadedModel

if TYPE_CHECKING:
    import torch


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
    session = ort_session(Path(onnx_path))
    names = [i.name for i in session.get_inputs()]
    feed = bind_sample(sample, names, {})
    feed = {
        i.name: feed[i.name].astype(_ORT_TYPES.get(i.type, feed[i.name].dtype), copy=False)
        for i in session.get_inputs()
    }
    try:
        got = session.run(None, feed)
    except Exception as exc:
        raise IntegrityError(
            f"ONNX Runtime cannot run the ONNX model on the sample: {first_line(exc)}"
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


def parity_at_two_batches(
    path: Path, reference: Any, feed: dict[str, np.ndarray], atol: float, dynamic: bool
) -> float:
    """Parity on the whole sample and, when the batch is dynamic, at a second batch size too
    (its first row alone, or the single row twice)."""
    err = check_parity(path, reference, feed, atol)
    if dynamic:
        if sample_batch(feed) > 1:
            other = {k: v[:1] for k, v in feed.items()}
        else:
            other = {k: np.concatenate([v, v]) for k, v in feed.items()}
        err = max(err, check_parity(path, reference, other, atol))
    return err


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
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


def as_tensors(feed: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
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


def run_torch(module: Any, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad(), eval_mode(module):
        try:
            out = module(*as_tensors(feed))
        except Exception as exc:
            raise BadInputError(
                f"the model fails on the sample {_shapes(feed)}: {first_line(exc)}; "
                "check --input-shape or the data"
            ) from exc
    return [t.detach().cpu().numpy() for t in _flatten(out)]


def default_output_names(module: Any, feed: Mapping[str, np.ndarray]) -> list[str]:
    n = len(run_torch(module, feed))
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _reference(module: Any, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if isinstance(module, LoadedModel):
        if module.is_torch:
            module = module.module
        elif module.onnx_path is not None:
            module = module.onnx_path
    if isinstance(module, (str, Path)):
        return _run_onnx(Path(module), feed)
    return run_torch(module, feed)


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # failures surface as exceptions; do not also log them
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise IntegrityError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from exc


def _run_onnx(path: Path, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run a reference ONNX file; one with a fixed batch size B is fed in chunks of B."""
    session = ort_session(path)
    n = sample_batch(feed)
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


def bind_sample(
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


def sample_batch(feed: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feed.values())))


def _shapes(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in feed.items())


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
