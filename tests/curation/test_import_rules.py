"""Import-graph rules, read from the source with ``ast`` (every import, including those inside functions).

``curation.io`` owns the run directory, so readers of runs (scoring, ``curate skill-order``) need no
executor code, ``curation.io`` itself depends on no executor and no stage (``run.json`` records the pass
count), and its modules import each other without a cycle (a cycle only worked through function-level imports).
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


def test_io_does_not_import_the_stages() -> None:
    # run.json records the global stages' indices (the pass count), so the readers of a run need no registry
    assert _offenders(_files(CURATION / "io"), "curation.stages") == {}


def test_verify_reads_the_passes_without_the_stage_registry() -> None:
    assert _offenders(_files(CURATION / "verify.py"), "curation.stages") == {}


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


# -- the CLI, `curate submit` and the service ---------------------------------------------------------------------
#
# `curate serve` and `curate submit` live behind the CLI; the service once reached back into it (its job driver ran
# `curate run` through `curation.cli`) and into `curation.submit`'s private helpers, a circle
# cli -> service.app -> service.jobs -> cli that only held because the imports sat inside functions.

SERVICE = CURATION / "service"
SUBMIT = CURATION / "submit.py"


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """The components of ``graph`` with more than one module (each one is, or contains, an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in graph:
        if m not in index:
            visit(m)
    return out


def _private_names(files: list[Path], package: str) -> dict[str, list[str]]:
    """Names with a leading ``_`` that ``files`` import from ``package`` or its modules."""
    out = {}
    for f in files:
        bad = sorted(m for m in _imports(f) if (m == package or m.startswith(package + "."))
                     and any(p.startswith("_") and p != "__init__" for p in m[len(package):].split(".")))
        if bad:
            out[str(f.relative_to(REPO))] = bad
    return out


def test_the_service_does_not_import_the_cli() -> None:
    assert _offenders(_files(SERVICE), "curation.cli") == {}


def test_submit_and_the_service_import_no_private_name_of_each_other() -> None:
    """What both need (connecting, the transport check, auth headers, the runtime env, excludes, log tails) is a
    public name of the module they share."""
    assert _private_names(_files(SERVICE), "curation.submit") == {}
    assert _private_names([SUBMIT], "curation.service") == {}
    assert _private_names([SUBMIT], "ray") != {}  # the helper sees private names (Ray's, used on purpose)


def test_no_import_cycle_runs_through_the_cli_submit_or_the_service() -> None:
    modules = {_module(f): f for f in _files(CURATION)}
    graph = {m: sorted(i for i in _imports(f) if i in modules and i != m) for m, f in modules.items()}
    assert "curation.service.app" in graph["curation.cli"]  # the parser sees function-level edges
    watched = [c for c in _strongly_connected(graph)
               if any(m in ("curation.cli", "curation.submit") or m.startswith("curation.service") for m in c)]
    assert watched == []


def test_io_never_imports_the_stages_or_the_registry() -> None:
    """``curation.io`` owns the run directory; how many passes a run has comes from its run.json and manifest
    (``global_stages``), not from building its stages."""
    files = _files(CURATION / "io", CURATION / "verify.py")
    assert _offenders(files, "curation.stages") == {} and _offenders(files, "curation.registry") == {}


def test_the_core_never_imports_the_service() -> None:
    """The service builds on the core (io, stats, pipeline, executors); nothing of the core reaches up into it.
    ``cli.py`` (which starts the service) and ``job_driver.py`` (the service's job driver) are its doors."""
    doors = {CURATION / "cli.py", CURATION / "job_driver.py"}
    files = [f for f in _files(CURATION) if "service" not in f.relative_to(CURATION).parts and f not in doors]
    assert len(files) > 50
    assert _offenders(files, "curation.service") == {}


def test_no_import_cycle_anywhere_in_curation_or_training() -> None:
    """No module of either package reaches itself through imports (function-level ones included). An import
    of a module also runs its packages' ``__init__``; an edge from a module to its own package is left out,
    since a package that imports its modules to register them would otherwise always form a circle."""
    training = REPO / "training"
    modules = {_module(f): f for f in _files(CURATION, training)}

    def target(name: str) -> str:
        while name and name not in modules:  # ``pkg.mod.Name`` -> ``pkg.mod``
            name = name.rpartition(".")[0]
        return name

    graph = {m: sorted({t for t in map(target, _imports(f)) if t and t != m and not m.startswith(t + ".")})
             for m, f in modules.items()}
    assert "curation.verify" in graph["curation.export.verify"]  # the parser sees real edges
    assert _strongly_connected(graph) == []
