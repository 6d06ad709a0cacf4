"""numpy arrays of a :class:`~edgekit.io.data.Dataset` as the tensors a torch model is called with."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgekit.io.data import Dataset


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor: floats as float32, booleans as they are, integers as int64 (the index
    type embeddings and masks take)."""
    import torch

    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if array.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(array))
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def input_tensors(data: Dataset) -> list[torch.Tensor]:
    """One tensor per input of ``data``, in data order: the positional order models are called in."""
    return [to_tensor(a) for a in data.inputs.values()]
