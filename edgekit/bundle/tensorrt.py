"""The TensorRT part of a bundle: the on-device build script and the engine build.

Engines are tied to the GPU and the TensorRT version, so they are built on the device from the
bundle's ONNX files (explicit Q/DQ INT8, or fp32 with the FP16 flag), with a timing cache.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def build_plan(variant: Any, root: Path, shapes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """How to build one TensorRT variant: precision flags and the optimization profile.

    ``shapes`` (min/opt/max per input, from the data or ``--shapes``) sizes every dynamic axis;
    inputs it leaves out that have only a dynamic batch get batch 1/1/32."""
    from edgekit.runtimes.tensorrt import profile_shapes

    path = root / variant["artifact"] if isinstance(variant, dict) else Path(variant.path)
    precision = variant["precision"] if isinstance(variant, dict) else variant.precision
    # An explicit Q/DQ graph runs INT8 where its Q/DQ nodes say; FP16 is allowed for the rest.
    return {
        "onnx": path,
        "engine": path.with_suffix(".engine"),
        "fp16": precision in ("fp16", "int8", "mixed"),
        "int8": precision in ("int8", "mixed"),
        "shapes": profile_shapes(path, min_batch=1, opt_batch=1, max_batch=32, shapes=shapes),
    }


def write_build_script(root: Path, trt: Sequence[Any], shapes: Mapping[str, Any] | None = None) -> None:
    if not trt:
        return
    from edgekit.runtimes.tensorrt import trtexec_command

    lines = [
        "#!/bin/sh",
        "# Build TensorRT engines ON THE DEVICE (engines are tied to its GPU and TensorRT version).",
        "# 'edgekit build BUNDLE' does the same through the TensorRT Python API.",
        "set -e",
        'cd "$(dirname "$0")"',
    ]
    for c in trt:
        plan = build_plan(c, root, shapes)
        cmd = trtexec_command(
            Path(plan["onnx"].name),
            Path(plan["engine"].name),
            fp16=plan["fp16"],
            int8=plan["int8"],
            timing_cache=Path("timing.cache"),
            shapes=plan["shapes"],
        )
        lines.append(" ".join(shlex.quote(str(x)) for x in cmd))
    script = root / "tensorrt" / "build.sh"
    script.parent.mkdir(exist_ok=True)
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
