"""The import graph keeps the layers of docs/architecture.md: one way, no circles.

Every import of every module of the project's packages is read from its source (module
level, inside functions and classes alike; imports under ``if TYPE_CHECKING:`` are left
out, since they never run). Then:

* vocab/ imports nothing of ours; drivers/ and rules/ import only vocab/ and their own
  package; nothing but the CLI and the tests may import simulator/;
* there is no import circle between modules anywhere;
* the daemon's graph (what ``edge run`` can reach from edge.cli's run path) never
  reaches the simulator.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vocab", "drivers", "rules", "edge", "simulator")
ALLOWED = {
    "vocab": {"vocab"},
    "drivers": {"vocab", "drivers"},
    "rules": {"vocab", "rules"},
    "edge": {"vocab", "drivers", "rules", "edge"},
    "simulator": {"vocab", "drivers", "rules", "edge", "simulator"},
}
# The CLI starts the simulator and the demo for `edge simulate` / `edge demo`, from
# inside those subcommands only.
MAY_IMPORT_SIMULATOR = {"edge.cli", "edge.demo"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The project modules a module imports, wherever in it the import stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (m for child in node.orelse for m in visit(child))
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            yield base
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    for target in visit(tree):
        # A module or its package, whichever is ours.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(path, name, known)) for name, path in found.items()}


def test_each_layer_imports_only_from_below() -> None:
    wrong = []
    for name, targets in graph().items():
        layer = name.split(".")[0]
        for target in targets:
            top = target.split(".")[0]
            if top == "simulator" and name in MAY_IMPORT_SIMULATOR:
                continue
            if top not in ALLOWED[layer]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_there_is_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    assert circles == [], " ; ".join(" → ".join(c) for c in circles)


def test_the_daemon_never_reaches_the_simulator() -> None:
    edges = graph()
    # edge.cli reaches the simulator only inside `simulate` and `demo`; the daemon is
    # what edge.gateway (and everything under it) reaches.
    seen: set[str] = set()
    todo = ["edge.gateway"]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(edges.get(node, ()))
    assert not {m for m in seen if m.startswith("simulator")}
    assert "edge.cli" not in seen and "edge.demo" not in seen


def test_the_walker_sees_function_local_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from rules.statistics import fit_hst\n"
                      "if TYPE_CHECKING:\n    import edge.gateway\n", encoding="utf-8")
    found = set(imported(source, "rules.probe", {"rules.statistics", "edge.gateway"}))
    assert found == {"rules.statistics"}
