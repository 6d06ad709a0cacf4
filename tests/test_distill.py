"""Knowledge distillation: the real digits-cnn (trained by edgekit.zoo) teaches a smaller student.

The teacher is trained with small random shifts, and both students (with and without the teacher)
see the same shifted batches from the same initial weights. With the default settings over seeds
0..2 the distilled student was 0.28 below to 0.28 above its teacher and 0.28 to 0.56 points above
the same student trained alone (one or two of the 359 test images). Both are asserted for seed 0;
what the teacher adds is also asserted where it is clearly measurable: the distilled student's
outputs follow the teacher's (KD distance) far more closely than the student trained alone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import reference_context
from torch import nn

from edgekit import zoo
from edgekit.compress.base import Context, handler_for
from edgekit.compress.distill import DistillConfig, count_params, distill, slim
from edgekit.errors import BadInputError
from edgekit.io.data import Dataset

NAME = "digits-cnn"
SEED = 0
WIDTH = 0.45  # keeps ~19.5% of the parameters (width 0.5 keeps 25.3%: biases and the 10-way head)

SMALL_STUDENT = textwrap.dedent(
    """
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10),
            )

        def forward(self, x):
            return self.net(x)

    def small_cnn():
        return SmallCNN()

    def too_big():
        from edgekit.zoo.models import digits_cnn
        return digits_cnn()

    def wrong_head():
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 7))
    """
)


def _ctx(splits: Any, tmp: Path, **overrides: Any) -> Context:
    return reference_context(splits, tmp, seed=SEED, **overrides)


@pytest.fixture(scope="module")
def teacher(trained) -> Any:
    return trained(NAME)[0]  # trained once per session (tests/conftest.py), seed 0


@pytest.fixture(scope="module")
def splits() -> Any:
    return zoo.load_data(NAME, SEED)


@pytest.fixture()
def students(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of student factories; returns its name."""
    (tmp_path / "edgekit_test_students.py").write_text(SMALL_STUDENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "edgekit_test_students"


def _channels(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.slow
def test_slimmed_student_is_smaller_trained_and_close_to_the_teacher(teacher: Any, splits: Any, tmp_path: Path) -> None:
    ctx = _ctx(splits, tmp_path)
    config = DistillConfig()
    assert config.width == WIDTH
    stage, handler = handler_for(config)
    assert stage == "model"
    student = handler(config, teacher.module, ctx)
    r = ctx.records["distill"]

    # Physically smaller: fewer channels in every convolution, at most a quarter of the parameters.
    assert count_params(student) == r["student_params"]
    assert r["teacher_params"] == count_params(teacher.module)
    assert r["param_ratio"] <= 0.25
    assert all(s <= round(WIDTH * t) for s, t in zip(_channels(student), _channels(teacher.module), strict=True))
    assert student(torch.from_numpy(splits.test.inputs["input"][:3])).shape == (3, 10)

    # Trained: every layer moved away from the slimmed starting point, and accuracy rose.
    start = slim(teacher.module, (torch.from_numpy(splits.calib.inputs["input"][:2]),), WIDTH)
    pairs = zip(start.state_dict().items(), student.state_dict().values(), strict=True)
    for (name, before), after in pairs:
        if before.is_floating_point() and before.dim() > 1:
            assert not torch.allclose(before, after), f"{name} was not trained"
    assert r["student_kd_metric"] > r["student_init_metric"] + 10.0

    # Accurate: within 1.5 points of the teacher, no worse than the same student trained alone.
    assert r["metric"] == "accuracy"
    assert r["teacher_metric"] == pytest.approx(teacher.value)
    assert r["student_kd_metric"] == pytest.approx(zoo.evaluate(student, splits.test)["accuracy"])
    assert r["teacher_metric"] - r["student_kd_metric"] <= 1.5
    # Measured here: distilled ≥ alone on seeds 0-2, but by one or two test images; one image
    # (100/359 = 0.28 points) of slack keeps the test from failing on float rounding elsewhere.
    assert r["student_kd_metric"] >= r["student_alone_metric"] - 100 / 359 - 1e-9
    # The teacher was used: the distilled student follows it far more closely than the lone one.
    assert r["teacher_distance"]["kd"] < 0.5 * r["teacher_distance"]["alone"]

    assert r["temperature"] == 4.0 and r["alpha"] == 0.5 and r["epochs"] == 20
    assert r["augmentation"] == {"shift_pixels": 1.0}
    assert "slimmed teacher" in r["student_source"]
    # The teacher is left untouched.
    assert zoo.evaluate(teacher.module, splits.test)["accuracy"] == pytest.approx(teacher.value)


@pytest.mark.slow
def test_given_student_from_factory(teacher: Any, splits: Any, students: str, tmp_path: Path) -> None:
    ctx = _ctx(splits, tmp_path)
    spec = f"{students}:small_cnn"
    student = distill(DistillConfig(student=spec, epochs=10, lr=3e-3), teacher.module, ctx)
    r = ctx.records["distill"]
    assert type(student).__name__ == "SmallCNN"
    assert r["student_source"] == spec
    assert r["param_ratio"] <= 0.25 and r["student_params"] == count_params(student)
    # A fresh student (about chance before training) that learned the task.
    assert r["student_init_metric"] < 30.0
    assert r["student_kd_metric"] >= 90.0 and r["student_alone_metric"] >= 90.0
    assert r["teacher_distance"]["kd"] < r["teacher_distance"]["alone"]


@pytest.mark.slow
def test_given_student_from_torchscript_file(teacher: Any, splits: Any, students: str, tmp_path: Path) -> None:
    import importlib

    factory = importlib.import_module(students).small_cnn
    path = tmp_path / "student.pt"
    torch.manual_seed(SEED)
    torch.jit.save(torch.jit.script(factory()), str(path))
    ctx = _ctx(splits, tmp_path)
    student = distill(DistillConfig(student=str(path), epochs=4, lr=3e-3), teacher.module, ctx)
    r = ctx.records["distill"]
    assert isinstance(student, torch.jit.ScriptModule)
    assert r["student_source"] == str(path)
    assert r["student_kd_metric"] > r["student_init_metric"] + 40.0


def _tiny_data(labels: bool = True) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        inputs={"input": rng.standard_normal((8, 1, 28, 28)).astype(np.float32)},
        labels=rng.integers(0, 10, 8) if labels else None,
        task="classification",
    )


def _tiny_ctx(tmp_path: Path, **overrides: Any) -> Context:
    data = _tiny_data()
    args = dict(workdir=tmp_path, calib=data, eval=data, train=data, task="classification")
    args.update(overrides)
    return Context(**args)


def test_student_must_be_smaller(students: str, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not fewer than the teacher"):
        distill(DistillConfig(student=f"{students}:too_big"), zoo.build(NAME), _tiny_ctx(tmp_path))


def test_student_must_predict_the_same_outputs(students: str, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="output shape"):
        distill(DistillConfig(student=f"{students}:wrong_head"), zoo.build(NAME), _tiny_ctx(tmp_path))


def test_state_dict_student_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(zoo.build(NAME).state_dict(), path)
    with pytest.raises(BadInputError, match="module:factory"):
        distill(DistillConfig(student=str(path)), zoo.build(NAME), _tiny_ctx(tmp_path))


def test_distillation_needs_labelled_training_data(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--data with a 'y' array"):
        distill(DistillConfig(), zoo.build(NAME), _tiny_ctx(tmp_path, train=None))
    with pytest.raises(BadInputError, match="--data with a 'y' array"):
        distill(DistillConfig(), zoo.build(NAME), _tiny_ctx(tmp_path, train=_tiny_data(labels=False)))


def test_torchscript_teacher_needs_a_given_student(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="TorchScript teacher"):
        distill(DistillConfig(), torch.jit.script(zoo.build(NAME)), _tiny_ctx(tmp_path))


def test_slim_keeps_the_output_layer_and_shrinks_the_rest() -> None:
    torch.manual_seed(0)
    teacher = zoo.build(NAME)
    x = torch.zeros(2, 1, 28, 28)
    student = slim(teacher, (x,), 0.5)
    assert _channels(student) == [16, 32, 32]
    assert student(x).shape == (2, 10)
    assert 0.2 < count_params(student) / count_params(teacher) < 0.3
    assert _channels(teacher) == [32, 64, 64]  # slim works on a copy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 1.0},
        {"width": 0},
        {"alpha": 1.5},
        {"temperature": 0},
        {"epochs": 0},
        {"lr": -1.0},
        {"batch_size": 2.5},
        {"student": ""},
        {"reinit": "yes"},
        {"shift": -1},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadInputError):
        DistillConfig(**kwargs)


def test_shift_moves_images_and_is_skipped_for_other_inputs() -> None:
    from edgekit.training import shift_images as _shift
    from edgekit.training import shiftable as _shiftable

    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    moved = _shift(x, 2.0, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    assert torch.allclose(_shift(x, 0.0, torch.Generator().manual_seed(0)), x, atol=1e-6)
    assert _shiftable(_tiny_data())
    tabular = Dataset({"x": np.zeros((4, 30), np.float32)}, np.zeros(4), "binary")
    assert not _shiftable(tabular)
