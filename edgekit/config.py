"""Recipes: the ordered list of technique configs that ``compress`` runs, as a TOML file.

A CLI call and a recipe file are two spellings of one thing: ``--save-recipe`` writes the recipe
a CLI call ran, and ``--recipe`` runs it again (same seed → same bundle hashes).

```toml
seed = 0
target = "x86-openvino"
[[step]]
technique = "prune"
kind = "structured"
amount = 0.5
[[step]]
technique = "int8"
```
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgekit.errors import BadInputError
from edgekit.registry import LazyRegistry

TECHNIQUES: LazyRegistry[type] = LazyRegistry(
    "technique",
    {
        "prune": "edgekit.compress.prune:PruneConfig",
        "distill": "edgekit.compress.distill:DistillConfig",
        "qat": "edgekit.compress.qat:QatConfig",
        "int8": "edgekit.compress.quantize:Int8Config",
        "fp16": "edgekit.compress.fp16:Fp16Config",
    },
)


@dataclass
class Recipe:
    steps: list[Any] = field(default_factory=list)
    seed: int = 0
    target: str | None = None
    max_drop: float | None = None

    def labels(self) -> list[str]:
        return [technique_name(s) for s in self.steps]


def technique_name(config: object) -> str:
    spec = f"{type(config).__module__}:{type(config).__qualname__}"
    for name in TECHNIQUES:
        if TECHNIQUES.spec(name) == spec:
            return name
    raise BadInputError(f"{type(config).__name__} is not a known technique config")


def build_step(technique: str, options: dict[str, Any]) -> Any:
    """Build one technique config from plain options, with clear errors for unknown keys."""
    cls = TECHNIQUES.get(technique)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise BadInputError(
            f"technique {technique!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(fields)}"
        )
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        value = tuple(value) if isinstance(value, list) else value  # TOML arrays → config tuples
        kwargs[key] = _typed(value, hints[key], f"technique {technique!r}: option {key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"technique {technique!r}: {exc}") from exc


def _typed(value: Any, hint: Any, what: str) -> Any:
    """``value`` checked against the type ``hint`` (strictly: "0.5" is not a number) and finite."""
    from pydantic import TypeAdapter, ValidationError

    try:
        checked = TypeAdapter(hint).validate_python(value, strict=True)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise BadInputError(f"{what} = {value!r}: {msg[0].lower() + msg[1:]}") from None
    if isinstance(checked, float) and not math.isfinite(checked):
        raise BadInputError(f"{what} = {value!r}: must be a finite number")
    return checked


def step_to_dict(config: object) -> dict[str, Any]:
    d: dict[str, Any] = {"technique": technique_name(config)}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if value is None:
            continue  # TOML has no null; an absent key means the default
        d[f.name] = list(value) if isinstance(value, tuple) else value
    return d


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    d: dict[str, Any] = {"seed": recipe.seed}
    if recipe.target:
        d["target"] = recipe.target
    if recipe.max_drop is not None:
        d["max_drop"] = recipe.max_drop
    d["step"] = [step_to_dict(s) for s in recipe.steps]
    return d


def recipe_from_dict(d: dict[str, Any], *, origin: str = "recipe") -> Recipe:
    allowed = {"seed", "target", "max_drop", "step"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise BadInputError(f"{origin}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    seed = _typed(d.get("seed", 0), int, f"{origin}: seed")
    if seed < 0:
        raise BadInputError(f"{origin}: seed = {seed}: must be a whole number ≥ 0")
    target = _typed(d.get("target"), str | None, f"{origin}: target")
    max_drop = _typed(d.get("max_drop"), float | None, f"{origin}: max_drop")
    if max_drop is not None and max_drop < 0:
        raise BadInputError(f"{origin}: max_drop = {max_drop}: must be ≥ 0 (points of the metric)")
    raw_steps = d.get("step", [])
    if not isinstance(raw_steps, list):
        raise BadInputError(
            f'{origin}: step = {raw_steps!r}: steps are [[step]] tables, e.g. [[step]] technique = "int8"'
        )
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict) or "technique" not in raw:
            raise BadInputError(f"{origin}: step {i} needs a 'technique' key (one of {', '.join(TECHNIQUES)})")
        opts = dict(raw)
        steps.append(build_step(opts.pop("technique"), opts))
    if not steps:
        raise BadInputError(f'{origin}: no [[step]] tables; add at least one, e.g. [[step]] technique = "int8"')
    return Recipe(steps=steps, seed=seed, target=target, max_drop=max_drop)


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"recipe {p} does not exist; write one or produce it with --save-recipe")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"recipe {p} is not valid TOML: {exc}") from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise BadInputError(f"recipe {p} cannot be read as text ({type(exc).__name__}); pass a TOML file") from exc
    return recipe_from_dict(data, origin=str(p))


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    import tomli_w

    from edgekit.io.atomic import atomic_write_text

    p = Path(path)
    atomic_write_text(p, tomli_w.dumps(recipe_to_dict(recipe)))
    return p
