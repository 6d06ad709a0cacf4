"""The architecture's guard: edgekit's layers only look down, and its packages import no cycle.

Every ``import`` of every module is read with :mod:`ast` (imports inside functions included: a
lazy import is still a dependency). A module belongs to a *unit*: its subpackage (``compress``,
``io``...), its top-level module (``api``, ``config``...), or a module placed on its own in
:data:`LAYERS` (``benchmarks.doctor`` sits above what it diagnoses). Units in the same layer may
import each other, without a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).parent

# Top to bottom: a unit imports only units of its own layer or of a layer below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("command line", ("cli",)),
    ("public API", ("api", "pipeline", "search")),
    ("diagnosis and runtime bindings", ("benchmarks.doctor", "benchmarks.backends", "bindings")),
    ("delivery to devices", ("bundle", "devices")),
    ("techniques, measuring, reference models", ("compress", "benchmarks", "zoo")),
    ("graphs, runtimes, training", ("export", "runtimes", "training")),
    ("data, metrics, configuration", ("io", "metrics", "config", "registry", "errors", "artifact", "edgekit")),
)
# Top-level modules that belong to another unit.
ALIASES = {
    "cli_device": "cli", "cli_search": "cli", "cli_compress": "cli", "cli_bench": "cli", "cli_options": "cli",
    "__main__": "cli",
}

# Imports that break the rules today, each removed by work under way on the structure. Checks
# skip them; test_debt_is_still_owed fails once one is gone, so the list only shrinks.
DEBT: dict[tuple[str, str], str] = {
    ("edgekit.benchmarks.report", "devices"): "machine facts (cpu_name) move below measuring",
    ("edgekit.devices.probe", "benchmarks"): "device probing times with benchmarks.latency (cycle with report)",
    ("edgekit.devices.probe", "bundle"): "toolchain versions belong below bundle and devices",
}


def _unit(module: str) -> str:
    """The unit of a dotted module name inside edgekit."""
    parts = module.split(".")[1:]
    placed = {u for _, units in LAYERS for u in units if "." in u}
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in placed:
            return ".".join(parts[:n])
    if not parts or parts[0] == "__init__":
        return "edgekit"
    return ALIASES.get(parts[0], parts[0])


def _module_name(path: Path) -> str:
    parts = ["edgekit", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every edgekit module ``path`` imports (``from edgekit import x`` names ``edgekit.x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).rstrip(".")
            found.add(base)
            if base == "edgekit":
                found.update(f"edgekit.{a.name}" for a in node.names if (ROOT / a.name).exists()
                             or (ROOT / f"{a.name}.py").exists())
    return {m for m in found if m == "edgekit" or m.startswith("edgekit.")}


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> the importing modules, across units only, debt left out."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        importer = _module_name(path)
        for imported in _imports(path):
            a, b = _unit(importer), _unit(imported)
            if a != b and (importer, b) not in DEBT:
                edges[a, b].append(importer)
    return edges


def _layer(unit: str) -> int:
    for depth, (_, units) in enumerate(LAYERS):
        if unit in units:
            return depth
    raise AssertionError(f"unit {unit!r} is in no layer: add it to LAYERS in tests/test_layers.py")


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")}
    for unit in units:
        _layer(unit)
    assert {"compress", "io", "training", "metrics", "zoo"} <= units


def test_layers_only_look_down() -> None:
    upward = [
        f"{unit} ({LAYERS[_layer(unit)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]}) in {', '.join(sorted(set(who)))}"
        for (unit, dep), who in _edges().items()
        if _layer(dep) < _layer(unit)
    ]
    assert not upward, "imports that look up:\n" + "\n".join(sorted(upward))


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    """One cycle of the unit graph, or None (depth-first search, white/grey/black)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages() -> None:
    edges = _edges()
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        f"{a} -> {b}: {', '.join(sorted(set(edges[a, b])))}" for a, b in zip(cycle, cycle[1:], strict=False)
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"): [], ("b", "c"): [], ("a", "c"): []}) is None


def test_techniques_never_import_a_runtime() -> None:
    offenders = sorted(
        f"{_module_name(p)} imports {m}"
        for p in (ROOT / "compress").rglob("*.py")
        for m in _imports(p)
        if _unit(m) == "runtimes"
    )
    assert not offenders, "techniques are handed an evaluator, they never import a runtime:\n" + "\n".join(offenders)


def test_training_and_metrics_stay_below_the_techniques_and_the_zoo() -> None:
    assert _layer("compress") < _layer("training") < _layer("metrics")
    assert _layer("zoo") < _layer("training")
    users = {a for (a, b) in _edges() if b == "zoo"}
    assert users <= {"api", "cli"}, f"only the API and the CLI use the reference models, not {users - {'api', 'cli'}}"


def test_debt_is_still_owed() -> None:
    paid = []
    for (importer, unit), why in DEBT.items():
        path = ROOT.joinpath(*importer.split(".")[1:]).with_suffix(".py")
        if not path.exists() or unit not in {_unit(m) for m in _imports(path)}:
            paid.append(f"{importer} -> {unit} ({why})")
    assert not paid, "no longer imported: delete from DEBT in tests/test_layers.py:\n" + "\n".join(paid)
