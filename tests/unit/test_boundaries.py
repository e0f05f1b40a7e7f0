"""The import rules of the code layout (docs/architecture.md, "Code layout"), read from the source with ast:

- a service imports no other service (they talk through topics and HTTP APIs);
- shared/ imports no service and no operator tooling;
- nothing in shared/ or services/ imports ops/ (operator tooling may import services, nothing imports it);
- a service's handlers import no adapter and no aiohttp;
- no import cycles among the project's modules (imports inside functions and TYPE_CHECKING blocks count too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("shared", "services", "ops")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path) -> Iterator[str]:
    """Every module name an ``import`` or ``from ... import`` in the file names (absolute imports only)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def project_imports(module: str) -> set[str]:
    return {name for name in imported(MODULES[module]) if name in MODULES and name != module}


GRAPH = {module: project_imports(module) for module in MODULES}


def owner(module: str) -> str:
    """``services.<name>`` for a service's module, else the top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 1 else parts[0]


def forbidden(a: str, b: str) -> bool:
    """May code owned by ``a`` not import code owned by ``b``?"""
    between_services = a.startswith("services.") and b.startswith("services.")
    return between_services or (a == "shared" and b != "shared") or (b == "ops" and a != "ops")


def crossings(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = owner(module), owner(target)
            if a != b and b != "services" and forbidden(a, b):  # services/__init__.py is an empty package marker
                found.append(f"{module} -> {target}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_service_imports_another_and_shared_imports_no_service_and_nothing_imports_ops():
    assert crossings(GRAPH) == []


def test_there_are_no_import_cycles():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("service", sorted({owner(m) for m in MODULES if m.startswith("services.")} - {"services"}))
def test_a_services_handlers_import_no_adapter_and_no_http(service):
    handlers = f"{service}.handlers"
    assert handlers in MODULES, f"{service} has no handlers module"
    names = set(imported(MODULES[handlers]))
    assert sorted(n for n in names if ".adapters" in n or n.split(".")[0] in ("aiohttp", "pymongo", "aioboto3")) == []


def test_shared_holds_no_services_store():
    """A store belongs to one service (intake's rules, holds and contacts live in services/intake/adapters/): in
    shared/, only the client factory (mongo.py), the one wiring factory and the consumer loop's error types name
    pymongo."""
    allowed = {"shared.mongo", "shared.wiring", "shared.consumer"}
    naming = sorted(
        m
        for m in MODULES
        if m.startswith("shared.")
        and m not in allowed
        and any(n == "pymongo" or n.startswith("pymongo.") for n in imported(MODULES[m]))
    )
    assert naming == []


def test_the_checks_catch_what_they_are_for():
    """The rules above fail on a graph that breaks them (so a passing run means something)."""
    bad = {
        "services.intake.handlers": {"services.purger.handlers"},
        "shared.events": {"services.audit.chain"},
        "services.audit.app": {"ops.cli"},
        "services.purger.a": {"services.purger.b"},
        "services.purger.b": {"services.purger.a"},
    }
    assert crossings(bad) == [
        "services.audit.app -> ops.cli",
        "services.intake.handlers -> services.purger.handlers",
        "shared.events -> services.audit.chain",
    ]
    assert cycles(bad) == [["services.purger.a", "services.purger.b"]]
