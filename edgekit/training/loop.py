"""The generic training loop ``fit`` and batched inference ``predict`` of a torch module.

The reference models are trained with it, and the techniques use it to fine-tune after pruning,
to distil a student from a teacher and for quantization-aware training. torch is imported inside
the functions so that importing :mod:`edgekit.training` stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.io.data import Dataset
from edgekit.training.tensors import input_tensors

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]


@contextlib.contextmanager
def torch_settings(threads: int, seed: int) -> Iterator[None]:
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


def first_output(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


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
    xs = input_tensors(train)
    if not shiftable(train):
        shift = 0.0
    task_weight = 1.0 if teacher is None else 1.0 - alpha
    y = _labels(train, task) if task_weight > 0 else None
    n = len(train)
    steps_per_epoch = max(1, -(-n // batch_size))
    with torch_settings(threads, seed):
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
                out = first_output(module(*inputs))
                loss = out.new_zeros(())
                if y is not None:
                    loss = loss + task_weight * _task_loss(task, out, y[idx])
                if teacher is not None:
                    if teacher_out is not None:
                        target = teacher_out[idx]
                    else:
                        with torch.no_grad():
                            target = first_output(teacher(*inputs)).float()
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
    xs = input_tensors(data)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                out = first_output(module(*(x[start : start + batch_size] for x in xs)))
                outs.append(out.detach().cpu().numpy())
    finally:
        if was_training and hasattr(module, "train"):
            module.train()
    return np.concatenate(outs, axis=0)


def score(module: Callable[..., Any], data: Dataset | None, task: str) -> tuple[str, float] | None:
    """The primary metric of ``module`` on ``data`` (name, value), or None without labels or for a
    task without a metric (:data:`edgekit.metrics.TASKS`)."""
    from edgekit.metrics import TASKS, primary_metric

    if data is None or data.labels is None or task not in TASKS:
        return None
    return primary_metric(task, predict(module, data), data.labels)
