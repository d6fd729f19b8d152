"""Benchmarks: ``python -m bench <name> [options]``.

Each benchmark lives in ``bench/<name>.py`` and exposes ``main(argv) -> int``.
Benchmarks print human-readable progress and, with ``--json``, end with one
line holding a JSON object (the machine-readable result).
"""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys

import bench


def _available() -> list[str]:
    # a module vm_migrate is the benchmark vm-migrate
    mods = pkgutil.iter_modules(bench.__path__)
    return sorted(m.name.replace("_", "-") for m in mods if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = _available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench {" + ",".join(names) + "} [options]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"bench: unknown benchmark '{name}' (available: {', '.join(names)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name.replace('-', '_')}")
    # SIGTERM and SIGINT (a background job ignores SIGINT) end a run through its cleanup: a live
    # cluster's nodes, etcd members and namespaces go with it, as at its normal end
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    return int(module.main(rest))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
