"""The candidates a search can build, and how one candidate is built.

A candidate is a :class:`Spec`: an optional torch-level step (structured pruning at a ratio), a
graph-level technique (fp32, fp16, bf16 where the CPU computes it, INT8 static, INT8 dynamic, the
budget-search mixed INT8; on a graph with attention blocks also INT8 static with the default
scheme, ``int8-cnn``, beside the transformer scheme that ``int8-static`` picks there) and a runtime.
Peer pipelines (what a user would run by hand with the stock tools' defaults) are specs too, so
they are built and measured in the same run. :func:`build` runs in a worker process (a process
pool or a Ray task): it takes only picklable inputs and returns a plain dict.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.io.data import Dataset
from edgekit.runtimes.table import ONNXRUNTIME, OPENVINO, TORCH

ORT, OV, PT = ONNXRUNTIME.name, OPENVINO.name, TORCH.name
SHORT = {ORT: ONNXRUNTIME.prefix, OV: OPENVINO.prefix, PT: PT}
GRAPH = ("fp32", "fp16", "bf16", "int8-dynamic", "int8-static", "int8-cnn", "int8-mixed")  # cheapest first
RUNTIMES_OF = {
    "fp32": (ORT, OV),
    "fp16": (ORT, OV),
    "bf16": (OV,),
    "int8-dynamic": (ORT,),
    "int8-static": (ORT, OV),
    "int8-cnn": (ORT, OV),
    "int8-mixed": (ORT, OV),
}
PRECISION = {
    "fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8-dynamic": "int8", "int8-static": "int8", "int8-cnn": "int8",
    "int8-mixed": "mixed",
}  # fmt: skip
# The INT8 scheme each graph technique asks for ("auto": the transformer scheme on attention graphs).
SCHEME = {"int8-cnn": "cnn"}
PEERS = {
    "peer:ort-quantize_static": ORT,
    "peer:ort-quantize_dynamic": ORT,
    "peer:nncf-quantize-openvino": OV,
    "peer:torch-eager-fp32": PT,
}


@dataclass(frozen=True)
class Spec:
    graph: str  # one of GRAPH, or a PEERS key
    runtime: str
    prune: float | None = None  # structured channel-pruning ratio applied before export
    distill: float | None = None  # width of the distilled student (slimmed from the model) used instead
    prune_lr: float | None = None  # fine-tuning learning rate after pruning (None: the compress default)

    @property
    def stem(self) -> str | None:
        """The torch-level step this candidate starts from (``prune0.3``, ``distill0.45``), if any."""
        if self.distill:
            return f"distill{self.distill:g}"
        if not self.prune:
            return None
        return f"prune{self.prune:g}" + (f"-lr{self.prune_lr:g}" if self.prune_lr else "")

    @property
    def peer(self) -> bool:
        return self.graph in PEERS

    @property
    def name(self) -> str:
        if self.peer:
            return self.graph
        prefix = f"{self.stem}+" if self.stem else ""
        return f"{prefix}{self.graph}@{SHORT.get(self.runtime, self.runtime)}"

    @property
    def root(self) -> bool:
        """The fp32 ONNX Runtime candidate of a (pruned, distilled or not) model: the source of its graph variants."""
        return self.graph == "fp32" and self.runtime == ORT

    @property
    def stem_root(self) -> Spec:
        return Spec("fp32", "onnxruntime", self.prune, self.distill, self.prune_lr)

    @property
    def parents(self) -> tuple[str, ...]:
        """Candidates that must pass the gate before this one is built ("never extend a failure")."""
        if self.peer or self.stem is None or self.root:
            return ()
        return (self.stem_root.name, Spec(self.graph, self.runtime).name)

    @property
    def precision(self) -> str:
        if self.peer:
            return "fp32" if self.runtime == PT else "int8"
        return PRECISION[self.graph]

    @property
    def techniques(self) -> list[str]:
        if self.peer:
            return [self.graph]
        out = [f"prune:structured:{self.prune:g}"] if self.prune else []
        if self.prune and self.prune_lr:
            out.append(f"finetune:lr{self.prune_lr:g}")
        if self.distill:
            out.append(f"distill:width{self.distill:g}")
        if self.graph != "fp32":
            out.append("quantize:" + ("int8-static" if self.graph in ("int8-mixed", "int8-cnn") else self.graph))
        if self.graph in SCHEME:
            out.append(f"scheme:{SCHEME[self.graph]}")
        return out


def space(
    runtimes: tuple[str, ...],
    *,
    prune_ratios: tuple[float, ...],
    fp16: bool,
    mixed: bool,
    peers: bool,
    distill_widths: tuple[float, ...] = (),
    prune_lrs: tuple[float | None, ...] = (None,),
    attention: bool = False,
    bf16: bool = False,
) -> tuple[list[Spec], list[Spec]]:
    """(level 0, level 1) specs. Level 0 needs only the source model (cheap first: graph techniques,
    then pruning, then distillation, which trains a student); level 1 combines each pruned or
    distilled model with each graph technique and is built only for parents that passed the gate.
    ``attention`` (the graph has attention blocks) adds ``int8-cnn``: which scheme is faster and
    faithful enough depends on the model and the CPU, so both are measured. ``bf16`` (the CPU
    computes bf16 natively) adds the fp32 IR run in bf16 on OpenVINO."""
    wanted = {"fp16": fp16, "bf16": bf16, "int8-mixed": mixed, "int8-cnn": attention}
    graphs = [g for g in GRAPH if wanted.get(g, True)]
    # fp32 on ONNX Runtime is the gate's reference (and the source of every pruned graph), so it is
    # built whatever the target; the winner is chosen among the target's runtimes only.
    base = [Spec(g, rt) for g in graphs for rt in RUNTIMES_OF[g] if rt in runtimes or Spec(g, rt).root]
    roots = [Spec("fp32", ORT, r, prune_lr=lr) for r in prune_ratios for lr in prune_lrs]
    roots += [Spec("fp32", ORT, distill=w) for w in distill_widths]
    level0 = base + roots
    if peers:
        level0 += [Spec(p, rt) for p, rt in PEERS.items()]
    level1 = [Spec(s.graph, s.runtime, r.prune, r.distill, r.prune_lr) for r in roots for s in base if not s.root]
    return level0, level1


@dataclass
class Job:
    """Everything a worker needs to build one candidate (all picklable)."""

    spec: Spec
    out_dir: Path
    source_onnx: Path  # the fp32 ONNX this candidate starts from (pruned roots: the unpruned one)
    baseline_onnx: Path
    calib: Dataset
    eval: Dataset
    train: Dataset | None
    task: str
    budget: Any
    seed: int
    threads: int
    model_path: Path
    load_options: dict[str, Any] = field(default_factory=dict)


def build(job: Job) -> dict[str, Any]:
    """Build ``job.spec`` into ``job.out_dir``; ``{"ok": True, "path", "extra_files", "notes",
    "build_s"}`` or ``{"ok": False, "error"}``. Never raises: a failure is a result of the search."""
    start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(job.threads)
        job.out_dir.mkdir(parents=True, exist_ok=True)
        path, extra, notes = _build(job)
        return {
            "ok": True,
            "path": str(path),
            "extra_files": [str(p) for p in extra],
            "notes": notes,
            "build_s": round(time.perf_counter() - start, 2),
        }
    except Exception as exc:  # noqa: BLE001 — recorded in the report with its reason
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {first}"[:400],
            "trace": traceback.format_exc(limit=4)[-1500:],
            "build_s": round(time.perf_counter() - start, 2),
        }


def _context(job: Job, budget: Any) -> Any:
    from edgekit.compress.base import Context

    return Context(
        workdir=job.out_dir,
        calib=job.calib,
        eval=job.eval,
        train=job.train,
        seed=job.seed,
        task=job.task,
        budget=budget,
        baseline=job.baseline_onnx,
        threads=job.threads,
        backends=_backends(),
    )


def _backends() -> Any:
    from edgekit.benchmarks.backends import for_techniques

    return for_techniques()


def _build(job: Job) -> tuple[Path, list[Path], list[str]]:
    spec = job.spec
    if spec.peer:
        from edgekit.search import peers

        return peers.build(spec.graph, job)
    if spec.root and spec.stem:
        return _torch_root(job)
    if spec.graph == "fp32" and spec.runtime == ORT:
        return job.source_onnx, [], []
    if spec.graph in ("fp32", "bf16"):
        from edgekit.compress.quantize_ov import ov_bf16_ir, ov_fp32_ir

        v = (ov_bf16_ir if spec.graph == "bf16" else ov_fp32_ir)(job.source_onnx, job.out_dir / "model.xml")
        return v.path, list(v.extra_files), list(v.notes)
    from edgekit.compress.base import handler_for

    if spec.graph == "fp16":
        from edgekit.compress.fp16 import Fp16Config

        config: Any = Fp16Config(runtimes=(spec.runtime,))
    else:
        from edgekit.compress.quantize import Int8Config

        mode = "dynamic" if spec.graph == "int8-dynamic" else "static"
        config = Int8Config(runtimes=(spec.runtime,), mode=mode, scheme=SCHEME.get(spec.graph, "auto"))
    ctx = _context(job, job.budget if spec.graph == "int8-mixed" else None)
    _, fn = handler_for(config)
    # The runtime's own variant comes first; a transformer graph adds ORT dynamic MatMul/Gemm INT8 (the
    # int8-dynamic candidate already) and a bf16-capable CPU an OpenVINO bf16 variant after it.
    variant = fn(config, job.source_onnx, ctx)[0]
    notes = list(variant.notes)
    if spec.graph == "int8-mixed":
        kept = (ctx.records.get("budget") or {}).get("variants", {})
        if kept:
            notes.append(f"accuracy-budget search: {kept}")
    return variant.path, list(variant.extra_files), notes


def _torch_root(job: Job) -> tuple[Path, list[Path], list[str]]:
    """Structured pruning (with its fine-tuning) or distillation into a slimmed student of the
    torch model, exported to fp32 ONNX."""
    import copy

    import torch

    from edgekit.compress.base import handler_for
    from edgekit.export.onnx import export_onnx
    from edgekit.io.models import load_model
    from edgekit.search.rebuild import torch_step

    loaded = load_model(job.model_path, **job.load_options)
    if loaded.module is None or not loaded.eager:
        raise ValueError(f"{job.spec.stem} needs the model as a torch module (reference model, --arch, pickle)")
    config = torch_step(job.spec)
    ctx = _context(job, None)
    _, fn = handler_for(config)
    torch.manual_seed(job.seed)
    module = fn(config, copy.deepcopy(loaded.module), ctx)
    out = job.out_dir / "model.fp32.onnx"
    export_onnx(module, out, sample=job.eval.head(16).inputs)
    notes = []
    record = ctx.records.get("prune") or {}
    if record.get("runtime_benefit"):
        notes.append(f"pruning: {record['runtime_benefit']}")
    record = ctx.records.get("distill") or {}
    if record:
        keys = ("teacher_metric", "student_kd_metric", "student_alone_metric")
        notes.append("distillation: " + ", ".join(f"{k} {record[k]:.4g}" for k in keys if record.get(k) is not None))
    return out, [], notes
