"""Reference models: small, deterministic models trained on data that ships with installed packages.

They are the test bed of every technique and the demo of the README. Importing this package does not
import torch; building and training a model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.errors import BadInputError
from edgekit.registry import import_object
from edgekit.training import fit, predict
from edgekit.zoo.datasets import (
    LINE_BLANK,
    LINE_HEIGHT,
    TEXT_CLASSES,
    TEXT_LENGTH,
    Splits,
    load_data,
)
from edgekit.zoo.evaluation import evaluate
from edgekit.zoo.training import META_FILE, TrainResult, read_meta, save, train

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ReferenceSpec:
    """What a reference model is: its task, held-out floor, input and factory."""

    name: str
    description: str
    task: str  # classification | binary | regression | embedding | sequence
    # "accuracy" (percent, as in edgekit.benchmarks.accuracy), "r2", "centroid_accuracy" (percent)
    # or "sequence_accuracy" (a fraction)
    metric: str
    floor: float  # in the metric's units: accuracy in percent, r2 as a fraction
    input_name: str
    input_shape: tuple[int, ...]  # per sample, without the batch axis
    input_dtype: str  # float32 | int64
    factory: str  # "module:attr" building the untrained nn.Module
    # Models with several inputs or dynamic axes besides the batch: every input as
    # (name, per-sample shape with -1 for a dynamic axis, dtype), and the dynamic axes of inputs and
    # outputs (name -> {axis: symbol}), which ONNX export keeps; anything else consumers need.
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    dynamic_axes: dict[str, dict[int, str]] | None = None
    extra_meta: dict[str, object] | None = None


_SPECS: dict[str, ReferenceSpec] = {
    s.name: s
    for s in (
        ReferenceSpec(
            name="digits-cnn",
            description="Conv32-MaxPool-Conv64-MaxPool-Conv64-Dense64-Dense10 on scikit-learn "
            "digits at 28x28",
            task="classification",
            metric="accuracy",
            floor=95.0,
            input_name="input",
            input_shape=(1, 28, 28),
            input_dtype="float32",
            factory="edgekit.zoo.models:digits_cnn",
        ),
        ReferenceSpec(
            name="tabular-mlp",
            description="Dense50-Dense1(sigmoid) on scikit-learn breast cancer "
            "(30 standardized features)",
            task="binary",
            metric="accuracy",
            floor=93.0,
            input_name="input",
            input_shape=(30,),
            input_dtype="float32",
            factory="edgekit.zoo.models:tabular_mlp",
        ),
        ReferenceSpec(
            name="house-regressor",
            description="MLP regression (MSE) on scikit-learn diabetes, output in target units",
            task="regression",
            metric="r2",
            floor=0.40,
            input_name="input",
            input_shape=(10,),
            input_dtype="float32",
            factory="edgekit.zoo.models:house_regressor",
        ),
        ReferenceSpec(
            name="text-classifier",
            description="Embedding-mean-MLP over docstrings of Python's standard library, "
            f"{len(TEXT_CLASSES)} module families",
            task="classification",
            metric="accuracy",
            floor=round(3 * 100.0 / len(TEXT_CLASSES), 2),  # three times chance
            input_name="input_ids",
            input_shape=(TEXT_LENGTH,),
            input_dtype="int64",
            factory="edgekit.zoo.models:text_classifier",
        ),
        ReferenceSpec(
            name="edge-cnn",
            description="MobileNetV2-style CNN (inverted residuals, depthwise conv) on "
            "scikit-learn digits at 32x32",
            task="classification",
            metric="accuracy",
            floor=93.0,
            input_name="input",
            input_shape=(1, 32, 32),
            input_dtype="float32",
            factory="edgekit.zoo.models:edge_cnn",
        ),
        ReferenceSpec(
            name="text-encoder",
            description="4-layer pre-norm transformer encoder (width 256, GELU, LayerNorm) trained "
            "with a supervised contrastive loss on standard-library docstrings; outputs token "
            "states, the sentence embedding is their mask-aware mean",
            task="embedding",
            metric="centroid_accuracy",
            floor=round(3 * 100.0 / len(TEXT_CLASSES) + 0.005, 2),  # three times chance
            input_name="input_ids",
            input_shape=(-1,),
            input_dtype="int64",
            factory="edgekit.zoo.models:text_encoder",
            inputs=(("input_ids", (-1,), "int64"), ("attention_mask", (-1,), "int64")),
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "output": {0: "batch", 1: "sequence"},
            },
            extra_meta={"pooling": "mean", "mask_input": "attention_mask", "max_length": TEXT_LENGTH},
        ),
        ReferenceSpec(
            name="text-recognizer",
            description="CRNN (conv features, bidirectional LSTM) with CTC reading 3 to 8 "
            "scikit-learn digits side by side; any line width",
            task="sequence",
            metric="sequence_accuracy",
            floor=0.90,
            input_name="x",
            input_shape=(1, LINE_HEIGHT, -1),
            input_dtype="float32",
            factory="edgekit.zoo.models:text_recognizer",
            inputs=(("x", (1, LINE_HEIGHT, -1), "float32"),),
            dynamic_axes={"x": {0: "batch", 3: "width"}, "output": {0: "batch", 1: "steps"}},
            extra_meta={
                "decode": "ctc",
                "blank": LINE_BLANK,
                "alphabet": "0123456789",
                "stride": 4,
                "length_input": "x",
            },
        ),
    )
}


def names() -> list[str]:
    """Names of the reference models, sorted."""
    return sorted(_SPECS)


def spec(name: str) -> ReferenceSpec:
    """The spec of reference model ``name``."""
    try:
        return _SPECS[name]
    except KeyError:
        raise BadInputError(
            f"unknown reference model {name!r}; choose one of: {', '.join(names())}"
        ) from None


def build(name: str) -> torch.nn.Module:
    """A fresh, untrained module of reference model ``name`` (seed torch for fixed weights)."""
    module: torch.nn.Module = import_object(spec(name).factory)()
    return module


__all__ = [
    "META_FILE",
    "ReferenceSpec",
    "Splits",
    "TrainResult",
    "build",
    "evaluate",
    "fit",
    "load_data",
    "names",
    "predict",
    "read_meta",
    "save",
    "spec",
    "train",
]
