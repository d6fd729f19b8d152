"""The import rules between the project's packages, and the size rule (docs/ARCHITECTURE.md "Layers").

Every product module's imports are read with ``ast`` (at module level, inside
functions and under ``TYPE_CHECKING`` alike: a late import is still a
dependency). The packages stand on floors; a package imports only packages
on lower floors. So there is no upward import, no import between two
packages of one floor, and no cycle between packages (checked on its own as
well, so that the message names the cycle). A few narrower rules follow.

Run: ``pytest tests/test_layers.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest floor first. Keep docs/ARCHITECTURE.md ("Layers") in step: a test compares them.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("ha", "fence"),  # import nothing of the project (ha: tests/test_purity.py; fence: below)
    ("bus", "store", "agents", "sim"),  # over the core (store and agents also over fence)
    ("admin",),  # the application layer: cluster config, timing, the API's operations over the store
    ("actors",),  # one node's runtime
    ("cli",),  # the commands
    ("bench",),  # benchmarks and the live-cluster harness the tests share
)
FLOOR = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}

# (importer, imported) -> the only modules of the importer allowed to do it
ONLY_FROM: dict[tuple[str, str], frozenset[str]] = {
    # the commands talk to nodes through admin/ and the API; only ha-node starts one
    ("cli", "actors"): frozenset({"cli.ha_node"}),
}
# standard library only (plus themselves): ha-watchdog runs on nothing else, also in the QEMU guest
STDLIB_ONLY: dict[str, tuple[str, ...]] = {
    "fence": ("fence",),
    "cli.watchdog": ("fence", "cli"),
}
MAX_LINES = 600
SIZE_NOTE = re.compile(r"^# size: \S.{10,}")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_packages() -> list[str]:
    """Every top-level package of the repository but the tests."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


MODULES: dict[str, Path] = {
    _module_name(p): p for pkg in product_packages() for p in sorted((ROOT / pkg).rglob("*.py"))
}


def imports_of(path: Path, module: str) -> set[str]:
    """The absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                out.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                out.add(node.module)
    return out


def package_graph(modules: Mapping[str, Path]) -> dict[str, dict[str, set[str]]]:
    """``{importer package: {imported package: {importing modules}}}`` between the project's packages."""
    packages = {m.partition(".")[0] for m in modules}
    graph: dict[str, dict[str, set[str]]] = {p: {} for p in packages}
    for module, path in modules.items():
        pkg = module.partition(".")[0]
        for name in imports_of(path, module):
            top = name.partition(".")[0]
            if top in packages and top != pkg:
                graph[pkg].setdefault(top, set()).add(module)
    return graph


def layer_violations(graph: Mapping[str, Mapping[str, Iterable[str]]], floor: Mapping[str, int]) -> list[str]:
    """Every import of a package on the same or a higher floor."""
    out = []
    for pkg, deps in sorted(graph.items()):
        for dep, modules in sorted(deps.items()):
            if floor[dep] >= floor[pkg]:
                where = "the same floor as" if floor[dep] == floor[pkg] else "a higher floor than"
                out.append(f"{pkg} -> {dep} ({dep} is on {where} {pkg}): {', '.join(sorted(modules))}")
    return out


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*path[path.index(m) :], m]
            if m not in state and (found := visit(m)) is not None:
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)) is not None:
            return found
    return None


GRAPH = package_graph(MODULES)


def test_every_package_stands_on_one_floor() -> None:
    placed = [p for floor in FLOORS for p in floor]
    assert len(placed) == len(set(placed)), "a package on two floors"
    assert sorted(placed) == product_packages(), "put every package on a floor (and in docs/ARCHITECTURE.md)"


def test_imports_point_down() -> None:
    bad = layer_violations(GRAPH, FLOOR)
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_no_cycle_between_packages() -> None:
    cycle = find_cycle({p: set(deps) for p, deps in GRAPH.items()})
    assert cycle is None, f"import cycle between packages: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("edge", sorted(ONLY_FROM), ids="->".join)
def test_narrow_rules(edge: tuple[str, str]) -> None:
    importer, imported = edge
    allowed = ONLY_FROM[edge]
    users = GRAPH.get(importer, {}).get(imported, set())
    assert users <= allowed, (
        f"{importer} -> {imported} only from {sorted(allowed)}, also in {sorted(users - allowed)}"
    )


@pytest.mark.parametrize(("prefix", "own"), sorted(STDLIB_ONLY.items()))
def test_standard_library_only(prefix: str, own: tuple[str, ...]) -> None:
    bad = []
    for module, path in MODULES.items():
        if module != prefix and not module.startswith(prefix + "."):
            continue
        for name in imports_of(path, module):
            top = name.partition(".")[0]
            if top not in sys.stdlib_module_names and top not in own and top != "__future__":
                bad.append(f"{module}: {name}")
    assert not bad, f"{prefix} must use the standard library only: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_large_modules_say_why(module: str) -> None:
    """Over MAX_LINES lines, a module says why in a ``# size: <reason>`` line before its first import."""
    path = MODULES[module]
    text = path.read_text()
    lines = text.splitlines()
    if len(lines) <= MAX_LINES:
        return
    tree = ast.parse(text, str(path))
    first = min(
        (n.lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)), default=len(lines)
    )
    assert any(SIZE_NOTE.match(ln) for ln in lines[: first - 1]), (
        f"{path.relative_to(ROOT)} has {len(lines)} lines (> {MAX_LINES}): split it, or say why"
        " in a '# size: <reason>' line near its top"
    )


def test_the_architecture_page_shows_these_floors() -> None:
    """docs/ARCHITECTURE.md draws the floors top down, one line each, packages written ``name/``."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = re.search(r"## Layers\n.*?```\n(.*?)```", doc, re.S)
    assert block is not None, "docs/ARCHITECTURE.md has no code block under '## Layers'"
    drawn = [tuple(re.findall(r"\b([a-z]+)/(?=\s|$)", ln)) for ln in block.group(1).splitlines()]
    drawn = [tuple(sorted(f)) for f in drawn if f]
    assert drawn == [tuple(sorted(f)) for f in reversed(FLOORS)]


# -- the checks can fail --------------------------------------------------------------------------


def test_the_checks_catch_upward_imports_and_cycles() -> None:
    floor = {"low": 0, "mid": 1, "top": 2}
    graph = {"low": {"top": {"low.x"}}, "mid": {"low": {"mid.y"}}, "top": {"mid": {"top.z"}}}
    assert layer_violations(graph, floor) == ["low -> top (top is on a higher floor than low): low.x"]
    assert find_cycle({p: set(d) for p, d in graph.items()}) == ["low", "top", "mid", "low"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_violations({"mid": {"mid2": {"mid.q"}}}, {"mid": 1, "mid2": 1}) == [
        "mid -> mid2 (mid2 is on the same floor as mid): mid.q"
    ]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("from . import a\nfrom .b import c\nfrom ..d import e\nimport f.g\n")
    assert imports_of(p, "pkg.sub.m") == {"pkg.sub", "pkg.sub.b", "pkg.d", "f.g"}
