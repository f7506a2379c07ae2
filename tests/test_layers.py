"""The package's layers: its import graph has no circle, and the asyncio client stands beside the
blocking one, not on it (docs/architecture.md). Read from the source, every import statement
counted (those inside functions too), so a lazy import cannot hide a circle."""
import ast
import sys
from pathlib import Path

import beanstalkc_fast

PACKAGE = Path(beanstalkc_fast.__file__).parent
NAME = "beanstalkc_fast"
BLOCKING = {"beanstalkc_fast.connection", "beanstalkc_fast.pool"}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph():
    """{module: {modules of the package it imports}}"""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # "from . import x" names a module x when there is one, else a name of the package
                targets = [base + "." + a.name if base + "." + a.name in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith(NAME) and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _is_parent_package(a, b):
    # Importing a.b.c runs a.b's __init__ first; that is the package, not an import circle.
    return b.startswith(a + ".")


def test_the_import_graph_has_no_circle():
    graph = _graph()
    assert "beanstalkc_fast.aio.pool" in graph and "beanstalkc_fast._defaults" in graph
    state = {}
    circles = []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if _is_parent_package(nxt, node):
                continue
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_asyncio_client_never_imports_the_blocking_modules():
    graph = _graph()
    aio = [m for m in graph if m == NAME + ".aio" or m.startswith(NAME + ".aio.")]
    assert set(aio) >= {NAME + ".aio", NAME + ".aio.connection", NAME + ".aio.pool"}
    for start in aio:
        seen, todo = set(), [start]
        while todo:     # everything it imports, directly or not (the package's face aside)
            node = todo.pop()
            for nxt in graph[node]:
                if nxt not in seen and nxt != NAME:
                    seen.add(nxt)
                    todo.append(nxt)
        assert not seen & BLOCKING, (start, sorted(seen & BLOCKING))


def test_the_graph_reader_sees_a_circle_and_a_blocking_import(tmp_path, monkeypatch):
    # The checks above can fail: a package with a circle and an aio module importing connection.
    pkg = tmp_path / NAME
    (pkg / "aio").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "connection.py").write_text("from . import pool\n")
    (pkg / "pool.py").write_text("def f():\n    from .connection import X\n")
    (pkg / "aio" / "__init__.py").write_text("")
    (pkg / "aio" / "connection.py").write_text("")
    (pkg / "aio" / "pool.py").write_text("from ..connection import Y\n")
    (pkg / "_defaults.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = _graph()
    assert graph[NAME + ".pool"] == {NAME + ".connection"}
    assert graph[NAME + ".aio.pool"] == {NAME + ".connection"}
    assert NAME + ".pool" in graph[NAME + ".connection"]
