"""The runtime table: every runtime edgekit knows, described once.

Each row names the runtime's :class:`~edgekit.runtimes.base.Runtime` class and, for a runtime that
compress can target, the function that says what the techniques need from it (for the built-in
runtimes, ``edgekit/bindings/<name>.py``, above both the techniques and the runners) (a
:class:`~edgekit.compress.backend.RuntimeBackend`: how INT8 and FP16 are produced for it, which
layers it can keep in float, how its artifacts are inspected). Both are ``"module:attr"`` strings,
imported on first use, so reading the table imports nothing heavy.

**Adding a runtime** (LiteRT, ExecuTorch, …) is one module plus one line::

    # mypkg/litert.py: class LiteRTRuntime(Runtime) and def techniques() -> RuntimeBackend
    register(RuntimeInfo("litert", "mypkg.litert:LiteRTRuntime", package="ai-edge-litert",
                         module="ai_edge_litert", suffixes=(".tflite",), prefix="lite",
                         folder="litert", techniques="mypkg.litert:techniques"))

After that the runtime is accepted by ``get_runtime``, ``--runtime`` of ``compress`` and ``bench``,
listed by ``edgekit targets``' machine check, placed in its bundle folder and measured in the
report like the built-in ones (``tests/fake_runtime.py`` does exactly this).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import BadInputError


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime's metadata."""

    name: str  # the canonical name, as in reports and manifests
    runner: str  # "module:Class" of its Runtime
    package: str  # the pip distribution
    module: str  # the import name, checked with importlib.util.find_spec
    suffixes: tuple[str, ...]  # model files its runner loads
    extra: str | None = None  # the edgekit extra that installs it (None: a core dependency)
    aliases: tuple[str, ...] = ()
    prefix: str = ""  # variant-name prefix ("ort" → ort-int8-static); empty: not a compress target
    folder: str = ""  # bundle sub-folder of its artifacts ("" = the bundle root)
    device_build: bool = False  # the deployable file is built on the device (e.g. a TensorRT engine)
    techniques: str | None = None  # "module:function" returning its RuntimeBackend

    def install_hint(self) -> str:
        return f"pip install 'edgekit[{self.extra}]'" if self.extra else f"pip install {self.package}"


_TABLE: dict[str, RuntimeInfo] = {}


def register(info: RuntimeInfo) -> RuntimeInfo:
    """Add (or replace) a row; its name and aliases may not shadow another runtime's."""
    for word in (info.name, *info.aliases):
        owner = _owner(word)
        if owner is not None and owner != info.name:
            raise BadInputError(f"runtime name {word!r} is already used by {owner}")
    _TABLE[info.name] = info
    return info


def unregister(name: str) -> None:
    """Remove a row (tests that register a runtime of their own)."""
    _TABLE.pop(name, None)


def _owner(word: str) -> str | None:
    for info in _TABLE.values():
        if word == info.name or word in info.aliases:
            return info.name
    return None


def canonical(name: str) -> str:
    """The table name for ``name`` or one of its aliases (``ort``, ``ov``, ``trt``); unknown names
    are returned as given (lower-cased), for the caller's own error."""
    word = name.strip().lower()
    return _owner(word) or word


def rows() -> list[RuntimeInfo]:
    """Every row, in registration order."""
    return list(_TABLE.values())


def names() -> list[str]:
    return sorted(_TABLE)


def find(name: str) -> RuntimeInfo | None:
    """The row of ``name`` (or an alias), None when there is none."""
    return _TABLE.get(canonical(name))


def get(name: str) -> RuntimeInfo:
    """The row of ``name`` (or an alias); unknown names raise :class:`BadInputError` listing the
    known ones."""
    info = find(name)
    if info is None:
        raise BadInputError(f"unknown runtime {name!r}; choose one of: {', '.join(names())}")
    return info


def targets() -> list[str]:
    """The runtimes compress can build variants for (those with techniques), in table order."""
    return [r.name for r in _TABLE.values() if r.techniques is not None]


def prefix(name: str) -> str:
    """The variant-name prefix of ``name`` (the name itself when it has none)."""
    info = find(name)
    return info.prefix if info is not None and info.prefix else name


def folder(name: str) -> str:
    """The bundle sub-folder of ``name``'s artifacts ("" = the bundle root)."""
    info = find(name)
    return info.folder if info is not None else name


ONNXRUNTIME = register(RuntimeInfo(
    "onnxruntime", "edgekit.runtimes.onnxruntime:OnnxRuntime", package="onnxruntime",
    module="onnxruntime", suffixes=(".onnx",), aliases=("ort",), prefix="ort",
    techniques="edgekit.bindings.onnxruntime:techniques",
))  # fmt: skip
OPENVINO = register(RuntimeInfo(
    "openvino", "edgekit.runtimes.openvino:OpenVINORuntime", package="openvino", module="openvino",
    suffixes=(".xml", ".onnx"), aliases=("ov",), prefix="ov", folder="openvino",
    techniques="edgekit.bindings.openvino:techniques",
))  # fmt: skip
TENSORRT = register(RuntimeInfo(
    "tensorrt", "edgekit.runtimes.tensorrt:TensorRTRuntime", package="tensorrt", module="tensorrt",
    suffixes=(".engine", ".plan", ".trt"), extra="tensorrt", aliases=("trt",), prefix="trt",
    folder="tensorrt", device_build=True, techniques="edgekit.bindings.tensorrt:techniques",
))  # fmt: skip
TORCH = register(RuntimeInfo(
    "torch", "edgekit.runtimes.torch_eager:TorchRuntime", package="torch", module="torch",
    suffixes=(".pt2", ".pt", ".pth", ".ts", ".jit"), aliases=("pytorch",), folder="torch",
))  # fmt: skip
