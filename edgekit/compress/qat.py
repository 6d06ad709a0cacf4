"""Quantization-aware training (QAT): INT8 fake-quantized fine-tuning with NNCF, to Q/DQ ONNX.

The recipe is NNCF's own: ``nncf.quantize`` inserts fake quantizers (per-channel symmetric INT8
weights, calibrated INT8 activations) and corrects biases; the model is then fine-tuned for a few
epochs at a small learning rate, training the weights and the quantizer ranges together. The
result is still a torch module (computing in float, rounding like INT8). Export it with
:func:`export_qat_onnx`, which writes ``QuantizeLinear``/``DequantizeLinear`` pairs: a Q/DQ INT8
ONNX that ONNX Runtime runs and that OpenVINO (``openvino.convert_model``) turns into INT8 kernels,
with no further post-training quantization.

Measured facts land in ``ctx.records["qat"]``.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.compress.base import Context, Variant, register
from edgekit.errors import BadInputError, EdgekitError, IntegrityError, require
from edgekit.export.qdq import fold_weight_quantizers
from edgekit.io.data import Dataset
from edgekit.training import fit, score
from edgekit.training import to_tensor as _to_tensor

BACKEND = "nncf-torch"
OPSET = 17
_TRAINABLE_TASKS = ("classification", "binary", "regression")
_PARITY_MIN_COSINE = 0.99  # exported Q/DQ graph vs the QAT module on the same sample
_NNCF_HOOKS = "__nncf_hooks"  # the child module in which NNCF keeps the quantizers it inserts

_torch_kernels_installed = False


@dataclass(frozen=True)
class QatConfig:
    """INT8 quantization-aware fine-tuning.

    ``epochs``: fine-tuning epochs after inserting the fake quantizers (0 = NNCF post-training
    quantization only). ``lr``: Adam learning rate of the fine-tuning (small: the model is trained).
    ``calib_size``: calibration samples used to set the initial quantization ranges.
    ``batch_size``: fine-tuning batch size.
    """

    epochs: int = 3
    lr: float = 1e-4
    calib_size: int = 300
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "calib_size", "batch_size"):
            value = getattr(self, name)
            low = 0 if name == "epochs" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BadInputError(f"qat {name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise BadInputError(f"qat lr must be a positive number, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))

    def label(self) -> str:
        """Short name used in reports, e.g. ``"qat:int8:3ep"``."""
        return f"qat:int8:{self.epochs}ep"


class _SequentialRoot(nn.Module):
    """Holds a top-level ``nn.Sequential`` for NNCF.

    NNCF adds its quantizers as a child module of the model it quantizes; a top-level
    ``nn.Sequential`` would then run them as a layer. ``forward`` names its input so that NNCF
    quantizes it too (it hooks named tensor arguments only).
    """

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> Any:
        return self.model(input)


def is_qat_module(module: object) -> bool:
    """True for a module holding NNCF fake quantizers (export it with :func:`export_qat_onnx`)."""
    return isinstance(module, nn.Module) and bool(_quantizers(module))


# --- NNCF plumbing ---------------------------------------------------------------------------


def _use_torch_kernels() -> str:
    """Make NNCF fake-quantize with its pure-torch reference kernels; return which kernels run.

    By default NNCF compiles a C++ extension on the first fake-quantized forward pass (measured
    30-60 s on two cores, more under load, and it needs a C++ compiler and ninja). Its reference
    kernels compute the same function with torch operations and need no build; on small models
    they cost about 1.3x the fine-tuning time. If the compiled kernels are already loaded in this
    process, they are kept.
    """
    global _torch_kernels_installed
    if _torch_kernels_installed:
        return "torch"
    try:
        from nncf.torch.quantization import extensions
        from nncf.torch.quantization.reference import ReferenceBackendType, ReferenceQuantize
    except ImportError:
        extensions = None
    namespace = getattr(extensions, "QuantizedFunctionsCPU", None)
    if namespace is None or not hasattr(namespace, "_loaded_namespace"):
        # A different NNCF layout: let NNCF compile its kernels, without its 60 s time limit.
        os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
        return "nncf-default"
    if namespace._loaded_namespace is not None:
        return "compiled"
    reference = ReferenceQuantize(ReferenceBackendType.TORCH)
    namespace._loaded_namespace = SimpleNamespace(
        Quantize_forward=reference.forward, Quantize_backward=reference.backward
    )
    _torch_kernels_installed = True
    return "torch"


def _quantizers(module: nn.Module) -> list[Any]:
    """The NNCF quantizers in ``module`` (none for a plain module; nncf is then not imported)."""
    if _NNCF_HOOKS not in dict(module.named_children()):
        return []
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    storage = get_hook_storage(module)
    return [m for _, m in storage.named_hooks() if isinstance(m, BaseQuantizer)]


def _set_qdq_export(module: nn.Module) -> int:
    """Make every quantizer export as an ONNX QuantizeLinear/DequantizeLinear pair; count them."""
    from nncf.torch.quantization.layers import QuantizerExportMode

    quantizers = _quantizers(module)
    for q in quantizers:
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    return len(quantizers)


def _calibration_set(data: Dataset, n: int) -> Any:
    """An ``nncf.Dataset`` of single samples (batch 1), each a tuple of inputs in data order."""
    import nncf

    head = data.head(n)
    arrays = [_to_tensor(a) for a in head.inputs.values()]
    return nncf.Dataset([tuple(a[i : i + 1] for a in arrays) for i in range(len(head))])


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: m.weight.detach().clone()
        for name, m in module.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
        and isinstance(m.weight, torch.Tensor)
    }


def _relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """‖w_after − w_before‖ / ‖w_before‖ over all Conv/Linear weights."""
    num = sum(float(torch.sum((after[k] - before[k]) ** 2)) for k in before if k in after)
    den = sum(float(torch.sum(before[k] ** 2)) for k in before)
    return (num / den) ** 0.5 if den else 0.0


def _check_inputs(ctx: Context) -> str:
    task = (
        ctx.task
        if ctx.task != "unknown"
        else (ctx.train.task if ctx.train is not None else "unknown")
    )
    if ctx.train is None or ctx.train.labels is None:
        raise BadInputError(
            "quantization-aware training fine-tunes the model and needs labelled data: "
            "pass --data with a 'y' array"
        )
    if task not in _TRAINABLE_TASKS:
        raise BadInputError(
            "quantization-aware training needs a classification, binary or regression task, "
            f"not {task!r}; give the model's task"
        )
    return task


# --- the technique ----------------------------------------------------------------------------


@register(QatConfig, "model")
def qat(config: QatConfig, module: nn.Module, ctx: Context) -> nn.Module:
    """Insert INT8 fake quantizers into a copy of ``module`` with NNCF, fine-tune it, and return it.

    The returned module must be exported with :func:`export_qat_onnx`; its ONNX is
    already INT8 (Q/DQ). Writes ``ctx.records["qat"]``. The input module is left untouched.
    """
    task = _check_inputs(ctx)
    assert ctx.train is not None
    if isinstance(module, torch.jit.ScriptModule):
        raise BadInputError(
            "quantization-aware training needs the model as Python code, not TorchScript: "
            "give a state_dict with --arch module:factory"
        )
    require("nncf")
    import nncf

    calib = ctx.calib if ctx.calib is not None and len(ctx.calib) else ctx.train
    kernels = _use_torch_kernels()
    model = copy.deepcopy(module).cpu().float().eval()
    if isinstance(model, nn.Sequential):
        model = _SequentialRoot(model)
    metric_fp32 = score(model, ctx.eval, task)
    weights_fp32 = _weights(model)

    start = time.perf_counter()
    dataset = _calibration_set(calib, config.calib_size)
    n_calib = min(config.calib_size, len(calib))
    ctx.progress(f"qat: inserting INT8 fake quantizers (NNCF, {n_calib} calibration samples)")
    try:
        quantized = nncf.quantize(model, dataset, subset_size=n_calib)
    except nncf.InternalError as exc:
        raise EdgekitError(
            f"NNCF could not quantize this model ({exc}); try the post-training --int8 path"
        ) from exc
    seconds_quantize = time.perf_counter() - start
    if not _quantizers(quantized):
        raise EdgekitError(
            "NNCF inserted no quantizer into the model: nothing to fine-tune in INT8"
        )
    quantized.eval()
    metric_ptq = score(quantized, ctx.eval, task)
    weights_ptq = _weights(quantized)

    start = time.perf_counter()
    if config.epochs > 0:
        ctx.progress(f"qat: fine-tuning {config.epochs} epochs at lr {config.lr:g}")
        fit(
            quantized,
            ctx.train,
            task,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            seed=ctx.seed,
            threads=torch.get_num_threads(),
        )
    seconds_finetune = time.perf_counter() - start
    quantized.eval()
    n_quantizers = _set_qdq_export(quantized)
    metric_qat = score(quantized, ctx.eval, task)

    record: dict[str, Any] = {
        "backend": BACKEND,
        "nncf_version": nncf.__version__,
        "kernels": kernels,
        "label": config.label(),
        "epochs": config.epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "calib_size": n_calib,
        "quantizers": n_quantizers,
        "weight_change": {
            "ptq_vs_fp32": _relative_change(weights_fp32, weights_ptq),
            "qat_vs_ptq": _relative_change(weights_ptq, _weights(quantized)),
        },
        "seconds": {"quantize": seconds_quantize, "finetune": seconds_finetune},
    }
    if metric_fp32 is not None and metric_ptq is not None and metric_qat is not None:
        record["metric"] = {
            "name": metric_fp32[0],
            "fp32": metric_fp32[1],
            "ptq": metric_ptq[1],
            "qat": metric_qat[1],
            "data": ctx.eval.name,
        }
    ctx.records["qat"] = record
    if "metric" in record:
        m = record["metric"]
        ctx.progress(
            f"qat: {m['name']} fp32 {m['fp32']:.4g}, after PTQ {m['ptq']:.4g}, "
            f"after QAT {m['qat']:.4g}"
        )
    return quantized


def _outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return [value]


def _run_torch(module: nn.Module, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [
            o.detach().numpy() for o in _outputs(module(*(_to_tensor(v) for v in feed.values())))
        ]


def export_qat_onnx(
    module: nn.Module, out: Path, sample: dict[str, np.ndarray], *, fold_weights: bool = True
) -> Path:
    """Export a QAT module to a Q/DQ INT8 ONNX file with a dynamic batch axis, and check it.

    ``sample`` maps each model input name (in the order of ``forward``'s arguments) to a real
    batch. The file holds ``QuantizeLinear``/``DequantizeLinear`` pairs (opset 17, one file). Its
    ONNX Runtime outputs are compared with the module's at the sample's batch size and at batch 1
    (cosine similarity ≥ 0.99; rounding may differ at a few INT8 steps), else
    :class:`IntegrityError`.
    """
    import onnx

    if not is_qat_module(module):
        raise BadInputError(
            "this module holds no INT8 fake quantizers; apply QatConfig before export_qat_onnx"
        )
    if not sample:
        raise BadInputError("export_qat_onnx needs a sample batch: one array per model input")
    _set_qdq_export(module)
    module.eval()
    names = list(sample)
    trace = dict(sample)
    if len(next(iter(trace.values()))) == 1:
        # A batch of 1 may be traced as a constant shape; trace with two samples instead.
        trace = {k: np.concatenate([v, v]) for k, v in trace.items()}
    n_outputs = len(_run_torch(module, trace))
    output_names = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Q/DQ pairs come from NNCF's symbolics for the TorchScript-based exporter, which torch
        # deprecates; NNCF reads quantizer levels with .item() while tracing (constants: fine).
        warnings.filterwarnings(
            "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            tuple(_to_tensor(v) for v in trace.values()),
            str(out),
            dynamo=False,
            input_names=names,
            output_names=output_names,
            dynamic_axes={n: {0: "batch"} for n in [*names, *output_names]},
            opset_version=OPSET,
        )
    proto = onnx.load(str(out))
    # INT8 weights in the file rather than fp32 weights + QuantizeLinear (4× smaller, same values)
    if fold_weights and fold_weight_quantizers(proto):
        onnx.save(proto, str(out))
    ops = {n.op_type for n in proto.graph.node}
    if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
        raise EdgekitError(
            f"{out}: the exported QAT graph has no QuantizeLinear/DequantizeLinear nodes"
        )
    for feed in (sample, {k: v[:1] for k, v in sample.items()}):
        _check_parity(out, feed, _run_torch(module, feed))
    return out


def _check_parity(path: Path, feed: dict[str, np.ndarray], reference: list[np.ndarray]) -> None:
    import onnxruntime as ort

    from edgekit.benchmarks.accuracy import fidelity

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {
        k: np.ascontiguousarray(v, dtype=np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in feed.items()
    }
    for ref, got in zip(reference, session.run(None, inputs), strict=True):
        fid = fidelity("unknown", ref, got)
        if fid.cosine < _PARITY_MIN_COSINE:
            raise IntegrityError(
                f"{path}: ONNX Runtime output differs from the QAT model (cosine {fid.cosine:.4f} "
                f"< {_PARITY_MIN_COSINE}); the INT8 export is not faithful for this model"
            )


def qat_variants(module: nn.Module, workdir: Path, sample: dict[str, np.ndarray]) -> list[Variant]:
    """The deployable INT8 files of a QAT module: its Q/DQ ONNX (ONNX Runtime) and OpenVINO IR.

    Both are INT8 already: run no post-training quantization on them. The caller prepends the
    model techniques (e.g. ``"qat:int8:3ep"``) to ``techniques``.
    """
    import openvino as ov

    workdir = Path(workdir)
    import onnx

    onnx_path = export_qat_onnx(module, workdir / "model.int8-qat.onnx", sample, fold_weights=False)
    xml = workdir / "openvino" / "model.int8-qat.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    # OpenVINO converts fake-quantized weights (float → Q → DQ) into its INT8 kernels; from
    # pre-folded INT8 weights it chose slower mixed-precision kernels here (0.9× fp32 vs 1.5×).
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    proto = onnx.load(str(onnx_path))
    fold_weight_quantizers(proto)
    onnx.save(proto, str(onnx_path))
    note = "INT8 from quantization-aware training (NNCF fake quantizers exported as Q/DQ)"
    return [
        Variant(
            name="ort-int8-qat",
            runtime="onnxruntime",
            precision="int8",
            path=onnx_path,
            notes=[note],
        ),
        Variant(
            name="ov-int8-qat",
            runtime="openvino",
            precision="int8",
            path=xml,
            notes=[note],
            extra_files=[xml.with_suffix(".bin")],
        ),
    ]
