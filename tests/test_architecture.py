"""The layering the README's ARCHITECTURE section promises, checked on the source: imports run one way
(ingest → retriever ← reasoner ← app ← ui, training beside the reasoner), no module-level import
circle, and only ui/ imports the web frameworks or reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "retriever", "reasoner", "app", "ui", "training")
MAY_IMPORT = {
    "ingest": {"ingest", "retriever"},
    "retriever": {"retriever"},
    "reasoner": {"reasoner", "retriever"},
    "training": {"training", "reasoner", "retriever"},
    "app": {"app", "ingest", "retriever", "reasoner"},
    "ui": {"ui", "app", "ingest", "retriever", "reasoner", "training"},
}
WEB_FRAMEWORKS = ("gradio", "fastapi", "uvicorn", "starlette")


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return found


def imports(tree: ast.AST, top_level_only: bool = False) -> set[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_imports_run_one_way():
    wrong = []
    for name, tree in modules().items():
        package = name.split(".")[0]
        for target in imports(tree):
            top = target.split(".")[0]
            if top in PACKAGES and top not in MAY_IMPORT[package]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_circle_at_module_level():
    trees = modules()
    graph = {name: {t for t in imports(tree, top_level_only=True) if t in trees and t != name}
             for name, tree in trees.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None


def test_only_the_interfaces_import_web_frameworks_or_read_the_environment():
    wrong = []
    for name, tree in modules().items():
        if name.startswith("ui"):
            continue
        wrong += [f"{name} imports {t}" for t in imports(tree) if t.split(".")[0] in WEB_FRAMEWORKS]
        for node in ast.walk(tree):
            reads = (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                     and isinstance(node.value, ast.Name) and node.value.id == "os")
            if reads:
                wrong.append(f"{name} reads os.{node.attr} (line {node.lineno})")
    assert not wrong, wrong
