"""The layering rules of README's Architecture section, checked on the source (ast, nothing imported):

- `rag` imports neither `indexer`, `service` nor `evaluation`; `indexer` imports `rag` only; `evaluation` may import
  `rag` and `indexer`; nothing outside `service` imports `service`;
- no import cycle between modules, counting every import (inside functions too);
- `service` holds no SQL and writes no files (storage is the library's);
- a controller method is a few statements: parse, one call into the application, render.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rag", "indexer", "service", "evaluation")
MAY_IMPORT = {"rag": {"rag"}, "indexer": {"rag", "indexer"}, "evaluation": {"rag", "indexer", "evaluation"},
              "service": {"rag", "indexer", "evaluation", "service"}}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports, anywhere in it: `from a import b` counts as a.b when that is a module."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import rag.text as t` -> rag.text; an outside name -> none
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_walk_sees_every_package_and_their_imports():
    assert {name.split(".")[0] for name in MODULES} == set(PACKAGES)
    assert "rag.application" in GRAPH["service.app"] and "indexer.build" in GRAPH["service.app"]
    assert "rag.snapshot_files" in GRAPH["indexer.build"]  # `from rag import snapshot_files`


@pytest.mark.parametrize("package", PACKAGES)
def test_layering(package):
    wrong = sorted((name, target) for name, targets in GRAPH.items() if name.split(".")[0] == package
                   for target in targets if target.split(".")[0] not in MAY_IMPORT[package])
    assert wrong == [], f"{package} may import only {sorted(MAY_IMPORT[package])}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


_SQL = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\b.*\bSET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX))\b",
                  re.IGNORECASE | re.DOTALL)
_WRITES = {"write_text", "write_bytes", "unlink", "mkdir", "rmdir", "rmtree", "rename", "replace", "touch",
           "mkstemp", "fsync"}


def _service_files():
    return [(name, path) for name, path in MODULES.items() if name.split(".")[0] == "service"]


def test_service_has_no_sql_and_no_file_writes():
    found = []
    for name, path in _service_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value):
                found.append((name, node.lineno, "SQL"))
            elif isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if called in _WRITES and not (called == "replace" and isinstance(fn, ast.Attribute)
                                              and not (isinstance(fn.value, ast.Name) and fn.value.id == "os")):
                    found.append((name, node.lineno, called))
                if called == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                            and set(a.value) & set("wax+") for a in [*node.args[1:2],
                                                                                   *[k.value for k in node.keywords
                                                                                     if k.arg == "mode"]]):
                    found.append((name, node.lineno, "open for writing"))
    assert found == []


def test_controller_methods_are_a_few_statements():
    long = []
    for name, path in _service_files():
        if not name.startswith("service.controllers."):
            continue
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(cls, ast.ClassDef) and any(getattr(b, "id", "") == "Controller" for b in cls.bases)):
                continue
            for fn in cls.body:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                    if len(body) > 5:
                        long.append((name, fn.name, len(body)))
    assert long == []
