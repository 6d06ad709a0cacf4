"""What pruning measures and changes on a torch model: prunable layers and their widths, parameter
counts and sparsity, BatchNorm statistics, the layers that produce an output, and fine-tuning
between pruning steps. Distillation's slimmed students use the same facts."""

from __future__ import annotations

import gzip
from typing import Any

import torch
from torch import nn

from edgekit.compress.base import Context
from edgekit.io.data import Dataset
from edgekit.training import fit, score, to_tensor

FINETUNE_BATCH_SIZE = 32
_EXAMPLE_SAMPLES = 2  # real samples used to trace the dependency graph
# Layers whose output width pruning changes (embeddings: their width, never their vocabulary).
ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)


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


def layer_width(m: nn.Module) -> int | None:
    """Output channels of a Conv, output features of a Linear, the width of an Embedding."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return int(m.out_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    if isinstance(m, nn.Embedding):
        return int(m.embedding_dim)
    return None


def channel_widths(module: nn.Module) -> dict[str, int]:
    return {name: w for name, m in module.named_modules() if (w := layer_width(m)) is not None}


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


def statistics_data(ctx: Context) -> Dataset:
    return ctx.train if ctx.train is not None else ctx.calib


def finetune(module: nn.Module, ctx: Context, task: str, epochs: int, lr: float, step: int) -> nn.Module:
    """Fine-tune ``module`` in place on ``ctx.train`` after pruning step ``step``."""
    assert ctx.train is not None
    tuned = fit(
        module,
        ctx.train,
        task,
        epochs=epochs,
        lr=lr,
        batch_size=FINETUNE_BATCH_SIZE,
        seed=ctx.seed + step,
        threads=torch.get_num_threads(),
    )
    if tuned is not module:
        # Pruning state (masks, the dependency graph) refers to ``module``: keep training there.
        module.load_state_dict(tuned.state_dict())
    return module


def recover(
    model: nn.Module, ctx: Context, task: str, *, epochs: int, lr: float, step: int, last: bool, record: dict[str, Any]
) -> tuple[nn.Module, tuple[str, float] | None]:
    """After pruning step ``step``: re-estimate BatchNorm statistics, measure the pruned model (on
    the last step only, before it is fine-tuned), then fine-tune it for ``epochs``."""
    record["batchnorm_recalibrated"] = recalibrate_batchnorm(model, statistics_data(ctx))
    metric = score(model, ctx.eval, task) if last else None
    if epochs > 0:
        model = finetune(model, ctx, task, epochs, lr, step)
    return model, metric


def output_layers(model: nn.Module, graph: Any) -> list[nn.Module]:
    """Layers whose output channels reach a model output (pruning them would change its shape)."""
    import torch_pruning as tp

    found: list[nn.Module] = []
    for m in model.modules():
        if not isinstance(m, ROOT_TYPES) or m not in graph.module2node:
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
