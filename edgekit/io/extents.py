"""Each sample's real extent along the dynamic axis of padded inputs.

Variable-length samples are stored right-padded to the longest one. Two ways say how much of
each sample is real:

- an attention mask: an input whose name contains ``mask``, of integer or boolean dtype, shape
  ``(N, T)``; the extent of a sample is one past its last non-zero position, and every input of
  the same ``(N, T)`` leading shape (``input_ids``, ``token_type_ids`` …) is cropped on axis 1;
- ``<input>_length`` (:attr:`edgekit.io.data.Dataset.lengths`): the extent of each sample along
  that input's last dynamic axis (its last axis when the model does not say).

Evaluation crops each batch to its longest real sample, so padding is neither computed nor
counted; latency is timed on real samples cropped to the median extent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Extents:
    """Real extents of every sample, and which axis of which input they crop."""

    lengths: np.ndarray  # (N,) the extent that orders samples and scales output positions
    crops: dict[str, tuple[int, np.ndarray]]  # input name -> (axis, per-sample extent)
    source: str  # where the extents come from, in words
    mask: str | None = None  # the attention-mask input, when the extents come from one
    along: tuple[str, int] | None = None  # the input and axis ``lengths`` measure

    def width(self, feed: Mapping[str, np.ndarray]) -> int | None:
        """How many positions ``feed`` has along the measured axis (after any crop)."""
        if self.along is None or self.along[0] not in feed:
            return None
        name, axis = self.along
        return int(feed[name].shape[axis])

    def crop(self, feed: Mapping[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """``feed`` (already restricted to ``rows``) cropped to the longest real sample of ``rows``."""
        out = dict(feed)
        for name, (axis, lengths) in self.crops.items():
            if name in out:
                stop = max(int(np.max(lengths[rows], initial=1)), 1)
                out[name] = np.ascontiguousarray(np.take(out[name], np.arange(stop), axis=axis))
        return out

    def crop_to(self, feed: Mapping[str, np.ndarray], stop: int) -> dict[str, np.ndarray]:
        """``feed`` cropped to ``stop`` positions along each cropped axis."""
        out = dict(feed)
        for name, (axis, _lengths) in self.crops.items():
            if name in out:
                out[name] = np.ascontiguousarray(
                    np.take(out[name], np.arange(min(max(stop, 1), out[name].shape[axis])), axis=axis)
                )
        return out

    def median(self) -> int:
        """The lower median extent: the length of a real sample."""
        ordered = np.sort(self.lengths)
        return int(ordered[(len(ordered) - 1) // 2])

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "min": int(self.lengths.min()),
            "median": self.median(),
            "max": int(self.lengths.max()),
        }


def is_mask(name: str, array: np.ndarray) -> bool:
    """An attention mask: ``mask`` in the name, integer or boolean, one row per sample."""
    kind = np.asarray(array).dtype.kind
    return "mask" in name.lower() and kind in "biu" and np.ndim(array) == 2


def find_extents(
    arrays: Mapping[str, np.ndarray],
    lengths: Mapping[str, np.ndarray] | None = None,
    dynamic_axes: Mapping[str, Sequence[int]] | None = None,
) -> Extents | None:
    """The extents of ``arrays`` (keyed by model input name), or None when nothing says them.

    ``lengths`` maps input names to ``<input>_length`` arrays; ``dynamic_axes`` maps input names
    to the model's dynamic axes (batch axis 0 included or not) and picks the axis a length crops.
    An axis the model declares fixed is never cropped (the extents still say which positions
    are real).
    """

    def croppable(name: str, axis: int) -> bool:
        return dynamic_axes is None or axis in dynamic_axes.get(name, ())

    for name, arr in arrays.items():
        if is_mask(name, arr):
            real = np.asarray(arr) != 0
            last = np.where(real.any(axis=1), real.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
            ext = last.astype(np.int64)
            crops = {
                k: (1, ext)
                for k, v in arrays.items()
                if np.ndim(v) >= 2 and v.shape[:2] == arr.shape and croppable(k, 1)
            }
            return Extents(lengths=ext, crops=crops, source=f"attention mask {name!r}", mask=name, along=(name, 1))
    measured: dict[str, tuple[int, np.ndarray]] = {}
    for name, ext in (lengths or {}).items():
        if name not in arrays:
            continue
        arr = arrays[name]
        axes = [a for a in (dynamic_axes or {}).get(name, ()) if 0 < a < arr.ndim]
        axis = max(axes) if axes else arr.ndim - 1
        measured[name] = (axis, np.clip(np.asarray(ext, dtype=np.int64), 1, arr.shape[axis]))
    if not measured:
        return None
    first = next(iter(measured))
    crops = {k: v for k, v in measured.items() if croppable(k, v[0])}
    return Extents(
        lengths=measured[first][1], crops=crops, source=f"'{first}_length'", along=(first, measured[first][0])
    )
