"""A user's own fidelity metric, named on the command line as ``--metric fidelity_metric_example:FN``."""

from __future__ import annotations

import numpy as np


def mean_token_cosine(reference, outputs, data) -> float:
    """Mean cosine of real token states (padding left out), in percent: a float, gated by --max-drop."""
    ref = np.concatenate([s.reshape(len(s), -1) for s in reference.samples()])
    out = np.concatenate([s.reshape(len(s), -1) for s in outputs.samples()])
    cos = np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    return float(100.0 * cos.mean())


def never_passes(reference, outputs, data) -> dict:
    """A dict result: ``passed`` decides on its own."""
    return {"value": float(len(data)), "passed": False}
