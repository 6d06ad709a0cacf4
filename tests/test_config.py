from __future__ import annotations

import pytest

from edgekit.config import Recipe, build_step, load_recipe, recipe_from_dict, save_recipe
from edgekit.errors import BadInputError


def test_recipe_roundtrip(tmp_path) -> None:
    recipe = Recipe(
        steps=[
            build_step("prune", {"kind": "structured", "amount": 0.5}),
            build_step("int8", {"runtimes": ["onnxruntime"], "exclude": ["conv1"]}),
        ],
        seed=3,
        target="x86-openvino",
        max_drop=0.5,
    )
    path = save_recipe(recipe, tmp_path / "r.toml")
    text = path.read_text()
    assert 'technique = "prune"' in text and "amount = 0.5" in text
    again = load_recipe(path)
    assert again == recipe
    assert again.steps[1].exclude == ("conv1",)  # TOML arrays come back as the config's tuples


def test_unknown_technique_and_option() -> None:
    with pytest.raises(BadInputError, match="unknown technique 'sparsify'"):
        recipe_from_dict({"step": [{"technique": "sparsify"}]})
    with pytest.raises(BadInputError, match="no option"):
        recipe_from_dict({"step": [{"technique": "int8", "bits": 4}]})
    with pytest.raises(BadInputError, match="unknown key"):
        recipe_from_dict({"steps": []})
    with pytest.raises(BadInputError, match="no \\[\\[step\\]\\]"):
        recipe_from_dict({"seed": 1})


def test_invalid_values_are_explained(tmp_path) -> None:
    with pytest.raises(BadInputError):
        build_step("int8", {"mode": "sometimes"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[step]\n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(BadInputError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
