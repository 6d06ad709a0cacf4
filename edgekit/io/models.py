"""Load a model from any supported file into one :class:`LoadedModel`.

Formats are recognised by content, not by extension:

- TorchScript (``torch.jit.save``): a zip archive with ``code/`` and ``constants.pkl``;
- a ``torch.export`` program (``torch.export.save``, ``.pt2``): a zip with ``archive_format``;
- ``torch.save`` output (a zip archive with ``data.pkl``, or a bare pickle): a ``state_dict``
  (needs ``arch``) or a whole pickled module (needs ``trust_pickle``);
- ONNX: a protobuf ``ModelProto``.

Only a pickled module can run code from the file, so it is never unpickled without
``trust_pickle=True``; every other ``torch.load`` here uses ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import BadInputError, error_line
from edgekit.io.atomic import sha256_file
from edgekit.io.inputs import META_FILE, InputSpec, forward_input_names, inputs_from_meta, parse_input_shapes
from edgekit.registry import import_object

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "exported_program", "onnx", "state_dict", "pickle")
_SAVE_HINT = "save it with torch.jit.save, torch.export.save or torch.onnx.export"


@dataclass
class LoadedModel:
    """A loaded model file: a torch module (or an ONNX path) and what is known of its inputs."""

    path: Path
    format: str
    sha256: str
    module: torch.nn.Module | None = None
    eager: bool = False
    onnx_path: Path | None = None
    inputs: list[InputSpec] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        """True when :attr:`module` holds a torch module (every format but ONNX)."""
        return self.module is not None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
) -> LoadedModel:
    """Load a model file of any supported format (see the module docstring).

    ``arch`` (``"module:factory"``) builds the module a ``state_dict`` is loaded into; given with a
    TorchScript file it rebuilds the eager module from the scripted weights. ``trust_pickle``
    allows unpickling a whole pickled module, which runs code from the file. ``input_shape``
    (see :func:`parse_input_shapes`) sets the inputs when the file does not carry them.
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"model file {p} does not exist; check the path")
    if p.is_dir():
        raise BadInputError(f"{p} is a directory; pass a model file ({_SAVE_HINT})")
    if p.stat().st_size == 0:
        raise BadInputError(f"model file {p} is empty; {_SAVE_HINT}")

    kind = _sniff(p)
    if kind == "torchscript":
        loaded = _load_torchscript(p, arch)
    elif kind == "exported_program":
        loaded = _load_exported_program(p)
    elif kind == "torch_save":
        loaded = _load_torch_save(p, arch, trust_pickle)
    else:
        loaded = _load_onnx(p)

    if input_shape:
        known = loaded.input_names or forward_input_names(loaded.module)
        loaded.inputs = parse_input_shapes(input_shape, known_names=known)
    return loaded


def _sniff(p: Path) -> str:
    """The container kind: "torchscript", "exported_program", "torch_save" or "onnx"."""
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise BadInputError(f"{p} is a damaged zip archive ({exc}); {_SAVE_HINT}") from exc
        tails = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "archive_format" in tails or any(t.startswith("models/") for t in tails):
            return "exported_program"
        if "data.pkl" in tails:
            return "torch_save"
        raise BadInputError(f"{p} is a zip archive but not a PyTorch or ONNX model; {_SAVE_HINT}")
    with open(p, "rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80":  # a pickle stream: torch.save with the legacy (non-zip) format
        return "torch_save"
    return "onnx"


def _base(p: Path, fmt: str) -> LoadedModel:
    return LoadedModel(path=p, format=fmt, sha256=sha256_file(p))


# -- TorchScript ------------------------------------------------------------------------------


def _load_torchscript(p: Path, arch: str | None) -> LoadedModel:
    import torch

    extra = {META_FILE: ""}
    try:
        scripted = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # RuntimeError for corrupt or version-incompatible archives
        raise BadInputError(f"cannot load TorchScript file {p}: {_first_line(exc)}") from exc
    scripted.eval()
    meta = _parse_meta(extra.get(META_FILE), p)
    loaded = _base(p, "torchscript")
    loaded.meta = meta
    loaded.module, loaded.eager = scripted, False
    loaded.inputs = inputs_from_meta(meta, p)

    factory = arch or _shipped_factory(meta, p)
    if factory:
        try:
            eager = _build(factory, {})
            _load_state(eager, scripted.state_dict(), p, factory)
        except BadInputError as exc:
            if arch:  # asked for explicitly: say why it did not work
                raise
            # A reference file from another edgekit version: the scripted module still works.
            log.warning(
                "using the TorchScript module of %s: cannot rebuild it eagerly (%s)", p, exc
            )
        else:
            loaded.module, loaded.eager = eager.eval(), True
    return loaded


# The factories of edgekit's reference models. edgekit.zoo sits above io (its data sets are io
# Datasets), so io lists them instead of importing the zoo; tests/test_zoo.py checks the list.
SHIPPED_FACTORIES = frozenset(
    f"edgekit.zoo.models:{name}"
    for name in (
        "digits_cnn", "edge_cnn", "house_regressor", "tabular_mlp", "text_classifier", "text_encoder",
        "text_recognizer",
    )
)


def shipped_factories() -> frozenset[str]:
    """The factories a model file may name: those of edgekit's own reference models."""
    return SHIPPED_FACTORIES


def _shipped_factory(meta: Mapping[str, Any], p: Path) -> str | None:
    """The factory named in a file's metadata, if edgekit ships it. A file never decides what code
    runs: any other factory, or arguments for one, is refused (the user names it with --arch)."""
    factory = meta.get("factory")
    if factory is None:
        return None
    if not isinstance(factory, str) or factory not in shipped_factories() or meta.get("factory_kwargs"):
        raise BadInputError(
            f"{p}: its {META_FILE} names the factory {str(factory)[:80]!r}"
            f"{' with arguments' if meta.get('factory_kwargs') else ''}, which is not one edgekit ships as is; "
            "a model file may not choose code to run — pass --arch module:factory on the command line if you trust it"
        )
    return factory


def _parse_meta(text: str | bytes | None, p: Path) -> dict[str, Any]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise BadInputError(
            f"{p}: its {META_FILE} is not valid JSON ({exc}); re-save the model"
        ) from exc
    if not isinstance(meta, dict):
        raise BadInputError(f"{p}: its {META_FILE} is not a JSON object; re-save the model")
    return meta


# -- torch.export -----------------------------------------------------------------------------


def _load_exported_program(p: Path) -> LoadedModel:
    import torch

    try:
        program = torch.export.load(str(p))
    except Exception as exc:
        raise BadInputError(
            f"cannot load torch.export program {p}: {_first_line(exc)}; "
            "re-save it with torch.export.save using this torch version"
        ) from exc
    module = program.module()
    # Its train/eval behaviour is baked into the graph and .eval() raises; clear the flag directly
    # so that exporters and callers do not take it for a module in training mode.
    for sub in module.modules():
        sub.training = False
    loaded = _base(p, "exported_program")
    loaded.module, loaded.eager = module, False
    loaded.inputs = _exported_program_inputs(program)
    return loaded


def _exported_program_inputs(program: Any) -> list[InputSpec]:
    import torch

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in program.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val") if name in placeholders else None
        if not isinstance(val, torch.Tensor) or val.dim() == 0:
            continue
        dims = tuple(d if isinstance(d, int) else None for d in val.shape[1:])
        specs.append(InputSpec(name=name, shape=dims, dtype=_numpy_dtype(val.dtype)))
    return specs


def _numpy_dtype(dtype: torch.dtype) -> str:
    import torch

    try:
        return torch.empty(0, dtype=dtype).numpy().dtype.name
    except TypeError:  # bfloat16 and friends have no numpy counterpart
        return str(dtype).removeprefix("torch.")


# -- torch.save -------------------------------------------------------------------------------


def _load_torch_save(p: Path, arch: str | None, trust_pickle: bool) -> LoadedModel:
    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any object that is not a tensor or a plain container.
        if not trust_pickle:
            raise BadInputError(
                f"{p} is a pickled module; loading it runs code from the file. If you trust "
                "it, pass --trust-pickle (or save it with torch.jit.save / torch.export)"
            ) from exc
        return _load_pickle(p)
    except Exception as exc:
        raise BadInputError(
            f"cannot read {p} with torch.load: {_first_line(exc)}; {_SAVE_HINT}"
        ) from exc

    state = _find_state_dict(obj)
    if state is None:
        raise BadInputError(
            f"{p} holds a {type(obj).__name__}, not a state_dict or a model; {_SAVE_HINT}"
        )
    if not arch:
        raise BadInputError(
            f"{p} is a state_dict; pass --arch module:factory (a function that builds the model)"
        )
    module = _build(arch, {})
    _load_state(module, state, p, arch)
    loaded = _base(p, "state_dict")
    loaded.module, loaded.eager = module.eval(), True
    return loaded


def _find_state_dict(obj: Any) -> dict[str, Any] | None:
    """The tensors of a ``state_dict``, also inside a checkpoint (``{"state_dict": ...}``)."""
    import torch

    def is_state(d: Any) -> bool:
        return (
            isinstance(d, Mapping)
            and bool(d)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
        )

    if is_state(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if is_state(obj.get(key)):
                return dict(obj[key])
    return None


def _load_pickle(p: Path) -> LoadedModel:
    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as exc:  # usually the model's class cannot be imported here
        raise BadInputError(
            f"cannot unpickle {p}: {_first_line(exc)}; the model's classes must be importable "
            "(or save it with torch.jit.save / torch.export)"
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise BadInputError(
            f"{p} holds a {type(obj).__name__}, not a torch.nn.Module; {_SAVE_HINT}"
        )
    loaded = _base(p, "pickle")
    loaded.module = obj.eval()
    loaded.eager = not isinstance(obj, torch.jit.ScriptModule)
    return loaded


def _build(factory: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    import torch

    builder = import_object(factory)
    try:
        module = builder(**kwargs)
    except Exception as exc:
        raise BadInputError(
            f"{factory}() failed: {_first_line(exc)}; it must build the model with no arguments"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(
            f"{factory}() returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def _load_state(module: torch.nn.Module, state: Mapping[str, Any], p: Path, arch: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise BadInputError(
            f"the weights in {p} do not fit {arch}: {'; '.join(parts)}; "
            "pass the factory that built them"
        )
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:  # shapes differ
        raise BadInputError(f"the weights in {p} do not fit {arch}: {_first_line(exc)}") from exc


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown} (+{len(keys) - n} more)" if len(keys) > n else shown


# -- ONNX -------------------------------------------------------------------------------------


def _load_onnx(p: Path) -> LoadedModel:
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # google.protobuf DecodeError for anything that is not a ModelProto
        raise BadInputError(
            f"{p} is not a model file edgekit can read (not PyTorch, not ONNX); {_SAVE_HINT}"
        ) from exc
    if not model.graph.node or not model.opset_import:
        raise BadInputError(
            f"{p} is not a model file edgekit can read (not PyTorch, not ONNX); {_SAVE_HINT}"
        )
    try:
        onnx.checker.check_model(str(p))  # by path: works for models with external data too
    except Exception as exc:
        raise BadInputError(f"{p} is not a valid ONNX model: {_first_line(exc)}") from exc
    loaded = _base(p, "onnx")
    loaded.onnx_path = p
    loaded.inputs = onnx_inputs(model)
    meta = {prop.key: prop.value for prop in model.metadata_props}
    if META_FILE in meta:
        loaded.meta = _parse_meta(meta[META_FILE], p)
    return loaded


def onnx_inputs(model: Any) -> list[InputSpec]:
    """The real inputs of an ``onnx.ModelProto`` (initializers excluded), first axis = batch."""
    from onnx import helper

    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in ttype.shape.dim
        ]
        specs.append(
            InputSpec(
                name=value.name,
                shape=tuple(dims[1:]),
                dtype=helper.tensor_dtype_to_np_dtype(ttype.elem_type).name,
            )
        )
    return specs


def _first_line(exc: BaseException) -> str:
    return error_line(exc)[:300]


__all__ = [
    "FORMATS",
    "META_FILE",
    "SHIPPED_FACTORIES",
    "InputSpec",
    "LoadedModel",
    "forward_input_names",
    "load_model",
    "onnx_inputs",
    "parse_input_shapes",
    "shipped_factories",
]
