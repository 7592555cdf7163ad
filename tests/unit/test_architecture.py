"""The shape of the code: imports that never go round in a circle, and modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "sgtool"
MAX_LINES = 450
# Modules over MAX_LINES that are one cohesive thing (and why).
COHESIVE = {}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the sgtool modules it imports anywhere in its body (deferred imports too), each with the packages
    Python initialises on the way there, except the importer's own packages (always initialised first)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "sgtool":
                    continue
                submodules = {f"{target}.{alias.name}" for alias in node.names} & modules.keys()
                targets |= submodules
                if len(submodules) < len(node.names) and target in modules:
                    targets.add(target)
        own = set(_ancestors(name)) | ({name} if is_package else set())
        for target in targets:
            graph[name] |= {t for t in [*_ancestors(target), target] if t in modules and t not in own}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_sgtool():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_cycle_through_a_package_init():
    # video/__init__ re-exporting fov.video, which imports video.clip: importing fov.video first breaks.
    graph = {"p": set(), "p.video": {"p.fov.video"}, "p.video.clip": set(), "p.fov": set(),
             "p.fov.video": {"p.video", "p.video.clip"}}
    assert cycles(graph) == [["p.fov.video", "p.video"]]


def test_layers_point_one_way():
    """command -> pipeline -> models / kernels: nothing below the commands imports them, and models, kernels,
    editing and settings import no pipeline."""
    graph = import_graph()
    for name, targets in graph.items():
        if not name.startswith(("sgtool.commands", "sgtool.cli")):
            assert not {t for t in targets if t.startswith("sgtool.commands")}, name
        if name.startswith(("sgtool.models", "sgtool.kernels", "sgtool.editing", "sgtool.settings", "sgtool.hub")):
            assert not {t for t in targets if t.startswith("sgtool.pipelines")}, name
        if name.startswith("sgtool.pipelines.shared"):  # the shared pieces serve every workflow, and use none
            assert not {t for t in targets if t.startswith("sgtool.pipelines.") and
                        not t.startswith(("sgtool.pipelines.shared", "sgtool.pipelines.generate"))}, name


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    relative = str(path.relative_to(PACKAGE))
    assert lines <= MAX_LINES or relative in COHESIVE, f"{relative} has {lines} lines: split it by what it does"
