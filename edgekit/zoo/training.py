"""Training and saving of the reference models.

Image, tabular and text classifiers train with the generic loop :func:`edgekit.training.fit`;
the text encoder and the text recogniser with their own losses here. torch is imported inside
the functions so that importing :mod:`edgekit.zoo` stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.io.inputs import META_FILE
from edgekit.training import Progress, fit, torch_settings
from edgekit.zoo.datasets import load_data
from edgekit.zoo.evaluation import evaluate

if TYPE_CHECKING:
    import torch

_META_MEMBER = re.compile(r"[^/]+/extra/" + re.escape(META_FILE))


@dataclass(frozen=True)
class Recipe:
    """How a reference model is trained (Adam, cosine-decayed learning rate)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    shift: float = 0.0  # random translation of the training images, in pixels (0 = none)


RECIPES: dict[str, Recipe] = {
    "digits-cnn": Recipe(epochs=20, lr=3e-3, batch_size=32, shift=1.5),
    "tabular-mlp": Recipe(epochs=40, lr=3e-3, batch_size=32, weight_decay=1e-3),
    "house-regressor": Recipe(epochs=60, lr=3e-3, batch_size=32, weight_decay=1e-3),
    "text-classifier": Recipe(epochs=12, lr=5e-3, batch_size=32),
    "edge-cnn": Recipe(epochs=6, lr=3e-3, batch_size=32),
    "text-encoder": Recipe(epochs=3, lr=1e-3, batch_size=32, weight_decay=0.01),
    "text-recognizer": Recipe(epochs=7, lr=5e-3, batch_size=32),
}
SUPCON_TEMPERATURE = 0.1


@dataclass
class TrainResult:
    """A trained reference model (in eval mode) and its held-out metrics."""

    name: str
    module: torch.nn.Module
    metrics: dict[
        str, float
    ]  # on the held-out test split, from edgekit.zoo.evaluation.evaluate
    metric: str  # the primary metric's name
    value: float  # the primary metric's value
    seed: int
    seconds: float  # wall time of building and fitting the model


def _prepare(name: str, module: torch.nn.Module, train: Dataset) -> None:
    """Data-derived constants a model keeps in its state_dict (the regressor's target scale)."""
    import torch

    from edgekit.zoo.models import HouseRegressor

    if isinstance(module, HouseRegressor) and train.labels is not None:
        y = np.asarray(train.labels, dtype=np.float64)
        with torch.no_grad():
            module.target_mean.fill_(float(y.mean()))
            module.target_std.fill_(float(y.std()) or 1.0)


def _supcon_loss(emb: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of L2-normalised embeddings ``(B, D)``:
    each sample is pulled towards the others of its class and pushed from the rest."""
    import torch

    eye = torch.eye(len(y), dtype=torch.bool)
    sim = (emb @ emb.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~eye
    counts = positives.sum(1)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / counts.clamp(min=1)
    has = counts > 0
    return per_anchor[has].mean() if bool(has.any()) else emb.sum() * 0.0


def _length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of samples of similar length (sorted within windows of 8 batches), in
    random order: each batch is cut to its own longest sample, so padding costs little."""
    import torch

    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    window = 8 * batch_size
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(b for b in chunk.split(batch_size) if len(b) > 1)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _fit_sequence_model(
    name: str, module: torch.nn.Module, train: Dataset, recipe: Recipe, epochs: int, seed: int,
    threads: int, progress: Progress | None,
) -> torch.nn.Module:
    """Train ``text-encoder`` (supervised contrastive loss on mask-pooled sentence embeddings of
    the family labels) or ``text-recognizer`` (CTC loss) with AdamW and a cosine-decayed rate."""
    import torch
    import torch.nn.functional as F

    from edgekit.zoo.models import mean_pool

    y = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    if name == "text-encoder":
        ids = torch.from_numpy(train.inputs["input_ids"])
        mask = torch.from_numpy(train.inputs["attention_mask"])
        lengths = mask.sum(1)
    else:
        x = torch.from_numpy(train.inputs["x"])
        lengths = torch.from_numpy(train.lengths["x"])
        blank = int(train.meta["blank"])
    with torch_settings(threads, seed):
        generator = torch.Generator().manual_seed(seed)
        n_batches = len(_length_batches(lengths, recipe.batch_size, torch.Generator().manual_seed(seed)))
        optimizer = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=max(1, epochs * n_batches), pct_start=0.1
        )
        module.train()
        for epoch in range(epochs):
            for idx in _length_batches(lengths, recipe.batch_size, generator):
                longest = int(lengths[idx].max())
                if name == "text-encoder":
                    m = mask[idx, :longest]
                    emb = F.normalize(mean_pool(module(ids[idx, :longest], m), m), dim=-1)
                    loss = _supcon_loss(emb, y[idx], SUPCON_TEMPERATURE)
                else:
                    out = module(x[idx, :, :, :longest])  # (B, T, C)
                    log_probs = F.log_softmax(out, dim=-1).transpose(0, 1)
                    target = y[idx]
                    loss = F.ctc_loss(
                        log_probs,
                        target[target >= 0],
                        torch.full((len(idx),), out.shape[1], dtype=torch.long),
                        (target >= 0).sum(1),
                        blank=blank,
                        zero_infinity=True,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
            if progress is not None:
                progress(epoch + 1, epochs)
    return module.eval()


def train(
    name: str,
    seed: int = 0,
    *,
    epochs: int | None = None,
    threads: int = 1,
    progress: Progress | None = None,
) -> TrainResult:
    """Train reference model ``name`` with ``seed`` and measure it on its held-out split.

    Deterministic for a given seed, thread count and machine. ``epochs`` overrides the recipe's.
    """
    import torch

    from edgekit.zoo import build, spec

    ref = spec(name)
    recipe = RECIPES[name]
    splits = load_data(name, seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(name)
    _prepare(name, module, splits.train)
    if ref.task in ("embedding", "sequence"):
        n_epochs = recipe.epochs if epochs is None else epochs
        _fit_sequence_model(name, module, splits.train, recipe, n_epochs, seed, threads, progress)
    else:
        fit(
            module,
            splits.train,
            ref.task,
            epochs=recipe.epochs if epochs is None else epochs,
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            weight_decay=recipe.weight_decay,
            shift=recipe.shift,
            seed=seed,
            threads=threads,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    with torch_settings(threads, seed):
        metrics = evaluate(module, splits.test, splits.train)
    return TrainResult(name, module, metrics, ref.metric, metrics[ref.metric], seed, seconds)


def save(result: TrainResult, path: str | Path) -> None:
    """Save the trained module as TorchScript with its metadata in ``META_FILE``, atomically."""
    import torch

    from edgekit import __version__
    from edgekit.zoo import spec

    ref = spec(result.name)
    meta = {
        "zoo": result.name,
        "seed": result.seed,
        "task": ref.task,
        "metric": {"name": result.metric, "value": result.value},
        "metrics": result.metrics,
        "input_name": ref.input_name,
        "input_shape": list(ref.input_shape),
        "input_dtype": ref.input_dtype,
        "factory": ref.factory,
        "edgekit_version": __version__,
    }
    if ref.inputs:
        meta["inputs"] = [
            {"name": n, "shape": list(shape), "dtype": dtype} for n, shape, dtype in ref.inputs
        ]
    if ref.dynamic_axes:
        meta["dynamic_axes"] = {
            k: {str(axis): sym for axis, sym in axes.items()} for k, axes in ref.dynamic_axes.items()
        }
    meta.update(ref.extra_meta or {})
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in torch 2.13 but remains the portable, code-free format
            # that every loader of edgekit accepts.
            warnings.filterwarnings(
                "ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning
            )
            scripted = torch.jit.script(result.module.eval())
            torch.jit.save(
                scripted, tmp, _extra_files={META_FILE: json.dumps(meta, sort_keys=True)}
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The edgekit metadata of a saved TorchScript file, or None when it has none.

    Reads the archive as a zip file: no model code or pickle is run.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"model file {p} does not exist; check the path")
    if not zipfile.is_zipfile(p):
        return None
    with zipfile.ZipFile(p) as archive:
        member = next((n for n in archive.namelist() if _META_MEMBER.fullmatch(n)), None)
        if member is None:
            return None
        raw = archive.read(member)
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise BadInputError(
            f"{p}: its {META_FILE} is not valid JSON ({exc}); re-save the model"
        ) from exc
    return meta if isinstance(meta, dict) else None
