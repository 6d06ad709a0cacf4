"""The user's own metric, ``--metric module:function``: imported only because the user named it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekit.metrics.outputs import Outputs


def load_metric(spec: str) -> Callable[..., Any]:
    """Import the user's metric ``module:function`` (only because the user named it)."""
    from edgekit.errors import BadInputError
    from edgekit.registry import import_object

    fn = import_object(spec)
    if not callable(fn):
        raise BadInputError(f"--metric {spec} is not a function")
    return fn  # type: ignore[no-any-return]


def user_metric(fn: Callable[..., Any], name: str, reference: Outputs, outputs: Outputs, data: Any) -> dict[str, Any]:
    """Call the user's metric as ``fn(fp32_outputs, variant_outputs, data)``.

    Both outputs are :class:`Outputs` (``.values`` padded ``(N, …)``, ``.valid`` real positions
    or None, ``.samples()`` one array per sample without padding), in the order of ``data`` (the
    evaluation :class:`~edgekit.io.data.Dataset`: ``.inputs``, ``.labels``). The function returns
    a float, or a dict with ``"value"`` and optionally ``"passed"`` (bool, then it decides) and
    ``"higher_is_better"`` (default True). Returns ``{"name", "value", "passed", "higher_is_better"}``.
    """
    from edgekit.errors import BadInputError

    try:
        result = fn(reference, outputs, data)
    except Exception as exc:
        raise BadInputError(f"--metric {name} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, dict):
        value, passed, higher = result.get("value"), result.get("passed"), result.get("higher_is_better", True)
    else:
        value, passed, higher = result, None, True
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadInputError(
            f"--metric {name} returned {result!r}; return a float or a dict with a float 'value'"
        ) from None
    return {"name": name, "value": value, "passed": None if passed is None else bool(passed),
            "higher_is_better": bool(higher)}
