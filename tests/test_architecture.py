"""The architecture's rules, as tests (docs/architecture.md): the shared types below every
layer, no import pointing up a layer, no import cycle, components asked for their abilities by
name (never probed with hasattr/getattr), and `pipeline.run` short enough to read as its steps."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from subpop_runner import pipeline

PACKAGE = Path(pipeline.__file__).parent
# Data, models and training know nothing of how they are attacked, defended or measured.
LOWER = ("data", "models", "training", "types")
UPPER = ("attacks", "selectors", "defenses", "pipeline", "metrics", "report", "sweep")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (type-checking and function-level imports included),
    relative imports resolved."""
    found: set[str] = set()
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*here[: len(here) - node.level + 1], node.module or ""]).strip(".")
            module = base if node.level else node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def ours(name: str) -> str | None:
    """The package module ``name`` is, or lies in (``a.b.Class`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_the_shared_types_import_only_numpy_and_pandas():
    third_party = {name.split(".")[0] for name in imports(PACKAGE / "types.py")}
    assert third_party <= {"__future__", "dataclasses", "numpy", "pandas", "typing"}


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) in LOWER])
def test_no_import_points_up_a_layer(module):
    upward = sorted(
        target
        for target in {ours(name) for name in imports(MODULES[module])} - {None}
        if layer(target) in UPPER
    )
    assert upward == []


def test_no_import_cycle():
    edges = {
        module: {
            target
            for target in map(ours, imports(path))
            if target and target != module and not module.startswith(f"{target}.")
        }
        for module, path in MODULES.items()
    }
    cycles, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module)
    assert cycles == []


ASKING = [
    m for m in MODULES if m == "subpop_runner.pipeline" or layer(m) in ("defenses", "attacks")
]


@pytest.mark.parametrize("module", ASKING)
def test_components_are_asked_by_declared_name_not_probed(module):
    """The pipeline, defenses and attacks read a component's abilities as declared members of
    its protocol; ``hasattr``/``getattr`` would let an undeclared one in unseen."""
    calls = [
        f"line {node.lineno}: {node.func.id}"
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("hasattr", "getattr")
    ]
    assert calls == []


def test_run_reads_as_its_steps_in_at_most_60_lines():
    lines = inspect.getsource(pipeline.run).splitlines()
    assert len(lines) <= 60
    body = "\n".join(lines)
    steps = ["load(", "select(", "poison(", "train_victims(", "defend(", "measure("]
    positions = [body.index(step) for step in steps]
    assert positions == sorted(positions)  # in the paper's order
