"""FP16: half-precision variants of the exported fp32 ONNX, one per runtime.

- ONNX Runtime: an fp16 ONNX with fp32 inputs and outputs (``keep_io_types``).
- OpenVINO: an IR with fp16 weights.
- TensorRT: the fp32 ONNX itself; the device builds the engine with the FP16 flag.

Which function makes a runtime's variant comes from its backend in ``ctx.backends``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgekit.compress.backend import check_runtimes, graph_step_backends
from edgekit.compress.base import Context, Variant, register
from edgekit.errors import require


@dataclass(frozen=True)
class Fp16Config:
    """Half precision for each runtime in ``runtimes``."""

    runtimes: tuple[str, ...] = ("onnxruntime", "openvino", "tensorrt")

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtimes", tuple(self.runtimes))
        check_runtimes("Fp16Config", self.runtimes)


def ort_fp16(onnx_path: Path | str, out: Path | str) -> Variant:
    """fp16 ONNX for ONNX Runtime (weights and compute in fp16, inputs and outputs stay fp32)."""
    require("onnxruntime")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx_path, out = Path(onnx_path), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out))
    return Variant(
        name="ort-fp16",
        runtime="onnxruntime",
        precision="fp16",
        path=out,
        techniques=["quantize:fp16"],
        notes=[
            "fp16 weights and activations, fp32 inputs and outputs; "
            "ops ONNX Runtime cannot run in fp16 stay fp32",
            "meant for GPU execution providers and fp16-capable ARM CPUs: on x86 CPUs ONNX Runtime "
            "inserts casts to fp32 around most fp16 ops, so expect it to be slower than fp32 there",
        ],
    )


def trt_fp16(onnx_path: Path | str, out: Path | str) -> Variant:
    """The fp32 ONNX copied for TensorRT, to be built on the device with the FP16 flag."""
    onnx_path, out = Path(onnx_path), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out)
    extra: list[Path] = []
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.exists():
        # The ONNX points at its external data file by name: keep that name beside the copy.
        extra.append(out.with_name(data.name))
        shutil.copyfile(data, extra[0])
    return Variant(
        name="trt-fp16",
        runtime="tensorrt",
        precision="fp16",
        path=out,
        techniques=["quantize:fp16"],
        notes=[
            "fp32 ONNX; the engine is built on the device with --fp16 "
            "(TensorRT then picks fp16 kernels layer by layer)"
        ],
        extra_files=extra,
    )


@register(Fp16Config, "graph")
def _fp16(config: Fp16Config, onnx_path: Path, ctx: Context) -> list[Variant]:
    """One fp16 variant per runtime of ``config``; files go to ``ctx.workdir``."""
    onnx_path, _, chosen = graph_step_backends(
        onnx_path, ctx.backends, config.runtimes, lambda b: b.fp16 is not None, "make an FP16 variant"
    )
    workdir = Path(ctx.workdir).resolve()
    variants: list[Variant] = []
    for b in chosen:
        assert b.fp16 is not None
        ctx.progress(f"FP16 ({b.runtime})")
        variants.append(b.fp16(onnx_path, workdir / b.fp16_out))
    return variants
