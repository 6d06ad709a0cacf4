"""Inference runtimes behind one contract (:class:`~edgekit.runtimes.base.Runtime`).

``get_runtime("onnxruntime", threads=1).load("model.onnx").run({"x": batch})``. Runtime modules
are imported on first use, and their packages only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from edgekit.registry import LazyRegistry

_REGISTRY: LazyRegistry[Any] = LazyRegistry(
    "runtime",
    {
        "onnxruntime": "edgekit.runtimes.onnxruntime:OnnxRuntime",
        "openvino": "edgekit.runtimes.openvino:OpenVINORuntime",
        "tensorrt": "edgekit.runtimes.tensorrt:TensorRTRuntime",
        "torch": "edgekit.runtimes.torch_eager:TorchRuntime",
    },
)
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "pytorch": "torch"}
# import name, pip extra (None when a core dependency)
_PACKAGES: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("onnxruntime", None),
    "openvino": ("openvino", None),
    "tensorrt": ("tensorrt", "tensorrt"),
    "torch": ("torch", None),
}


def canonical(name: str) -> str:
    """The registry name for ``name`` or one of its aliases (``ort``, ``ov``, ``trt``)."""
    return ALIASES.get(name.strip().lower(), name.strip().lower())


def names() -> list[str]:
    """Every runtime edgekit knows, whether installed or not."""
    return _REGISTRY.names()


def get_runtime(name: str, **kw: Any) -> Any:
    """A new, unloaded runtime: ``get_runtime("openvino", threads=2)``; aliases are accepted.
    Unknown names raise :class:`~edgekit.errors.BadInputError` listing the known ones."""
    cls = _REGISTRY.get(canonical(name))
    return cls(**kw)


def available() -> dict[str, bool | str]:
    """``{name: True}`` for each runtime whose package is installed, else ``{name: reason}``.

    Looks packages up with ``importlib.util.find_spec``: nothing heavy is imported. TensorRT also
    needs an NVIDIA GPU; ``edgekit.runtimes.tensorrt.gpu_available()`` checks that.
    """
    status: dict[str, bool | str] = {}
    for name in names():
        module, extra = _PACKAGES[name]
        if importlib.util.find_spec(module) is not None:
            status[name] = True
        else:
            how = f"pip install 'edgekit[{extra}]'" if extra else f"pip install {module}"
            status[name] = f"the {module} package is not installed ({how})"
    return status


__all__ = ["ALIASES", "available", "canonical", "get_runtime", "names"]
