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
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

import torch
from torch import nn

from edgekit.compress.base import Context, register
from edgekit.compress.prune_structured import structured
from edgekit.compress.surgery import (
    count_params,
    prunable_layers,
    recover,
    state_dict_sizes,
    weight_sparsity,
)
from edgekit.errors import BadInputError, EdgekitError
from edgekit.training import score

KINDS = ("structured", "unstructured")
SCOPES = ("global", "layer")
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
        model, metric_pruned = structured(config, model, ctx, task, record)
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
        if config.schedule.epochs > 0:
            ctx.progress(f"fine-tuning step {k}/{config.steps} at sparsity {target:.2f}")
        model, metric_pruned = recover(model, ctx, task, epochs=config.schedule.epochs, lr=config.schedule.lr,
                                       step=k, last=k == config.schedule.steps, record=record)
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


