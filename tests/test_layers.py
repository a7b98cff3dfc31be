"""The package is a stack of layers, each importing only from its own layer and those below it,
and no module imports itself back through others (no import circle). Read from the source with
`ast`: every import counts, at module level, inside a function or under `TYPE_CHECKING` (a type
is a dependency too). docs/architecture.md describes the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom first. A name ending in ".*" is a package with everything in it. Some names are not in
# this tree yet (new modules of parallel work, placed here ahead of the merge); they match nothing.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("config", "errors", "decision", "prices")),
    (
        "facts and services",
        (
            "signals", "signals_vocab", "pii", "language", "answers", "schemas", "embeddings",
            "responses_format", "state", "state_redis", "budgets", "keys", "store",
            "store_postgres", "metrics", "tracing", "providers.*", "testing.*",
        ),
    ),
    (
        "learning",
        (
            "learning", "learning.artifact", "learning.calibration", "learning.costs",
            "learning.datasets", "learning.encoders", "learning.evaluation", "learning.logs",
            "learning.metrics", "learning.predictors", "learning.semantic", "learning.training",
            "learning.verifier",
        ),
    ),
    ("constrain and select", ("policies", "strategies.*", "access", "cascade", "cache")),
    ("dispatch", ("dispatch",)),
    ("router", ("router",)),
    (
        "faces",
        (
            "__init__", "server", "anthropic_api", "admin", "feedback", "dashboard.*",
            "responses_api", "embeddings_api", "inbound",
        ),
    ),
    (
        "commands",
        (
            "__main__", "cli", "demo", "report", "learning.commands", "learning.replay",
            "learning.__main__",
        ),
    ),
]  # fmt: skip

Graph = dict[str, set[str]]


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """The index of `module`'s layer ("pointsman.x.y" or "x.y"), or None when it has none."""
    name = module.removeprefix("pointsman").removeprefix(".") or "__init__"  # the package's face
    for index, (_, members) in enumerate(layers):
        for member in members:
            if name == member or (member.endswith(".*") and (name + ".").startswith(member[:-1])):
                return index
    return None


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((src / "pointsman").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The package's modules that `source` (the text of `module`) imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*package, base] if base else package)
            # `from a import b` imports module a.b when there is one, else a name of a.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(src: Path = SRC) -> Graph:
    files = module_files(src)
    known = set(files)
    return {
        module: imports_of(module, path.read_text(encoding="utf-8"), known, path.name == "__init__.py")
        for module, path in files.items()
    }


def unassigned(graph: Graph, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    return sorted(m for m in graph if layer_of(m, layers) is None)


def upward_imports(graph: Graph, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """One line per import from a lower layer into a higher one."""
    lines = []
    for module, imported in sorted(graph.items()):
        low = layer_of(module, layers)
        for target in sorted(imported):
            high = layer_of(target, layers)
            if low is not None and high is not None and high > low:
                lines.append(
                    f"{module} ({layers[low][0]}) imports {target} ({layers[high][0]}), a higher layer"
                )
    return lines


def circles(graph: Graph) -> list[list[str]]:
    """The import circles: sets of two or more modules that reach each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_every_module_belongs_to_a_layer(graph: Graph) -> None:
    missing = unassigned(graph)
    assert not missing, (
        f"modules in no layer: {', '.join(missing)}. Add each to LAYERS in tests/test_layers.py, "
        "in the lowest layer at or above everything it imports (and to docs/architecture.md)."
    )


def test_no_module_imports_from_a_higher_layer(graph: Graph) -> None:
    assert upward_imports(graph) == []


def test_the_package_has_no_import_circle(graph: Graph) -> None:
    assert circles(graph) == []


def test_config_names_no_policy_strategy_or_router(graph: Graph) -> None:
    assert graph["pointsman.config"] <= {"pointsman.errors", "pointsman.decision", "pointsman.prices"}


def test_an_upward_import_inside_a_function_is_caught(graph: Graph) -> None:
    # The old circle, reintroduced: config validating policies and strategies from a function.
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pointsman.router import Router\n"
        "def check(config):\n"
        "    from pointsman.policies import build_policies\n"
        "    from . import strategies\n"
        "    return build_policies, strategies\n"
    )
    synthetic = {**graph, "pointsman.config": imports_of("pointsman.config", source, set(graph))}
    assert synthetic["pointsman.config"] == {
        "pointsman.router",
        "pointsman.policies",
        "pointsman.strategies",
    }
    assert upward_imports(synthetic) == [
        "pointsman.config (foundation) imports pointsman.policies (constrain and select), a higher layer",
        "pointsman.config (foundation) imports pointsman.router (router), a higher layer",
        "pointsman.config (foundation) imports pointsman.strategies (constrain and select), a higher layer",
    ]
    assert any({"pointsman.config", "pointsman.policies"} <= set(c) for c in circles(synthetic))


def test_an_upward_import_between_two_made_up_layers_is_caught() -> None:
    layers = [("bottom", ("base", "util.*")), ("top", ("app",))]
    graph = {
        "pointsman.base": {"pointsman.util.text"},
        "pointsman.util.text": {"pointsman.app"},
        "pointsman.app": {"pointsman.base"},
    }
    assert upward_imports(graph, layers) == [
        "pointsman.util.text (bottom) imports pointsman.app (top), a higher layer"
    ]
    assert circles(graph) == [["pointsman.app", "pointsman.base", "pointsman.util.text"]]
    assert upward_imports({**graph, "pointsman.util.text": set()}, layers) == []


def test_a_module_in_no_layer_is_reported_by_name(graph: Graph) -> None:
    assert unassigned({**graph, "pointsman.newface": set()}) == ["pointsman.newface"]
    assert unassigned({**graph, "pointsman.providers.newvendor": set()}) == []
