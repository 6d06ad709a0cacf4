"""Inference runtimes behind one contract (:class:`~edgekit.runtimes.base.Runtime`).

``get_runtime("onnxruntime", threads=1).load("model.onnx").run({"x": batch})``. The runtimes and
their metadata are the rows of :mod:`edgekit.runtimes.table` (one line adds a runtime); runtime
modules are imported on first use, and their packages only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from edgekit.registry import import_object
from edgekit.runtimes import table
from edgekit.runtimes.table import canonical, names

ALIASES = {alias: info.name for info in table.rows() for alias in info.aliases}


def get_runtime(name: str, **kw: Any) -> Any:
    """A new, unloaded runtime: ``get_runtime("openvino", threads=2)``; aliases are accepted.
    Unknown names raise :class:`~edgekit.errors.BadInputError` listing the known ones."""
    cls = import_object(table.get(name).runner)
    return cls(**kw)


def runtime_for(name: str, precision: str | None, **kw: Any) -> Any:
    """A new, unloaded runtime that runs a variant of ``precision`` as it was built: a bf16 variant
    is the fp32 file compiled with a bf16 precision hint (OpenVINO); every other precision runs
    as its file says (its compute precision forced to what the file holds)."""
    return get_runtime(name, precision_hint="bf16" if precision == "bf16" else None, **kw)


def available() -> dict[str, bool | str]:
    """``{name: True}`` for each runtime whose package is installed, else ``{name: reason}``.

    Looks packages up with ``importlib.util.find_spec``: nothing heavy is imported. TensorRT also
    needs an NVIDIA GPU; ``edgekit.runtimes.tensorrt.gpu_available()`` checks that.
    """
    status: dict[str, bool | str] = {}
    for info in table.rows():
        if importlib.util.find_spec(info.module) is not None:
            status[info.name] = True
        else:
            status[info.name] = f"the {info.module} package is not installed ({info.install_hint()})"
    return dict(sorted(status.items()))


def technique_backends(names: Any = None) -> dict[str, Any]:
    """What the techniques need from each runtime compress can target (or from those in
    ``names``): runtime name → :class:`~edgekit.compress.backend.RuntimeBackend`, built by the
    function each table row names."""
    rows = [table.get(n) for n in names] if names is not None else table.rows()
    return {r.name: import_object(r.techniques)() for r in rows if r.techniques is not None}


__all__ = ["ALIASES", "available", "canonical", "get_runtime", "names", "runtime_for", "technique_backends"]
