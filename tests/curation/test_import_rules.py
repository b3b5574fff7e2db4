"""Import-graph rules, read from the source with ``ast`` (every import, including those inside functions).

``curation.io`` owns the run directory, so readers of runs (scoring, ``curate skill-order``) need no
executor code, ``curation.io`` itself depends on no executor, and its modules import each other without
a cycle (a cycle only worked through function-level imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

CURATION = REPO / "curation"


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, as absolute dotted names."""
    found: set[str] = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # ``from pkg import module``
    return found


def _files(*paths: Path) -> list[Path]:
    return [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]


def _offenders(files: list[Path], forbidden: str) -> dict[str, list[str]]:
    out = {}
    for f in files:
        bad = sorted(m for m in _imports(f) if m == forbidden or m.startswith(forbidden + "."))
        if bad:
            out[str(f.relative_to(REPO))] = bad
    return out


def test_scoring_and_skill_order_do_not_import_the_executors() -> None:
    files = _files(CURATION / "scoring", CURATION / "skill_order.py")
    assert len(files) > 3
    assert _offenders(files, "curation.executors") == {}


def test_io_does_not_import_the_executors() -> None:
    assert _offenders(_files(CURATION / "io"), "curation.executors") == {}


def test_io_modules_import_each_other_without_a_cycle() -> None:
    modules = {_module(f): f for f in _files(CURATION / "io")}
    graph = {m: sorted(i for i in _imports(f) if i in modules and i != m) for m, f in modules.items()}
    assert graph["curation.io.atomic"] == ["curation.io.storage"]  # the parser sees real edges
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        for n in graph[m]:
            visit(n, stack + [m])

    for m in graph:
        visit(m, [])
    assert cycles == []
