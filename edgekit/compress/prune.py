"""Magnitude pruning with fine-tuning: unstructured (zeroed weights), structured (removed channels).

*Unstructured* pruning zeroes the smallest weights of every Conv/Linear layer with
``torch.nn.utils.prune``, fine-tunes with the masks applied and makes the zeros permanent. The
tensors keep their shapes, so it only pays off where zeros are exploited: in a compressed file.
Embedding tables are left dense.

*Structured* pruning removes whole channels and hidden units with Torch-Pruning, following the
dependency graph (residual adds, depthwise convolutions, concatenations, BatchNorm, flatten), so
the returned module and its exported graph are physically smaller. Layers that produce a model
output are never pruned on their output dimension; embedding tables keep their vocabulary. Kept
widths are multiples of 8, which CPU kernels need to actually run faster.

After each pruning step BatchNorm statistics are re-estimated on real samples, then the model is
fine-tuned with :func:`edgekit.training.fit` on ``ctx.train``.

Both kinds may run as an iterative schedule: prune ``amount * k / steps``, fine-tune, for
``k = 1 .. steps``. Measured facts land in ``ctx.records["prune"]``.
"""

from __future__ import annotations

import copy
import gzip
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

import torch
from torch import nn

from edgekit.compress.base import Context, register
from edgekit.errors import BadInputError, EdgekitError
from edgekit.io.data import Dataset
from edgekit.training import fit, score, to_tensor

KINDS = ("structured", "unstructured")
SCOPES = ("global", "layer")
FINETUNE_BATCH_SIZE = 32
_EXAMPLE_SAMPLES = 2  # real samples used to trace the dependency graph
_TRAINABLE_TASKS = ("classification", "binary", "regression")

RUNTIME_BENEFIT = {
    "unstructured": (
        "neither ONNX Runtime nor OpenVINO skips zero weights in dense CPU kernels: "
        "size shrinks only when compressed (gzip); latency unchanged"
    ),
    "structured": "channels physically removed: fewer parameters and FLOPs in the exported graph",
}


# Defaults per kind, measured on the reference models (digits-cnn, edge-cnn, tabular-mlp):
# high unstructured sparsity recovers only when reached in steps with a brisk learning rate.
AUTO: dict[str, dict[str, Any]] = {
    "structured": {"finetune_epochs": 8, "lr": 3e-3, "steps": 1},
    "unstructured": {"finetune_epochs": 5, "lr": 1e-2, "steps": lambda amount: 4 if float(amount) >= 0.8 else 1},
}


class Schedule(NamedTuple):
    epochs: int  # of fine-tuning after each step
    lr: float
    steps: int


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning of Conv/Linear layers followed by fine-tuning.

    ``kind``: ``"unstructured"`` zeroes individual weights; ``"structured"`` removes channels.
    ``amount``: fraction of weights (unstructured) or channels (structured) to remove, in (0, 1).
    ``scope``: ``"global"`` ranks all layers together; ``"layer"`` prunes each layer by ``amount``.
    ``finetune_epochs``: epochs of fine-tuning after each pruning step (0 disables it).
    ``steps``: iterative schedule; step ``k`` prunes to ``amount * k / steps`` then fine-tunes.
    ``ignore``: qualified module names (as in ``named_modules()``) that are never pruned.

    Left unset, ``finetune_epochs``, ``lr`` and ``steps`` take the values that met the accuracy
    targets on the reference models (see :data:`AUTO`): structured 8 epochs at 3e-3 in one step;
    unstructured 5 epochs at 1e-2, in 4 steps from 80 % sparsity up. The filled-in values are what
    ``--save-recipe`` writes.
    """

    kind: str
    amount: float
    scope: str = "global"
    finetune_epochs: int | None = None
    lr: float | None = None
    steps: int | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadInputError(
                f"prune kind {self.kind!r} is unknown; choose one of: {', '.join(KINDS)}"
            )
        if not _is_number(self.amount):
            raise BadInputError(
                f"prune amount must be a number between 0 and 1, got {self.amount!r}"
            )
        if not 0.0 < float(self.amount) < 1.0:
            raise BadInputError(
                f"prune amount {self.amount} is out of range; "
                "give a fraction strictly between 0 and 1 (e.g. 0.5)"
            )
        auto = AUTO[self.kind]
        for name in ("finetune_epochs", "lr", "steps"):
            if getattr(self, name) is None:
                value = auto[name](self.amount) if callable(auto[name]) else auto[name]
                object.__setattr__(self, name, value)
        if self.scope not in SCOPES:
            raise BadInputError(
                f"prune scope {self.scope!r} is unknown; choose one of: {', '.join(SCOPES)}"
            )
        epochs, lr, steps = self.finetune_epochs, self.lr, self.steps
        if not _is_int(epochs) or epochs < 0:
            raise BadInputError(
                f"finetune_epochs must be a non-negative integer, got {self.finetune_epochs!r}"
            )
        if not _is_number(lr) or not lr > 0:
            raise BadInputError(f"fine-tuning lr must be a positive number, got {self.lr!r}")
        if not _is_int(steps) or steps < 1:
            raise BadInputError(f"prune steps must be an integer >= 1, got {self.steps!r}")
        if isinstance(self.ignore, str):
            raise BadInputError(
                f"prune ignore must be a list of module names, got the string {self.ignore!r}; "
                f"write ignore = [{self.ignore!r}]"
            )
        names = tuple(self.ignore)
        if not all(isinstance(n, str) and n for n in names):
            raise BadInputError(
                f"prune ignore must hold module names (non-empty strings), got {self.ignore!r}"
            )
        object.__setattr__(self, "ignore", names)
        object.__setattr__(self, "amount", float(self.amount))
        object.__setattr__(self, "lr", float(lr))

    @property
    def schedule(self) -> Schedule:
        """The fine-tuning schedule, every value filled in (by :data:`AUTO` when left unset)."""
        assert self.finetune_epochs is not None and self.lr is not None and self.steps is not None
        return Schedule(self.finetune_epochs, self.lr, self.steps)

    def label(self) -> str:
        """Short name used in reports, e.g. ``"prune:structured:0.5"``."""
        return f"prune:{self.kind}:{self.amount:g}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --- measurements -----------------------------------------------------------------------------


def prunable_layers(
    module: nn.Module, ignore: tuple[str, ...] = ()
) -> dict[str, nn.modules.conv._ConvNd | nn.Linear]:
    """Conv and Linear layers by qualified name, minus ``ignore``."""
    return {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and name not in ignore
    }


def count_params(module: nn.Module) -> dict[str, int]:
    """Total and non-zero parameter elements."""
    total = sum(p.numel() for p in module.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in module.parameters())
    return {"total": total, "nonzero": nonzero}


def weight_sparsity(module: nn.Module, ignore: tuple[str, ...] = ()) -> float:
    """Fraction of zero weights over the Conv/Linear layers not in ``ignore``."""
    layers = prunable_layers(module, ignore)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight.detach() == 0).sum()) for m in layers.values())
    return zeros / total if total else 0.0


def state_dict_sizes(module: nn.Module) -> dict[str, int]:
    """Bytes of the ``state_dict`` tensors laid end to end, raw and gzip-compressed.

    The raw tensor bytes, not a ``torch.save`` archive: on a small model the archive's own
    headers would hide what the zeros buy.
    """
    raw = b"".join(
        t.detach().cpu().contiguous().numpy().tobytes() for t in module.state_dict().values()
    )
    return {"raw": len(raw), "gzip": len(gzip.compress(raw, compresslevel=9, mtime=0))}


def _width(m: nn.Module) -> int | None:
    """Output channels of a Conv, output features of a Linear, the width of an Embedding."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return int(m.out_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    if isinstance(m, nn.Embedding):
        return int(m.embedding_dim)
    return None


def _channels(module: nn.Module) -> dict[str, int]:
    return {name: w for name, m in module.named_modules() if (w := _width(m)) is not None}


# --- model inputs and metrics -----------------------------------------------------------------


def example_inputs(data: Dataset, n: int = _EXAMPLE_SAMPLES) -> tuple[torch.Tensor, ...]:
    """The first ``n`` real samples of ``data``, one tensor per input in data order.

    That is the positional order in which :func:`edgekit.training.fit` and ``predict`` call a model.
    """
    head = data.head(n)
    return tuple(to_tensor(a) for a in head.inputs.values())


def recalibrate_batchnorm(
    module: nn.Module, data: Dataset, batch_size: int = FINETUNE_BATCH_SIZE
) -> bool:
    """Re-estimate BatchNorm running statistics on ``data`` without a gradient step.

    Removing channels or weights shifts the activations every later BatchNorm normalizes, so its
    stored statistics no longer fit; one pass over real samples restores them. Only the BatchNorm
    layers run in training mode (dropout stays off). Returns False when the model has none.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(data) < 2:
        return False
    modes = [(m, m.training) for m in module.modules()]
    momenta = [(norm, norm.momentum) for norm in norms]
    module.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all batches
        norm.train()
    try:
        with torch.no_grad():
            for feed in data.batches(batch_size):
                if len(next(iter(feed.values()))) >= 2:
                    module(*(to_tensor(a) for a in feed.values()))
    finally:
        for norm, momentum in momenta:
            norm.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return True


def _inputs_for_stats(ctx: Context) -> Dataset:
    return ctx.train if ctx.train is not None else ctx.calib


def _finetune(
    module: nn.Module, config: PruneConfig, ctx: Context, task: str, step: int
) -> nn.Module:
    assert ctx.train is not None
    tuned = fit(
        module,
        ctx.train,
        task,
        epochs=config.schedule.epochs,
        lr=config.schedule.lr,
        batch_size=FINETUNE_BATCH_SIZE,
        seed=ctx.seed + step,
        threads=torch.get_num_threads(),
    )
    if tuned is not module:
        # Pruning state (masks, the dependency graph) refers to ``module``: keep training there.
        module.load_state_dict(tuned.state_dict())
    return module


def _check_inputs(config: PruneConfig, module: nn.Module, ctx: Context) -> str:
    if isinstance(module, torch.jit.ScriptModule) or not isinstance(module, nn.Module):
        raise BadInputError(
            "pruning needs an eager torch module, not TorchScript or ONNX; load the model from its "
            "state_dict with --arch module:factory"
        )
    names = dict(module.named_modules())
    unknown = [n for n in config.ignore if n not in names]
    if unknown:
        known = ", ".join(list(prunable_layers(module))[:12])
        raise BadInputError(
            f"prune ignore names {unknown} are not modules of the model; "
            f"use qualified names such as: {known}"
        )
    if not prunable_layers(module, config.ignore):
        raise BadInputError(
            "the model has no Conv or Linear layer left to prune; remove names from ignore"
        )
    task = ctx.task
    if task == "unknown" and ctx.train is not None:
        task = ctx.train.task
    if config.schedule.epochs > 0:
        if ctx.train is None or ctx.train.labels is None:
            raise BadInputError(
                "pruning with fine-tuning needs labelled data: pass --data with a 'y' array "
                "(or set finetune_epochs = 0)"
            )
        if task not in _TRAINABLE_TASKS:
            raise BadInputError(
                f"fine-tuning needs a classification, binary or regression task, not {task!r}; "
                "give the task of the model or set finetune_epochs = 0"
            )
    return task


# --- the technique ----------------------------------------------------------------------------


@register(PruneConfig, "model")
def prune(config: PruneConfig, module: nn.Module, ctx: Context) -> nn.Module:
    """Prune a copy of ``module`` as ``config`` says, fine-tune it, and return the plain module.

    Writes what was measured to ``ctx.records["prune"]``. The input module is left untouched.
    """
    task = _check_inputs(config, module, ctx)
    model = copy.deepcopy(module).cpu().float()
    model.eval()
    metric_before = score(model, ctx.eval, task)
    params_before = count_params(model)
    sizes_before = state_dict_sizes(model)
    record: dict[str, Any] = {
        "kind": config.kind,
        "label": config.label(),
        "amount": config.amount,
        "scope": config.scope,
        "steps": config.steps,
        "finetune_epochs": config.finetune_epochs,
        "finetune_epochs_total": config.schedule.epochs * config.schedule.steps,
        "ignored": list(config.ignore),
        "params_before": params_before,
    }
    if config.kind == "unstructured":
        model, metric_pruned = _unstructured(config, model, ctx, task, record)
    else:
        model, metric_pruned = _structured(config, model, ctx, task, record)
    model.eval()
    metric_after = score(model, ctx.eval, task)

    params_after = count_params(model)
    sizes_after = state_dict_sizes(model)
    record.update(
        params_after=params_after,
        params_ratio=params_after["total"] / params_before["total"],
        nonzero_params_ratio=params_after["nonzero"] / params_before["nonzero"],
        state_dict_bytes={"before": sizes_before["raw"], "after": sizes_after["raw"]},
        gzip_bytes={"before": sizes_before["gzip"], "after": sizes_after["gzip"]},
        gzip_ratio=sizes_after["gzip"] / sizes_before["gzip"],
        runtime_benefit=RUNTIME_BENEFIT[config.kind],
    )
    if metric_before is not None and metric_after is not None:
        record["metric"] = {
            "name": metric_before[0],
            "before": metric_before[1],
            "after_prune": metric_pruned[1] if metric_pruned else None,
            "after_finetune": metric_after[1],
            "data": ctx.eval.name,
        }
    ctx.records["prune"] = record
    ctx.progress(
        f"{config.label()}: params {params_before['total']} -> {params_after['total']} "
        f"(non-zero {params_after['nonzero']}), sparsity {record['sparsity']:.3f}"
    )
    return model


def _unstructured(
    config: PruneConfig, model: nn.Module, ctx: Context, task: str, record: dict[str, Any]
) -> tuple[nn.Module, tuple[str, float] | None]:
    from torch.nn.utils import prune as tprune

    layers = prunable_layers(model, config.ignore)
    params = [(m, "weight") for m in layers.values()]
    metric_pruned = None
    for k in range(1, config.schedule.steps + 1):
        target = config.amount * k / config.schedule.steps
        # Zeros made permanent by the previous step are the smallest magnitudes, so pruning the
        # whole tensor to ``target`` keeps them and adds the next ones.
        if config.scope == "global":
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=target)
        else:
            for m, name in params:
                tprune.l1_unstructured(m, name, amount=target)
        record["batchnorm_recalibrated"] = recalibrate_batchnorm(model, _inputs_for_stats(ctx))
        if k == config.schedule.steps:
            metric_pruned = score(model, ctx.eval, task)
        if config.schedule.epochs > 0:
            ctx.progress(f"fine-tuning step {k}/{config.steps} at sparsity {target:.2f}")
            model = _finetune(model, config, ctx, task, k)
        for m, name in params:
            tprune.remove(m, name)

    reached = weight_sparsity(model, config.ignore)
    n_weights = sum(m.weight.numel() for m in layers.values())
    # Rounding of amount × size per tensor allows a shortfall of under one weight per layer.
    tolerance = (len(layers) + 1) / n_weights
    if reached + tolerance < config.amount:
        raise EdgekitError(
            f"unstructured pruning reached sparsity {reached:.4f}, "
            f"below the requested {config.amount}"
        )
    record["sparsity"] = reached
    record["layer_sparsity"] = {
        name: float((m.weight.detach() == 0).float().mean()) for name, m in layers.items()
    }
    return model, metric_pruned


_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
_BLOCK = 8  # channel multiple kept by structured pruning (see _round_width)


def output_layers(model: nn.Module, graph: Any) -> list[nn.Module]:
    """Layers whose output channels reach a model output (pruning them would change its shape)."""
    import torch_pruning as tp

    found: list[nn.Module] = []
    for m in model.modules():
        if not isinstance(m, _ROOT_TYPES) or m not in graph.module2node:
            continue
        pruner = graph.get_pruner_of_module(m)
        group = graph.get_pruning_group(m, pruner.prune_out_channels, idxs=[0])
        # The graph is traced back from the outputs: a node nothing consumes produces an output.
        if any(
            dep.target.type == tp.ops.OPTYPE.OUTPUT
            or (graph.is_out_channel_pruning_fn(dep.handler) and not dep.target.outputs)
            for dep, _ in group
        ):
            found.append(m)
    return found


def _round_width(keep: int, width: int) -> int:
    """``keep`` rounded to the nearest multiple of 8 (never above ``width``), when it is >= 8.

    CPU kernels work on blocks of 8 channels (AVX2, and ONNX Runtime's NCHWc layout): a pruned
    edge-cnn with 43-channel layers ran 1.9x *slower* in ONNX Runtime than the unpruned model,
    and 0.55x once its widths were multiples of 8.
    """
    if keep < _BLOCK:
        return max(1, keep)
    rounded = max(_BLOCK, int(keep / _BLOCK + 0.5) * _BLOCK)
    return rounded if rounded <= width else width - width % _BLOCK


def _plan_widths(
    model: nn.Module, example: Any, config: PruneConfig, kept: set[nn.Module]
) -> dict[nn.Module, int]:
    """How many channels each prunable layer keeps.

    ``layer`` scope: ``width * (1 - amount)`` per layer. ``global`` scope: Torch-Pruning ranks all
    channels of the model together on a trial copy, with LAMP-normalized L2 magnitudes (the same
    order as plain magnitude inside a layer, but comparable across layers), which decides each
    layer's share of the budget. Both are then rounded to multiples of 8.
    """
    import torch_pruning as tp

    widths = {m: w for m in model.modules() if m not in kept and (w := _width(m)) is not None}
    if config.scope == "layer":
        target = {m: int(round(w * (1.0 - config.amount))) for m, w in widths.items()}
    else:
        name_of = {m: n for n, m in model.named_modules()}
        trial = copy.deepcopy(model)
        trial_modules = dict(trial.named_modules())
        tp.pruner.BasePruner(
            trial,
            example,
            importance=tp.importance.LAMPImportance(p=2),
            global_pruning=True,
            pruning_ratio=config.amount,
            ignored_layers=[trial_modules[name_of[m]] for m in kept],
            root_module_types=list(_ROOT_TYPES),
        ).step()
        target = {m: _width(trial_modules[name_of[m]]) or w for m, w in widths.items()}
    return {m: _round_width(target[m], w) for m, w in widths.items()}


def _output_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, tuple | list) else [out]
    return [tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)]


def _structured(
    config: PruneConfig, model: nn.Module, ctx: Context, task: str, record: dict[str, Any]
) -> tuple[nn.Module, tuple[str, float] | None]:
    import torch_pruning as tp

    sample = ctx.calib if ctx.calib is not None and len(ctx.calib) else ctx.train
    if sample is None:
        raise BadInputError("structured pruning needs a real input sample: pass --data")
    inputs = example_inputs(sample)
    example: torch.Tensor | tuple[torch.Tensor, ...] = inputs[0] if len(inputs) == 1 else inputs
    one = tuple(t[:1] for t in inputs)
    shapes_before = _output_shapes(model, inputs)
    channels_before = _channels(model)
    macs_before, _ = tp.utils.count_ops_and_params(model, one[0] if len(one) == 1 else one)

    named = dict(model.named_modules())
    name_of = {m: n for n, m in named.items()}
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # tracing a user's model can fail in many ways
        raise BadInputError(
            f"Torch-Pruning could not trace the model's dependency graph ({exc}); "
            "use kind = 'unstructured', or ignore the layers it cannot follow"
        ) from exc
    outputs = output_layers(model, graph)
    kept = {named[n] for n in config.ignore} | set(outputs)
    plan = _plan_widths(model, example, config, kept)
    planned = {m: keep for m, keep in plan.items() if keep < channels_before[name_of[m]]}
    nothing_to_do = BadInputError(
        f"structured pruning would remove no channel: amount {config.amount} is too small for "
        "layers this narrow, or every prunable layer is ignored or produces an output; "
        "raise amount, remove names from ignore or use kind = 'unstructured'"
    )
    if not planned:
        raise nothing_to_do
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        global_pruning=False,
        pruning_ratio=0.0,
        # Half a channel of slack so that width * (1 - ratio) truncates to exactly ``keep``.
        pruning_ratio_dict={
            m: 1.0 - (keep + 0.5) / channels_before[name_of[m]] for m, keep in planned.items()
        },
        iterative_steps=config.schedule.steps,
        ignored_layers=list(kept),
        # Embeddings as roots too: their width (never their vocabulary) is a hidden dimension.
        root_module_types=list(_ROOT_TYPES),
    )
    metric_pruned = None
    for k in range(1, config.schedule.steps + 1):
        model.eval()
        pruner.step()
        shapes = _output_shapes(model, inputs)
        if shapes != shapes_before:
            raise EdgekitError(
                f"structured pruning changed the model's output shapes {shapes_before} -> "
                f"{shapes}; add the output layer's name to ignore"
            )
        if k == config.schedule.steps and _channels(model) == channels_before:
            raise nothing_to_do  # e.g. every planned layer is coupled to an ignored one
        record["batchnorm_recalibrated"] = recalibrate_batchnorm(model, _inputs_for_stats(ctx))
        if k == config.schedule.steps:
            metric_pruned = score(model, ctx.eval, task)
        if config.schedule.epochs > 0:
            ctx.progress(f"fine-tuning step {k}/{config.steps} after removing channels")
            model = _finetune(model, config, ctx, task, k)
    model.eval()

    channels_after = _channels(model)
    pruned_names = [n for n in channels_before if named[n] not in kept]
    macs_after, _ = tp.utils.count_ops_and_params(model, one[0] if len(one) == 1 else one)
    record.update(
        sparsity=weight_sparsity(model, config.ignore),
        removed_channels={
            n: channels_before[n] - channels_after[n]
            for n in channels_before
            if channels_after[n] != channels_before[n]
        },
        channel_sparsity=1.0
        - sum(channels_after[n] for n in pruned_names)
        / max(1, sum(channels_before[n] for n in pruned_names)),
        channels={n: [channels_before[n], channels_after[n]] for n in channels_before},
        output_layers=sorted(name_of[m] for m in outputs),
        macs_per_sample={"before": int(macs_before), "after": int(macs_after)},
    )
    return model, metric_pruned
