"""The layers of docs/ARCHITECTURE.md, checked over the real import graph.

Every import statement counts, the ones inside functions included (the CLI imports lazily);
only imports under ``if TYPE_CHECKING:`` do not, as they never run. A module may import its
own package and the layers below its own; packages of one layer do not import each other; no
module imports itself back through others (no cycle).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# top to bottom; the packages of one layer are independent of each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("dashboards", "serving", "replay"),
    ("tuning",),
    ("search",),
    ("trainers",),
    ("servable",),
    ("prumux", "storage"),
)
LAYERS_LINE = "cli > (dashboards | serving | replay) > tuning > search > trainers > servable > (prumux | storage)"


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Module name -> file of every module of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (the most specific module each import names)."""
    modules = module_files(root, packages)
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text(), str(path)), name, is_package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def layer_violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """One line per import that goes up a layer or across to a sibling package of its layer."""
    rank = {package: index for index, layer in enumerate(layers) for package in layer}
    found = []
    for module, targets in sorted(graph.items()):
        package = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != package and rank[other] <= rank[package]:
                where = "a sibling" if rank[other] == rank[package] else "a layer above"
                found.append(f"{module} imports {target} ({where})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The module cycles: each strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name an import statement of ``tree`` names, outside ``if TYPE_CHECKING:`` blocks."""
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from (grandchild for branch in child.orelse for grandchild in [branch, *_runtime_nodes(branch)])
            continue
        yield child
        yield from _runtime_nodes(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts[: len(parts) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


PACKAGES = tuple(package for layer in LAYERS for package in layer)


def test_every_package_has_a_layer() -> None:
    present = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert present == set(PACKAGES)
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in include) == sorted(PACKAGES)
    assert LAYERS_LINE in (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert LAYERS_LINE in (REPO / "README.md").read_text()


def test_imports_go_down_the_layers_only() -> None:
    graph = import_graph(REPO, PACKAGES)
    assert {"cli.main", "tuning.driver", "prumux.model"} <= graph.keys()
    assert layer_violations(graph, LAYERS) == []


def test_no_module_cycle() -> None:
    assert cycles(import_graph(REPO, PACKAGES)) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "top/__init__.py": "",
            "top/command.py": "from low.work import run\n",
            "low/__init__.py": "",
            "low/work.py": "def run():\n    from top.command import run as again\n    return again\n",
            "low/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from top import command\n",
            "side/__init__.py": "from . import helper\n",
            "side/helper.py": "import other.thing\n",
            "other/__init__.py": "",
            "other/thing.py": "",
        },
    )
    layers = (("top",), ("side", "other"), ("low",))
    graph = import_graph(tmp_path, ("top", "side", "other", "low"))
    assert graph["side"] == {"side.helper"} and graph["low.typed"] == set()
    assert layer_violations(graph, layers) == [
        "low.work imports top.command (a layer above)",
        "side.helper imports other.thing (a sibling)",
    ]
    assert cycles(graph) == [["low.work", "top.command"]]
