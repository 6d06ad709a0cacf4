"""Structured pruning: whole channels and hidden units removed with Torch-Pruning.

Torch-Pruning follows the dependency graph (residual adds, depthwise convolutions,
concatenations, BatchNorm, flatten), so the returned module and its exported graph are physically
smaller. Layers that produce a model output keep their output width; kept widths are multiples of
8, which CPU kernels need to actually run faster.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgekit.compress.base import Context
from edgekit.compress.surgery import (
    ROOT_TYPES,
    channel_widths,
    example_inputs,
    layer_width,
    output_layers,
    recover,
    weight_sparsity,
)
from edgekit.errors import BadInputError, EdgekitError

if TYPE_CHECKING:
    from edgekit.compress.prune import PruneConfig


_BLOCK = 8  # channel multiple kept by structured pruning (see _round_width)


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

    widths = {m: w for m in model.modules() if m not in kept and (w := layer_width(m)) is not None}
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
            root_module_types=list(ROOT_TYPES),
        ).step()
        target = {m: layer_width(trial_modules[name_of[m]]) or w for m, w in widths.items()}
    return {m: _round_width(target[m], w) for m, w in widths.items()}


def _output_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, tuple | list) else [out]
    return [tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)]


def structured(
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
    channels_before = channel_widths(model)
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
        root_module_types=list(ROOT_TYPES),
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
        if k == config.schedule.steps and channel_widths(model) == channels_before:
            raise nothing_to_do  # e.g. every planned layer is coupled to an ignored one
        if config.schedule.epochs > 0:
            ctx.progress(f"fine-tuning step {k}/{config.steps} after removing channels")
        model, metric_pruned = recover(model, ctx, task, epochs=config.schedule.epochs, lr=config.schedule.lr,
                                       step=k, last=k == config.schedule.steps, record=record)
    model.eval()

    channels_after = channel_widths(model)
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
