"""The core (``ha/``) stays pure: no I/O, clock, threads, sockets, randomness or logging.

Two checks: a static one over every import statement and a few builtins, and
a dynamic one that imports each module in a fresh interpreter and looks at
what got loaded beyond the interpreter's own start-up set.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HA = ROOT / "ha"
MODULES = sorted(HA.rglob("*.py"))

FORBIDDEN = {
    "os", "io", "sys", "time", "datetime", "threading", "_thread", "socket", "select", "selectors",
    "asyncio", "subprocess", "multiprocessing", "signal", "random", "secrets", "uuid", "pathlib",
    "shutil", "tempfile", "glob", "logging", "sqlite3", "http", "urllib.request", "ssl", "fcntl",
    "mmap", "ctypes", "concurrent", "queue", "sched", "zmq", "loguru", "pykka", "msgpack", "click",
    "etcd3", "requests",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(p) for p in MODULES])
def test_no_forbidden_imports_or_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _forbidden(node.module) or not (node.module.startswith("ha") or node.module in _STDLIB_OK):
                bad.append(node.module)
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
        ):
            bad.append(f"{node.func.id}()")
    assert not bad, f"{path.name} uses shell-only facilities: {bad}"


_STDLIB_OK = {
    "__future__", "collections", "collections.abc", "dataclasses", "enum", "typing", "re", "json",
    "hashlib", "base64", "urllib.parse", "itertools", "functools", "math", "operator", "bisect", "heapq",
}  # fmt: skip

_PROBE = """
import sys, json
before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_importing_the_core_loads_no_shell_module() -> None:
    names = [_module_name(p) for p in MODULES]
    loaded: set[str] = set()
    for name in names:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, name], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        loaded |= set(json.loads(out))
    bad = sorted(m for m in loaded if _forbidden(m) and m not in _INTERPRETER_DEPS)
    assert not bad, f"importing ha/ pulled in: {bad}"


# modules the standard library's own imports may bring along (not used by ha/ itself)
_INTERPRETER_DEPS: set[str] = set()


def test_probe_detects_a_violation(tmp_path: Path) -> None:
    """The static check would catch an I/O import (guards against a check that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nopen('x')\n")
    tree = ast.parse(bad.read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Import) and _forbidden(n.names[0].name)]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "open"]
    assert found and calls
