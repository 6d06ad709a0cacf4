"""PyTorch eager on the CPU: a ``torch.export`` program (.pt2), a TorchScript file, or a module
already in memory (:meth:`TorchRuntime.from_module`), run under ``no_grad`` with ``threads``
intra-op threads. It is the reference the exported variants are compared with."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.runtimes.base import BoundCall, Runtime, TensorSpec, precision_name, precision_verdict
from edgekit.runtimes.table import TORCH

EXPORTED_SUFFIX = ".pt2"


class TorchRuntime(Runtime):
    """PyTorch eager, CPU."""

    name = TORCH.name

    def __init__(
        self,
        threads: int = 1,
        precision_hint: str | None = None,
        input_specs: Sequence[TensorSpec] | None = None,
    ) -> None:
        """``input_specs`` names, shapes and dtypes of the inputs of a TorchScript file, which does
        not record them (``specs_from_onnx(exported.onnx)[0]`` gives them); a ``.pt2`` file
        carries its own and ignores it."""
        super().__init__(threads, precision_hint)
        self._module: Any = None
        self._given_specs = list(input_specs) if input_specs is not None else None

    @classmethod
    def from_module(
        cls,
        module: Any,
        input_specs: Sequence[TensorSpec],
        *,
        threads: int = 1,
        output_names: Sequence[str] | None = None,
    ) -> TorchRuntime:
        """A runtime over a ``torch.nn.Module`` in memory (put in eval mode), with the given input
        specs; the output specs are found by one inference on zeros of those shapes."""
        import torch

        if not isinstance(module, torch.nn.Module):
            raise BadInputError(f"from_module needs a torch.nn.Module, got {type(module).__name__}")
        if not input_specs:
            raise BadInputError("from_module needs the module's input specs (name, shape, dtype)")
        rt = cls(threads=threads, input_specs=input_specs)
        rt._module = module.eval()
        rt._inputs = list(input_specs)
        rt._outputs = rt._probe_outputs(output_names)
        rt._format = "module"
        return rt

    # ----------------------------------------------------------------- contract
    def _load(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import torch

        torch.set_num_threads(self.threads)
        if path.suffix.lower() == EXPORTED_SUFFIX:
            return self._load_exported(path)
        return self._load_torchscript(path)

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        specs = self._inputs or []
        args = [torch.from_numpy(_writable(feed[s.name])) for s in specs]
        with torch.no_grad():
            out = self._module(*args)
        return [t.detach().cpu().numpy() for t in _flatten(out)]

    def bind_for_timing(self, feed: Mapping[str, np.ndarray]) -> BoundCall:
        """Input tensors made once over the feed's arrays (``torch.from_numpy`` shares memory);
        ``infer`` is the module call under ``no_grad`` and ``read`` turns its outputs into arrays."""
        import torch

        args = [torch.from_numpy(_writable(feed[s.name])) for s in self._inputs or []]
        module, last = self._module, [None]

        def prepare() -> None:
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

        def infer() -> None:
            with torch.no_grad():
                last[0] = module(*args)

        def read() -> list[np.ndarray]:
            return [t.detach().cpu().numpy() for t in _flatten(last[0])]

        return BoundCall(prepare, infer, read)

    def _describe(self) -> dict[str, Any]:
        module = self._module
        dtypes = Counter(str(p.dtype).removeprefix("torch.") for p in module.parameters())
        dtypes.update(
            str(b.dtype).removeprefix("torch.") for b in module.buffers() if b.is_floating_point()
        )
        compute = Counter({precision_name(k): n for k, n in dtypes.items()})
        return {
            "device": "CPU",
            "format": self._format,
            "parameter_dtypes": dict(dtypes),
            "precision": precision_verdict(compute),
        }

    # ----------------------------------------------------------------- loading
    def _load_exported(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import torch

        program = torch.export.load(str(path))
        signature = program.graph_signature
        nodes = {n.name: n for n in program.graph.nodes}
        inputs = [_spec_from_meta(n, nodes[n].meta.get("val")) for n in signature.user_inputs]
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        values = _flatten_nodes(output_node.args[0])
        outputs = [
            _spec_from_meta(name, node.meta.get("val") if hasattr(node, "meta") else None)
            for name, node in zip(signature.user_outputs, values, strict=False)
        ]
        self._module = program.module()  # a GraphModule here, any nn.Module from from_module
        self._format = "torch.export"
        return inputs, outputs

    def _load_torchscript(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import torch

        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise BadInputError(
                f"{path} is not a TorchScript file ({str(exc).splitlines()[0]}); a state_dict or "
                "pickled module must be loaded into a module first and run with "
                "TorchRuntime.from_module"
            ) from exc
        graph_inputs = [v.debugName().split(".")[0] for v in list(module.graph.inputs())[1:]]
        if self._given_specs is None:
            raise BadInputError(
                f"{path.name} is TorchScript, which does not record input shapes and dtypes; pass "
                f"input_specs for its inputs {graph_inputs} (specs_from_onnx of its ONNX export "
                "gives them) or save the model with torch.export as .pt2"
            )
        if len(self._given_specs) != len(graph_inputs):
            raise BadInputError(
                f"{path.name} takes {len(graph_inputs)} inputs {graph_inputs} but "
                f"{len(self._given_specs)} input specs were given"
            )
        self._module = module.eval()
        self._format = "torchscript"
        self._inputs = list(self._given_specs)
        return list(self._given_specs), self._probe_outputs(None)

    def _probe_outputs(self, names: Sequence[str] | None) -> list[TensorSpec]:
        """Output specs found by one inference on zeros of the input shapes (dynamic axes = 1);
        axis 0 of an output keeps the first input's batch symbol when that one is dynamic."""
        specs = self._inputs or []
        feed = {
            s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], dtype=s.dtype)
            for s in specs
        }
        outs = self._run(feed)
        first = specs[0].shape if specs else ()
        batch = first[0] if first and not isinstance(first[0], int) else None
        result = []
        for i, arr in enumerate(outs):
            shape: list[int | str | None] = list(arr.shape)
            if batch is not None and shape and shape[0] == 1:
                shape[0] = batch
            name = names[i] if names and i < len(names) else f"output_{i}"
            result.append(TensorSpec(name, tuple(shape), arr.dtype.name))
        return result


def _spec_from_meta(name: str, value: Any) -> TensorSpec:
    import torch

    if not isinstance(value, torch.Tensor):
        raise BadInputError(
            f"exported program input/output {name!r} is not a tensor; edgekit feeds tensors only"
        )
    dims = tuple(int(d) if isinstance(d, int) else str(d) for d in value.shape)
    return TensorSpec(name, dims, str(value.dtype).removeprefix("torch."))


def _flatten_nodes(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _flatten_nodes(v)]
    return [value]


def _flatten(out: Any) -> list[Any]:
    """Tensors of a module's output, depth first (tuples, lists and dict values in order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    raise BadInputError(
        f"the model returned a {type(out).__name__}; edgekit reads tensors (or tuples of them)"
    )


def _writable(arr: np.ndarray) -> np.ndarray:
    # torch.from_numpy warns on read-only arrays (e.g. memory-mapped); a copy keeps it quiet.
    return arr if arr.flags.writeable else arr.copy()
