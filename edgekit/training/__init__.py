"""Training and inference of torch modules on a :class:`~edgekit.io.data.Dataset`.

The reference models (:mod:`edgekit.zoo`) and the techniques that train (pruning's fine-tuning,
distillation, quantization-aware training) share this loop; it depends only on the data layer.
"""

from edgekit.training.loop import (
    Progress,
    first_output,
    fit,
    predict,
    score,
    shift_images,
    shiftable,
    torch_settings,
)
from edgekit.training.tensors import input_tensors, to_tensor

__all__ = [
    "Progress",
    "first_output",
    "fit",
    "input_tensors",
    "predict",
    "score",
    "shift_images",
    "shiftable",
    "to_tensor",
    "torch_settings",
]
