"""Training, evaluation and saving of the reference models, and the generic training loop ``fit``.

``fit`` is reused to fine-tune after pruning and to distil a student from a teacher. torch is
imported inside the functions so that importing :mod:`edgekit.zoo` stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.benchmarks.accuracy import task_metrics
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.zoo.datasets import load_data

if TYPE_CHECKING:
    import torch

META_FILE = (
    "edgekit.json"  # JSON metadata stored in a saved TorchScript archive (its extra/ folder)
)
_META_MEMBER = re.compile(r"[^/]+/extra/" + re.escape(META_FILE))

Progress = Callable[[int, int], None]


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
    ]  # on the held-out test split, from edgekit.benchmarks.accuracy.task_metrics
    metric: str  # the primary metric's name
    value: float  # the primary metric's value
    seed: int
    seconds: float  # wall time of building and fitting the model


@contextlib.contextmanager
def _torch_settings(threads: int, seed: int) -> Iterator[None]:
    """Threads, deterministic kernels and a private RNG stream; everything restored on exit."""
    import torch

    if threads < 1:
        raise BadInputError(f"threads must be at least 1 (got {threads})")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _tensors(data: Dataset) -> list[torch.Tensor]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)) for a in data.inputs.values()]


def _labels(data: Dataset, task: str) -> torch.Tensor:
    import torch

    if data.labels is None:
        raise BadInputError(
            f"data set {data.name!r} has no labels; training needs labelled data (a 'y' array)"
        )
    y = np.asarray(data.labels)
    return torch.from_numpy(
        y.astype(np.int64) if task == "classification" else y.astype(np.float32)
    )


def _task_loss(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    if task == "classification":
        return F.cross_entropy(out, y)
    if task == "binary":
        return F.binary_cross_entropy(out.reshape(-1).clamp(1e-7, 1 - 1e-7), y.reshape(-1))
    if task == "regression":
        return F.mse_loss(out.reshape(-1), y.reshape(-1))
    raise BadInputError(f"cannot train for task {task!r}; use classification, binary or regression")


def _kd_loss(
    task: str, out: torch.Tensor, teacher_out: torch.Tensor, temperature: float
) -> torch.Tensor:
    import torch.nn.functional as F

    if task == "classification":
        t = temperature
        soft_teacher = F.softmax(teacher_out / t, dim=1)
        return F.kl_div(F.log_softmax(out / t, dim=1), soft_teacher, reduction="batchmean") * (
            t * t
        )
    return F.mse_loss(out.reshape(out.shape[0], -1), teacher_out.reshape(teacher_out.shape[0], -1))


def shiftable(data: Dataset) -> bool:
    """Whether ``data`` is one float image input (N×C×H×W), which shifts keep meaningful."""
    arrays = list(data.inputs.values())
    return len(arrays) == 1 and arrays[0].ndim == 4 and np.issubdtype(arrays[0].dtype, np.floating)


def shift_images(x: torch.Tensor, pixels: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N×C×H×W), each sample translated by up to ``pixels`` in x and y; zeros fill in."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    offsets = (torch.rand(n, 2, generator=generator) * 2 - 1) * pixels
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = offsets[:, 0] * 2 / w  # affine_grid works in [-1, 1] coordinates
    theta[:, 1, 2] = offsets[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def fit(
    module: torch.nn.Module,
    train: Dataset,
    task: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    threads: int = 1,
    teacher: Callable[..., Any] | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    weight_decay: float = 0.0,
    shift: float = 0.0,
    progress: Progress | None = None,
) -> torch.nn.Module:
    """Train ``module`` in place on ``train`` with Adam and a cosine-decayed learning rate.

    The inputs of ``train`` are passed positionally in their order. With a ``teacher`` the loss is
    ``alpha * KD + (1 - alpha) * task loss``, where KD is ``KL(softmax(t/T) || softmax(s/T)) * T²``
    for classification and the MSE to the teacher's outputs for binary and regression tasks.
    ``shift`` > 0 moves each training image (one float N×C×H×W input) by a random translation of
    up to that many pixels, drawn from a stream seeded by ``seed``; other inputs are left as they
    are. ``progress(epoch, epochs)`` is called after each epoch. Returns the module, in eval mode.
    """
    import torch

    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise BadInputError(
            f"bad training settings: epochs={epochs}, batch_size={batch_size}, lr={lr}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise BadInputError(f"alpha must be in [0, 1] (got {alpha})")
    if shift < 0:
        raise BadInputError(f"shift must be a number of pixels >= 0 (got {shift})")
    xs = _tensors(train)
    if not shiftable(train):
        shift = 0.0
    task_weight = 1.0 if teacher is None else 1.0 - alpha
    y = _labels(train, task) if task_weight > 0 else None
    n = len(train)
    steps_per_epoch = max(1, -(-n // batch_size))
    with _torch_settings(threads, seed):
        generator = torch.Generator().manual_seed(seed)
        shift_gen = torch.Generator().manual_seed(seed + 1)
        # Without shifts the teacher's targets are computed once; with shifts, on each shifted
        # batch the student sees ("consistent teaching").
        teacher_out: torch.Tensor | None = None
        if teacher is not None and shift == 0:
            teacher_out = torch.from_numpy(
                predict(teacher, train, batch_size=256).astype(np.float32)
            )
        elif teacher is not None and hasattr(teacher, "eval"):
            teacher.eval()
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, epochs * steps_per_epoch)
        )
        module.train()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2 and n > 1:  # a single sample breaks BatchNorm statistics
                    continue
                inputs = [x[idx] for x in xs]
                if shift > 0:
                    inputs = [shift_images(inputs[0], shift, shift_gen)]
                out = _first_output(module(*inputs))
                loss = out.new_zeros(())
                if y is not None:
                    loss = loss + task_weight * _task_loss(task, out, y[idx])
                if teacher is not None:
                    if teacher_out is not None:
                        target = teacher_out[idx]
                    else:
                        with torch.no_grad():
                            target = _first_output(teacher(*inputs)).float()
                    loss = loss + alpha * _kd_loss(task, out, target, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            if progress is not None:
                progress(epoch + 1, epochs)
    return module.eval()


def predict(module: Callable[..., Any], data: Dataset, batch_size: int = 256) -> np.ndarray:
    """The first output of ``module`` on every sample of ``data``, as numpy (eval mode, no grad)."""
    import torch

    was_training = bool(getattr(module, "training", False))
    if hasattr(module, "eval"):
        module.eval()
    xs = _tensors(data)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                out = _first_output(module(*(x[start : start + batch_size] for x in xs)))
                outs.append(out.detach().cpu().numpy())
    finally:
        if was_training and hasattr(module, "train"):
            module.train()
    return np.concatenate(outs, axis=0)


def evaluate(
    module: Callable[..., Any], data: Dataset, train: Dataset | None = None
) -> dict[str, float]:
    """Task metrics of ``module`` on ``data`` (:func:`edgekit.benchmarks.accuracy.task_metrics`).

    ``embedding``: nearest-centroid accuracy (percent) of the labelled families, centroids from
    ``train``; ``sequence``: exact-match accuracy and character error rate after CTC greedy
    decoding (blank from ``data.meta['blank']``, valid positions from ``data.lengths``).
    """
    if data.labels is None:
        raise BadInputError(f"data set {data.name!r} has no labels; evaluation needs a 'y' array")
    if data.task == "embedding":
        if train is None or train.labels is None:
            raise BadInputError("embedding evaluation needs a labelled training split for the centroids")
        return {
            "centroid_accuracy": centroid_accuracy(
                sentence_embeddings(module, train), train.labels, sentence_embeddings(module, data), data.labels
            )
        }
    if data.task == "sequence":
        return sequence_metrics(
            predict(module, data), data.labels, int(data.meta.get("blank", 0)), _valid_steps(module, data)
        )
    return task_metrics(data.task, predict(module, data), data.labels)


# --- embeddings and CTC sequences --------------------------------------------------------------


def sentence_embeddings(module: Callable[..., Any], data: Dataset, batch_size: int = 256) -> np.ndarray:
    """Mask-aware mean-pooled, L2-normalised token states of a text encoder, float64 ``(N, D)``."""
    states = predict(module, data, batch_size=batch_size).astype(np.float64)
    mask = data.inputs["attention_mask"].astype(np.float64)[:, :, None]
    pooled = (states * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def centroid_accuracy(
    train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray
) -> float:
    """Percent of ``test_emb`` whose nearest class centroid (cosine; centroids = normalised mean
    of the training embeddings of each class) is their own class."""
    classes = np.unique(train_y)
    centroids = np.stack([train_emb[train_y == c].mean(0) for c in classes])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    pred = classes[np.argmax(test_emb @ centroids.T, axis=1)]
    return float(100.0 * np.mean(pred == np.asarray(test_y)))


def ctc_greedy_decode(
    scores: np.ndarray, blank: int, steps: np.ndarray | None = None
) -> list[list[int]]:
    """Best path of per-position class scores ``(N, T, C)``: argmax, merge repeats, drop blanks.

    ``steps`` (N,) limits each sample to its first valid positions (padding never counts).
    """
    best = np.asarray(scores).argmax(-1)
    out = []
    for row, path in enumerate(best):
        if steps is not None:
            path = path[: int(steps[row])]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(c) for c in path[keep] if c != blank])
    return out


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def sequence_metrics(
    scores: np.ndarray, labels: np.ndarray, blank: int, steps: np.ndarray | None = None
) -> dict[str, float]:
    """``sequence_accuracy`` (fraction of exact matches after CTC greedy decoding) and ``cer``
    (edit distance over reference characters) against labels ``(N, L)`` padded with -1."""
    decoded = ctc_greedy_decode(scores, blank, steps)
    refs = [[int(c) for c in row if c >= 0] for row in np.asarray(labels)]
    exact = sum(d == r for d, r in zip(decoded, refs, strict=True))
    edits = sum(_edit_distance(d, r) for d, r in zip(decoded, refs, strict=True))
    chars = max(1, sum(len(r) for r in refs))
    return {"sequence_accuracy": exact / len(refs), "cer": edits / chars}


def _valid_steps(module: Any, data: Dataset) -> np.ndarray | None:
    """Valid output positions per sample of a width-reducing sequence model (None: all)."""
    if not data.lengths:
        return None
    widths = next(iter(data.lengths.values()))
    stride = int(getattr(module, "stride", 1))
    return np.asarray(widths) // stride


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
    with _torch_settings(threads, seed):
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
    with _torch_settings(threads, seed):
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
