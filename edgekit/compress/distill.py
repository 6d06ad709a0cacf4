"""Knowledge distillation: train a smaller student to follow the model (the teacher).

The student is either given (``"module:factory"`` or a TorchScript file) or derived from the
teacher by slimming it: Torch-Pruning removes ``1 - width`` of the channels and hidden units of
every layer (output layers keep their size), which leaves about ``width²`` of the parameters.
The derived student keeps the teacher's surviving weights by default (``reinit=True`` starts it
from fresh random weights instead).

To show what the teacher adds, the student is trained twice from the same initial weights, on the
same batches (same order and, for images, the same random shifts), epochs, schedule and seed: once
with the distillation loss ``alpha * KD(T) + (1 - alpha) * task loss``, the teacher's targets
computed on the shifted inputs the student sees, and once with the task loss alone. Both are
measured on the held-out data, with how far each one's outputs are from the teacher's; the
distilled one is returned. Facts land in ``ctx.records["distill"]``.

Measured with the defaults on the digits reference model (teacher, split and student seeds 0, 1,
2; 0.195x the parameters; the teacher itself trained with random shifts of up to 1.5 pixels):
teachers 98.61 / 98.05 / 98.61 %, distilled students 98.61 / 98.33 / 98.33 %, the same students
alone 98.33 / 98.05 / 97.77 %. The margins are one or two of the 359 test images (seed 3: 99.16 /
99.16 / 99.44). A teacher trained without shifts was beaten by the shifted student alone, and
distillation then tied the student to the weaker teacher.
"""

from __future__ import annotations

import copy
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.compress.base import Context, register
from edgekit.errors import BadInputError, EdgekitError
from edgekit.io.data import Dataset
from edgekit.metrics import task_metrics
from edgekit.registry import import_object
from edgekit.training import fit, predict, score, shiftable, to_tensor

_TRAINABLE_TASKS = ("classification", "binary", "regression")
_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM, nn.Embedding)
_EXAMPLE_SAMPLES = 2  # real samples used to trace the model and compare output shapes


@dataclass(frozen=True)
class DistillConfig:
    """Distil the model into a smaller student.

    ``student``: ``"module:factory"`` returning an untrained ``nn.Module``, or the path of a
    TorchScript file; ``None`` derives the student by slimming the teacher to ``width``.
    ``width``: fraction of channels and hidden units the derived student keeps, in (0, 1).
    ``temperature``: softmax temperature of the KD loss (classification). ``alpha``: weight of
    the KD loss; ``1 - alpha`` weighs the task loss against the labels.
    ``epochs``, ``lr``, ``batch_size``: training of the student (Adam, cosine schedule).
    ``reinit``: start a derived student from random weights instead of the teacher's surviving ones.
    ``shift``: for image models (one float input of shape N×C×H×W), each training batch is moved
    by a random translation of up to ``shift`` pixels; both students see the same moved batches
    and the teacher's targets are computed on them. ``0`` turns it off.
    """

    student: str | None = None
    width: float = 0.45  # about 0.2x the parameters of the reference digits-cnn (0.5 gives 0.253x)
    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 64
    reinit: bool = False
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.student is not None and (not isinstance(self.student, str) or not self.student.strip()):
            raise BadInputError(
                f"distill student must be 'module:factory' or a TorchScript file path, got {self.student!r}"
            )
        for name in ("width", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadInputError(f"distill {name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 < self.width < 1.0:
            raise BadInputError(f"distill width {self.width} is out of range; give a fraction in (0, 1), e.g. 0.5")
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInputError(f"distill alpha {self.alpha} is out of range; give a weight in [0, 1], e.g. 0.7")
        for name in ("temperature", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise BadInputError(f"distill {name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"distill {name} must be an integer >= 1, got {value!r}")
        shift = self.shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or shift < 0:
            raise BadInputError(f"distill shift must be a number of pixels >= 0, got {self.shift!r}; 0 turns it off")
        object.__setattr__(self, "shift", float(self.shift))
        if not isinstance(self.reinit, bool):
            raise BadInputError(f"distill reinit must be true or false, got {self.reinit!r}")

    def label(self) -> str:
        """Short name used in reports, e.g. ``"distill:width0.5"`` or ``"distill:student"``."""
        return f"distill:width{self.width:g}" if self.student is None else "distill:student"


# --- helpers ---------------------------------------------------------------------------------


def count_params(module: nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in module.parameters())


def _example(data: Dataset) -> tuple[torch.Tensor, ...]:
    """The first real samples of ``data``, one tensor per input in the order ``fit`` passes them."""
    return tuple(to_tensor(a) for a in data.head(_EXAMPLE_SAMPLES).inputs.values())


def _first_output_shape(module: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        out = module(*inputs)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return tuple(out.shape)


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh weights for every layer that can reset itself (buffers such as target scales stay)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if m is not module and callable(reset):
                reset()


def slim(teacher: nn.Module, example: tuple[torch.Tensor, ...], width: float) -> nn.Module:
    """A copy of ``teacher`` keeping ``width`` of the channels/hidden units of every layer.

    Follows the dependency graph (residuals, depthwise convolutions, flatten, BatchNorm) with
    Torch-Pruning; layers producing a model output keep their output size. Weights are the
    teacher's surviving ones: re-initialise them to train from scratch.
    """
    import torch_pruning as tp

    from edgekit.compress.surgery import output_layers

    model = copy.deepcopy(teacher).cpu().float().eval()
    inputs: torch.Tensor | tuple[torch.Tensor, ...] = example[0] if len(example) == 1 else example
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    pruner = tp.pruner.BasePruner(
        model,
        inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=1.0 - width,
        ignored_layers=output_layers(model, graph),
        root_module_types=list(_ROOT_TYPES),
    )
    pruner.step()
    return model.eval()


def _clone(module: nn.Module) -> nn.Module:
    """An independent copy with trainable (leaf) parameters."""
    if isinstance(module, torch.jit.ScriptModule):
        # deepcopy of a ScriptModule yields non-leaf parameters, which optimizers refuse.
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer, map_location="cpu")
    return copy.deepcopy(module)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") for n in archive.namelist())


def _given_student(spec: str, seed: int) -> nn.Module:
    path = Path(spec)
    if path.is_file():
        if not _is_torchscript(path):
            raise BadInputError(
                f"student {path} is not a TorchScript file; a state_dict has no architecture: "
                "give student = 'module:factory' instead"
            )
        student = torch.jit.load(str(path), map_location="cpu")
    elif ":" in spec:
        factory = import_object(spec)
        if not callable(factory):
            raise BadInputError(f"student {spec!r} is not callable; point to a function returning an nn.Module")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = factory()
    else:
        raise BadInputError(f"student {spec!r} is neither an existing file nor 'module:factory'")
    if not isinstance(student, nn.Module):
        raise BadInputError(f"student {spec!r} gave a {type(student).__name__}, not a torch nn.Module")
    return student.cpu().float()


def _check_inputs(ctx: Context) -> str:
    task = ctx.task if ctx.task != "unknown" else (ctx.train.task if ctx.train is not None else "unknown")
    if ctx.train is None or ctx.train.labels is None:
        raise BadInputError(
            "distillation trains a student and needs labelled training data: pass --data with a 'y' array"
        )
    if task not in _TRAINABLE_TASKS:
        raise BadInputError(
            f"distillation needs a classification, binary or regression task, not {task!r}; give the model's task"
        )
    return task


def teacher_distance(task: str, teacher_out: np.ndarray, student_out: np.ndarray, temperature: float) -> float:
    """How far a student's outputs are from the teacher's: the KD term without its weight.

    Classification: ``KL(softmax(t/T) || softmax(s/T)) * T²`` averaged over samples; other tasks:
    mean squared difference of the outputs.
    """
    t = torch.from_numpy(np.asarray(teacher_out, dtype=np.float32)).reshape(len(teacher_out), -1)
    s = torch.from_numpy(np.asarray(student_out, dtype=np.float32)).reshape(len(student_out), -1)
    if task == "classification":
        log_p_t = torch.log_softmax(t / temperature, dim=1)
        log_p_s = torch.log_softmax(s / temperature, dim=1)
        kl = torch.sum(log_p_t.exp() * (log_p_t - log_p_s), dim=1).mean()
        return float(kl) * temperature**2
    return float(torch.mean((t - s) ** 2))


def train_student(
    student: nn.Module,
    train: Dataset,
    task: str,
    *,
    teacher: Any | None,
    config: DistillConfig,
    seed: int,
    threads: int = 1,
) -> nn.Module:
    """Train ``student`` in place (Adam, cosine schedule); with a ``teacher``, on the KD loss.

    The loss is ``alpha * KD(T) + (1 - alpha) * task loss`` with a teacher and the task loss
    alone without one. Batches (order and, for images, the random shifts of ``config.shift``) depend
    only on ``seed``, so a student trained with and one without the teacher see the same inputs.
    The teacher's targets are computed on the very inputs the student sees ("consistent
    teaching"). Returns the student in eval mode.
    """
    return fit(
        student, train, task, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=seed,
        threads=threads, teacher=teacher, temperature=config.temperature, alpha=config.alpha, shift=config.shift,
    )


def _timed(
    student: nn.Module, train: Dataset, task: str, teacher: nn.Module | None, config: DistillConfig, seed: int
) -> tuple[nn.Module, float]:
    """A copy of ``student`` trained (with ``teacher`` or alone), and the seconds it took."""
    start = time.perf_counter()
    trained = train_student(
        _clone(student), train, task, teacher=teacher, config=config, seed=seed, threads=torch.get_num_threads()
    )
    return trained, time.perf_counter() - start


# --- the technique ----------------------------------------------------------------------------


@register(DistillConfig, "model")
def distill(config: DistillConfig, module: nn.Module, ctx: Context) -> nn.Module:
    """Train a student with the model as teacher, and the same student without it; return the first.

    Writes ``ctx.records["distill"]``. The teacher is not modified.
    """
    task = _check_inputs(ctx)
    assert ctx.train is not None
    teacher = module
    example = _example(ctx.calib if ctx.calib is not None and len(ctx.calib) else ctx.train)

    if config.student is None:
        if isinstance(teacher, torch.jit.ScriptModule):
            raise BadInputError(
                "cannot slim a TorchScript teacher into a student: give student = "
                "'module:factory', or load the teacher as Python code (--arch module:factory)"
            )
        student = slim(teacher, example, config.width)
        if config.reinit:
            _reinitialise(student, ctx.seed)
        init = "re-initialised" if config.reinit else "surviving weights kept"
        source = f"slimmed teacher (width {config.width:g}, {init})"
    else:
        student = _given_student(config.student, ctx.seed)
        source = config.student

    teacher_shape = _first_output_shape(teacher.eval(), example)
    student_shape = _first_output_shape(student.eval(), example)
    if teacher_shape != student_shape:
        raise BadInputError(
            f"the student's output shape {student_shape} differs from the teacher's "
            f"{teacher_shape}; the student must predict the same outputs"
        )
    teacher_params, student_params = count_params(teacher), count_params(student)
    if student_params >= teacher_params:
        if config.student is None:
            raise EdgekitError(f"slimming to width {config.width:g} did not shrink the model ({student_params} params)")
        raise BadInputError(
            f"the student has {student_params} parameters, not fewer than the teacher's "
            f"{teacher_params}; give a smaller student"
        )

    shift = config.shift if shiftable(ctx.train) else 0.0
    eval_data = ctx.eval if ctx.eval is not None and len(ctx.eval) else ctx.train
    init_metric = score(student, eval_data, task)
    ctx.progress(f"distill: training the student ({student_params} params) with the teacher, {config.epochs} epochs")
    distilled, seconds_kd = _timed(student, ctx.train, task, teacher, config, ctx.seed)
    ctx.progress("distill: training the same student without the teacher, for comparison")
    alone, seconds_alone = _timed(student, ctx.train, task, None, config, ctx.seed)

    outputs = [predict(m, eval_data) for m in (teacher, distilled, alone)]
    record: dict[str, Any] = {
        "label": config.label(),
        "student_source": source,
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": student_params / teacher_params,
        "temperature": config.temperature,
        "alpha": config.alpha,
        "epochs": config.epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "seed": ctx.seed,
        # Same for both students: random translations of the training images (0 = none).
        "augmentation": {"shift_pixels": shift},
        "data": eval_data.name,
        "metric": None,
        "teacher_metric": None,
        "student_init_metric": None,
        "student_kd_metric": None,
        "student_alone_metric": None,
        # The KD term itself on held-out data: how closely each student follows the teacher.
        "teacher_distance": {
            "measure": f"KL at T={config.temperature:g} x T^2" if task == "classification" else "MSE",
            "kd": teacher_distance(task, outputs[0], outputs[1], config.temperature),
            "alone": teacher_distance(task, outputs[0], outputs[2], config.temperature),
        },
        "seconds": {"kd": seconds_kd, "alone": seconds_alone},
    }
    if eval_data.labels is not None and init_metric is not None:
        name = init_metric[0]
        values = [task_metrics(task, out, eval_data.labels)[name] for out in outputs]
        record.update(
            metric=name,
            teacher_metric=values[0],
            student_init_metric=init_metric[1],
            student_kd_metric=values[1],
            student_alone_metric=values[2],
        )
        ctx.progress(
            f"distill: {name} teacher {values[0]:.4g}, student with teacher {values[1]:.4g}, "
            f"student alone {values[2]:.4g} "
            f"({student_params / teacher_params:.1%} of the parameters)"
        )
    ctx.records["distill"] = record
    return distilled.eval()
